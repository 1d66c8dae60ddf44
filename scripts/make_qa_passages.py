"""Generate data/qa_passages/: closed-world QA over long, multi-fact passages with near-namesake distractors.

The bundled task (data/qa/, scripts/make_qa_task.py) gives each entity a 2-4 sentence templated document that
names one entity, so a search for the subject returns a document whose only candidate answer is the right
one. A model trained there learns to search the right name but, on real encyclopedia text, copies a name
instead of reading the answer. This set keeps that task's entity kinds, relations and splitting discipline and
makes retrieval look like real retrieval:

- passages of 400-900 characters: every fact of the entity in one of several phrasings (chosen at random per
  entity), in a shuffled order, mixed with filler sentences that state no askable fact and with mentions of
  related entities and their facts (a town passage names companies headquartered there, people born there,
  bands formed there; a company passage names employees), so the answer is one span among many names;
- near-namesakes: twin towns (the same stem with another suffix), twin companies (the same first word, another
  kind) and relatives (people sharing a surname), each with different facts, each naming the other, so a
  search for one also returns the other. A question always names its exact entity, so none is ambiguous;
- questions in three or four phrasings per relation (1-hop and 2-hop), chosen at random per question but in
  turn, so every relation a split asks at least three times shows at least three phrasings there.

Splitting is make_qa_task.py's: three disjoint worlds (train, dev, test) from one name generator, so no name
stem is shared across worlds and no dev or test answer is reachable from train facts; demos come from the train
world only and show the top 2 passages of each search (gold first) so a two-hop demo stays under
MAX_DEMO_CHARS. `check()` raises if any of this breaks. Stdlib only and seeded: running it twice writes
byte-identical files.

    python scripts/make_qa_passages.py [--out-dir data/qa_passages]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_qa_task as base  # noqa: E402  (the world's vocabulary, relations, record format and split checks)

SEED = 2291
OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "qa_passages"
SIZES = base.SIZES  # 1200 / 240 / 200 questions, each split from its own world
TWO_HOP_SHARE = base.TWO_HOP_SHARE
N_DEMOS = base.N_DEMOS
PASSAGE_CHARS = (400, 900)  # every passage's length lies in this range
TARGET_CHARS = (470, 820)  # filler is added up to a length drawn from this range
DEMO_DOCS_PER_SEARCH = 2  # the gold passage and one confusable train passage
MAX_DEMO_CHARS = 2750  # ~900 SmolLM2 tokens for a two-hop demo (invented names run ~3 characters a token)
MIN_PHRASINGS = 3  # distinct question phrasings a relation shows in a split (when it has that many questions)
# Shown in README.md; tests/test_qa_passages.py checks that every demo fits them (rollout.demo_budget_problems).
TRAIN_COMMAND = ("icrl-lite train train_data=data/qa_passages/train.jsonl eval_data=data/qa_passages/dev.jsonl "
                 "corpus=data/qa_passages/corpus.jsonl demo_pool=data/qa_passages/demos.jsonl search.top_k=2 "
                 "rollout.max_obs_tokens=600 rollout.max_response_tokens=1536 rollout.max_context_tokens=6144")

# ---------------------------------------------------------------------------------------------- world
# Per world; `twin_town` / `twin_company` / `relative` are near-namesakes added to the base kinds. Dev and test
# are as small as leaves ~1.6x more candidates than their questions need, of the scarcer hop count.
COUNTS = {
    "train": {"province": 6, "river": 14, "towns_per_river": 3, "twin_town": 10, "company": 40, "twin_company": 10,
              "band": 20, "members": 3, "employee": 110, "relative": 40},
    "dev": {"province": 3, "river": 3, "towns_per_river": 3, "twin_town": 3, "company": 6, "twin_company": 2,
            "band": 4, "members": 3, "employee": 14, "relative": 6},
    "test": {"province": 3, "river": 3, "towns_per_river": 3, "twin_town": 2, "company": 5, "twin_company": 2,
             "band": 3, "members": 3, "employee": 12, "relative": 5},
}


def make_town(stem: str, suffix: str, river: dict, province: str, rng: random.Random) -> dict:
    """A town on `river` (added to the river's towns), founded at random in 1150-1750."""
    town = {"kind": "town", "name": stem + suffix, "stem": stem, "town_kind": rng.choice(base.TOWN_KINDS),
            "feature": rng.choice(base.TOWN_FEATURES),
            "attrs": {"river": river["name"], "founded": str(rng.randint(1150, 1750)), "province": province}}
    river["towns"].append(town["name"])
    return town


def make_geography(counts: dict, rng: random.Random, names: base.NameMaker) -> tuple[list[dict], list[dict]]:
    """Rivers and the towns on them; `twin_town` towns get a twin: the same stem, another suffix, other facts."""
    provinces = [names.stem() for _ in range(counts["province"])]
    rivers = [{"kind": "river", "name": f"{names.stem(4, 6)} River", "towns": [],
               "attrs": {"source": f"{names.stem()} Hills", "mouth": f"Lake {names.stem()}"}}
              for _ in range(counts["river"])]
    towns = [make_town(names.stem(4, 6), rng.choice(base.TOWN_SUFFIXES), river, rng.choice(provinces), rng)
             for river in rivers for _ in range(counts["towns_per_river"])]
    for town in rng.sample(towns, counts["twin_town"]):
        suffix = rng.choice([s for s in base.TOWN_SUFFIXES if not town["name"].endswith(s)])
        river = rng.choice([r for r in rivers if r["name"] != town["attrs"]["river"]])
        province = rng.choice([p for p in provinces if p != town["attrs"]["province"]])
        twin = make_town(town["stem"], suffix, river, province, rng)
        while twin["attrs"]["founded"] == town["attrs"]["founded"]:
            twin["attrs"]["founded"] = str(rng.randint(1150, 1750))
        town["twin"], twin["twin"] = twin["name"], town["name"]
        towns.append(twin)
    return rivers, towns


def make_person(job: str, born: int, birthplace: str, names: base.NameMaker, surname: str | None = None) -> dict:
    """A person with a new first name and a new surname, or the given one (a relative's)."""
    first, last = names.stem(), surname or names.stem()
    return {"kind": "person", "name": f"{first} {last}", "surname": last,
            "attrs": {"occupation": job, "birthplace": birthplace, "born": str(born)}}


def make_company(stem: str, kind: str, product: str, town_names: list[str], rng: random.Random,
                 names: base.NameMaker) -> tuple[dict, dict]:
    """A company and its founder (who founded it 22-50 years after being born)."""
    founder = make_person(rng.choice(base.FOUNDER_JOBS), rng.randint(1800, 1930), rng.choice(town_names), names)
    founded = str(int(founder["attrs"]["born"]) + rng.randint(22, 50))
    company = {"kind": "company", "name": f"{stem} {kind}", "stem": stem,
               "attrs": {"product": product, "founded": founded, "founder": founder["name"],
                         "hq": rng.choice(town_names)}}
    founder["attrs"]["founded_company"] = company["name"]
    founder["company_year"] = founded
    return company, founder


def make_companies(counts: dict, town_names: list[str], rng: random.Random,
                   names: base.NameMaker) -> tuple[list[dict], list[dict]]:
    """Companies with their founders; `twin_company` of them get a twin: the same first word, another kind."""
    companies, founders = [], []
    for _ in range(counts["company"]):
        kind, product = rng.choice(base.COMPANY_KINDS)
        company, founder = make_company(names.stem(), kind, product, town_names, rng, names)
        companies.append(company)
        founders.append(founder)
    for company in rng.sample(companies, counts["twin_company"]):
        kind, product = rng.choice([k for k in base.COMPANY_KINDS if k[1] != company["attrs"]["product"]])
        others = [t for t in town_names if t != company["attrs"]["hq"]]
        twin, founder = make_company(company["stem"], kind, product, others, rng, names)
        while twin["attrs"]["founded"] == company["attrs"]["founded"]:
            twin["attrs"]["founded"] = str(int(twin["attrs"]["founded"]) + 1)
            founder["company_year"] = twin["attrs"]["founded"]
        company["twin"], twin["twin"] = twin["name"], company["name"]
        companies.append(twin)
        founders.append(founder)
    return companies, founders


def make_bands(counts: dict, town_names: list[str], rng: random.Random,
               names: base.NameMaker) -> tuple[list[dict], list[dict]]:
    """Bands and their musicians, as in make_qa_task.py: the first member leads, each plays another instrument."""
    bands, musicians = [], []
    for _ in range(counts["band"]):
        formed = rng.randint(1950, 2010)
        members = [make_person("musician", formed - rng.randint(18, 40), rng.choice(town_names), names)
                   for _ in range(counts["members"])]
        band = {"kind": "band", "name": f"{names.stem()} {rng.choice(base.ENSEMBLES)}",
                "genre": rng.choice(base.GENRES), "members": [m["name"] for m in members],
                "attrs": {"town": rng.choice(town_names), "formed": str(formed), "leader": members[0]["name"]}}
        for member, instrument in zip(members, rng.sample(base.INSTRUMENTS, len(members))):
            member["attrs"].update(instrument=instrument, band=band["name"])
        members[0]["leads"] = True
        bands.append(band)
        musicians += members
    return bands, musicians


def make_employees(counts: dict, people: list[dict], companies: list[dict], town_names: list[str],
                   rng: random.Random, names: base.NameMaker) -> list[dict]:
    """Employees; the first `relative` share the surname of an earlier person and differ in every fact."""
    employees = []
    kin = rng.sample(people, counts["relative"])
    for n in range(counts["employee"]):
        relative = kin[n] if n < len(kin) else None
        if relative is None:
            employee = make_person(rng.choice(base.EMPLOYEE_JOBS), rng.randint(1850, 1995),
                                   rng.choice(town_names), names)
            employee["attrs"]["employer"] = rng.choice(companies)["name"]
        else:
            theirs = relative["attrs"]
            born = rng.choice([y for y in range(1850, 1996) if str(y) != theirs["born"]])
            employee = make_person(rng.choice([j for j in base.EMPLOYEE_JOBS if j != theirs["occupation"]]), born,
                                   rng.choice([t for t in town_names if t != theirs["birthplace"]]), names,
                                   surname=relative["surname"])
            employee["attrs"]["employer"] = rng.choice([c["name"] for c in companies
                                                        if c["name"] != theirs.get("employer")])
            employee["relative"], relative["relative"] = relative["name"], employee["name"]
        employee["deed"] = rng.choice(base.DEEDS) if rng.random() < 0.5 else None
        employees.append(employee)
    return employees


def make_world(world: str, rng: random.Random, names: base.NameMaker) -> list[dict]:
    """One split's world: entities {"kind", "name", "attrs", "text", "world", ...}, every link inside the world."""
    counts = COUNTS[world]
    rivers, towns = make_geography(counts, rng, names)
    town_names = [t["name"] for t in towns]
    companies, founders = make_companies(counts, town_names, rng, names)
    bands, musicians = make_bands(counts, town_names, rng, names)
    employees = make_employees(counts, founders + musicians, companies, town_names, rng, names)
    entities = towns + rivers + companies + bands + founders + musicians + employees
    for entity in entities:
        entity["world"] = world
    for entity in entities:
        entity["text"] = passage(entity, entities, rng)
    return entities


# ---------------------------------------------------------------------------------------------- passages
# (kind, attribute) -> phrasings of the fact; {s} the subject, {a} the value, {art} its article, {kind} a
# town's kind, {year} the year a founder's company was founded. One phrasing is drawn per entity and fact.
FACTS = {
    ("town", "province"): ["{s} is a {kind} in the province of {a}.", "{s}, a {kind}, belongs to the province of {a}.",
                           "Administratively, {s} is part of {a} province, where it counts as a {kind}.",
                           "The province of {a} includes {s}, a {kind}."],
    ("town", "founded"): ["{s} was founded in {a}.", "The first houses of {s} were built in {a}.",
                          "Records date the founding of {s} to {a}.",
                          "{s} dates from {a}, when its first settlers arrived."],
    ("town", "river"): ["{s} lies on the {a}.", "The {a} flows through {s}.", "{s} grew up along the banks of the {a}.",
                        "{s} stands on the {a}, which once carried most of its trade."],
    ("river", "source"): ["The {s} rises in the {a}.", "The source of the {s} lies in the {a}.",
                          "The {s} begins as a spring high in the {a}."],
    ("river", "mouth"): ["The {s} flows into {a}.", "The {s} ends in {a}.", "{a} receives the waters of the {s}.",
                         "The {s} empties into {a} after a slow final stretch."],
    ("company", "product"): ["The {s} makes {a}.", "The {s} is best known for its {a}.",
                             "The main product of the {s} is {a}.", "Since its early years the {s} has produced {a}."],
    ("company", "founded"): ["The {s} was founded in {a}.", "The {s} opened its doors in {a}.",
                             "The {s} has been in business since {a}."],
    ("company", "founder"): ["The {s} was founded by {a}.", "{a} set up the {s}.", "The founder of the {s} was {a}."],
    ("company", "hq"): ["The {s} is headquartered in {a}.", "The {s} has its headquarters in {a}.",
                        "The head office of the {s} stands in {a}.", "The {s} is based in {a}."],
    ("band", "town"): ["The {s} was formed in {a}.", "The {s} first came together in {a}.",
                       "{a} is the home town of the {s}."],
    ("band", "formed"): ["The {s} was formed in {a}.", "The {s} began performing in {a}.",
                         "The {s} has played together since {a}."],
    ("band", "leader"): ["The {s} is led by {a}.", "{a} leads the {s}.", "The leader of the {s} is {a}."],
    ("person", "occupation"): ["{s} is {art} {a}.", "{s} works as {art} {a}.", "By profession, {s} is {art} {a}.",
                               "{s} trained as {art} {a}."],
    ("person", "birthplace"): ["{s} was born in {a}.", "{s} is a native of {a}.", "{a} is the birthplace of {s}."],
    ("person", "born"): ["{s} was born in {a}.", "Records give {a} as the birth year of {s}.",
                         "{s} came into the world in {a}."],
    ("person", "employer"): ["{s} works for the {a}.", "{s} is employed by the {a}.", "{s} has a job at the {a}.",
                             "The {a} employs {s}."],
    ("person", "founded_company"): ["{s} founded the {a} in {year}.", "{s} is the founder of the {a}.",
                                    "In {year} {s} set up the {a}."],
    ("person", "instrument"): ["{s} plays the {a}.", "{s} is {art} {a} player.", "The {a} is the instrument of {s}."],
    ("person", "band"): ["{s} plays in the {a}.", "{s} is a member of the {a}.", "{s} performs with the {a}."],
}

# Sentences that state no askable fact; {s} is the subject.
FILLERS = {
    "town": ["The old quarter was rebuilt after a flood.", "A weekly market is held in the main square.",
             "Its church has a painted wooden ceiling.", "Many of the houses are built of grey stone.",
             "The town hall keeps a small museum of local crafts.",
             "Fairs in the autumn draw visitors from the surrounding villages.",
             "A narrow bridge links the two halves of the town.",
             "The railway arrived late, and the station stands outside the centre.",
             "Local bakers are proud of a honey cake made to an old recipe.",
             "Several inns along the high street date from the coaching era."],
    "river": ["Its lower course is wide and slow, and barges still use it.",
              "Floods in spring often cover the meadows along its banks.", "Anglers come for its trout and grayling.",
              "An old towpath follows the water for most of its length.",
              "Several mills once stood on its tributaries.",
              "The water is said to be coldest just below the falls.",
              "A stone bridge of seven arches crosses it near the middle of its course.",
              "Herons nest in the reed beds of its upper reaches."],
    "company": ["Its workshops were enlarged twice during the last century.",
                "The firm survived a serious fire in its early years.",
                "Apprentices still learn the trade in its own school.",
                "Its goods were once sold at fairs across the region.",
                "The company's ledgers are kept in a local archive.",
                "A painted sign above the gate has hung there for generations.",
                "Orders fell sharply during the war years but later recovered.",
                "Visitors may tour the works on the first day of each month."],
    "band": ["Its early concerts were given in the back rooms of inns.",
             "The group has recorded several albums on small labels.", "Its concerts usually end with a slow encore.",
             "Rehearsals take place in an old school hall.", "The group tours in the summer and rests in the winter.",
             "Critics have praised its careful arrangements.", "The members share the writing of new pieces."],
    "person": ["{s} spent several years travelling before settling down.",
               "Friends describe {s} as patient and careful.",
               "{s} keeps a small garden and a large library.", "In later years {s} gave talks at the local school.",
               "Letters written by {s} are kept in a family archive.", "{s} was educated at a village school.",
               "{s} rarely gives interviews.", "A portrait of {s} hangs in the town library."],
}


def fact_sentences(e: dict, rng: random.Random) -> list[str]:
    """Every askable fact of `e`, each in a phrasing drawn at random."""
    sentences = []
    for attr, value in e["attrs"].items():
        template = rng.choice(FACTS[(e["kind"], attr)])
        sentences.append(template.format(s=e["name"], a=value, art=base.article(value), kind=e.get("town_kind"),
                                         year=e.get("company_year")))
    return sentences


def extra_sentences(e: dict) -> list[str]:
    """True statements about `e` that no question asks about (its town's feature, a river's towns, ...)."""
    name = e["name"]
    if e["kind"] == "town":
        return [f"{name} is known for its {e['feature']}."]
    if e["kind"] == "river":
        *rest, last = e["towns"]
        return [f"On its way the {name} passes {', '.join(rest)} and {last}."]
    if e["kind"] == "band":
        return [f"The {name} plays {e['genre']} music."]
    if e["kind"] == "person":
        return ([f"{name} is the leader of the group."] if e.get("leads") else []) + \
               ([f"{name} is remembered for {e['deed']}."] if e.get("deed") else [])
    return []


def of(entities: list[dict], kind: str, **attrs: str) -> list[dict]:
    """The entities of `kind` whose attributes have the given values."""
    return [x for x in entities if x["kind"] == kind and all(x["attrs"].get(k) == v for k, v in attrs.items())]


def mentions(e: dict, world: list[dict], rng: random.Random) -> tuple[list[str], list[str]]:
    """(always shown, drawn from) sentences naming entities related to `e`, with true facts about them.

    Near-namesakes are always shown (so a search for one finds the other). Facts of the entity `e` links to
    (its employer, hq, river, leader, ...) are never stated, so two-hop questions stay two-hop.
    """
    by_name = {x["name"]: x for x in world}
    name, kind = e["name"], e["kind"]
    must, may = [], []
    if kind == "town":
        if "twin" in e:
            twin = by_name[e["twin"]]
            must.append(f"{name} should not be confused with {twin['name']}, a {twin['town_kind']} on the "
                        f"{twin['attrs']['river']} founded in {twin['attrs']['founded']}.")
            must.append(f"Letters meant for {twin['name']} are often delivered to {name} by mistake.")
        may += [f"The {c['name']}, maker of {c['attrs']['product']}, has its headquarters in {name}."
                for c in of(world, "company", hq=name)]
        may += [f"Among the people born in {name} is {p['name']}, {base.article(p['attrs']['occupation'])} "
                f"{p['attrs']['occupation']} born in {p['attrs']['born']}."
                for p in of(world, "person", birthplace=name)]
        may += [f"The {b['genre']} group {b['name']} was formed in {name} in {b['attrs']['formed']}."
                for b in of(world, "band", town=name)]
    elif kind == "river":
        for t in (by_name[t] for t in e["towns"]):
            may.append(f"{t['name']}, in the province of {t['attrs']['province']}, was founded in "
                       f"{t['attrs']['founded']}.")
            may += [f"The {c['name']} ships its {c['attrs']['product']} from {t['name']}."
                    for c in of(world, "company", hq=t["name"])]
    elif kind == "company":
        if "twin" in e:
            twin = by_name[e["twin"]]
            must.append(f"The {name} should not be confused with the {twin['name']}, which makes "
                        f"{twin['attrs']['product']} in {twin['attrs']['hq']}.")
        may += [f"Its staff include {p['name']}, {base.article(p['attrs']['occupation'])} {p['attrs']['occupation']} "
                f"born in {p['attrs']['birthplace']}." for p in of(world, "person", employer=name)]
        may += [f"The {c['name']}, which makes {c['attrs']['product']}, is also based in {c['attrs']['hq']}."
                for c in of(world, "company", hq=e["attrs"]["hq"]) if c is not e]
    elif kind == "band":
        may += [f"{m} plays the {by_name[m]['attrs']['instrument']} in the group." for m in e["members"][1:]]
        may += [f"The {b['name']} was also formed in {b['attrs']['town']}, in {b['attrs']['formed']}."
                for b in of(world, "band", town=e["attrs"]["town"]) if b is not e]
    else:
        if "relative" in e:
            r = by_name[e["relative"]]
            must.append(f"A relative, {r['name']}, is {base.article(r['attrs']['occupation'])} "
                        f"{r['attrs']['occupation']} born in {r['attrs']['birthplace']} in {r['attrs']['born']}.")
        a = e["attrs"]
        if "employer" in a:
            may += [f"At the {a['employer']}, {name} works alongside {p['name']}, "
                    f"{base.article(p['attrs']['occupation'])} {p['attrs']['occupation']} born in {p['attrs']['born']}."
                    for p in of(world, "person", employer=a["employer"]) if p is not e and "relative" not in p]
        if "founded_company" in a:
            may += [f"Today the {a['founded_company']} employs {p['name']}, born in {p['attrs']['birthplace']}."
                    for p in of(world, "person", employer=a["founded_company"])]
        if "band" in a:
            may += [f"{p['name']} plays the {p['attrs']['instrument']} in the same group."
                    for p in of(world, "person", band=a["band"]) if p is not e]
        peers = [p for p in of(world, "person", occupation=a["occupation"]) if p is not e and "relative" not in p]
        may += [f"{name} is often compared with {p['name']}, {base.article(a['occupation'])} {a['occupation']} "
                f"born in {p['attrs']['birthplace']}." for p in rng.sample(peers, min(len(peers), 2))]
    return must, may


def passage(e: dict, world: list[dict], rng: random.Random) -> str:
    """A PASSAGE_CHARS-long text: a fact first, then the other facts, mentions and fillers shuffled together."""
    facts = fact_sentences(e, rng)
    rng.shuffle(facts)
    lead, body = facts[0], facts[1:] + extra_sentences(e)
    must, may = mentions(e, world, rng)
    body += must + rng.sample(may, min(len(may), rng.randint(2, 4)))
    fillers = [f.format(s=e["name"]) for f in rng.sample(FILLERS[e["kind"]], len(FILLERS[e["kind"]]))]
    target = rng.randint(*TARGET_CHARS)
    while fillers and len(" ".join([lead, *body])) < target:
        body.append(fillers.pop())
    while len(" ".join([lead, *body])) > PASSAGE_CHARS[1]:  # drop optional sentences, last added first
        optional = [s for s in body if s not in facts and s not in must]
        if not optional:
            break
        body.remove(optional[-1])
    rng.shuffle(body)
    return " ".join([lead, *body])


# ---------------------------------------------------------------------------------------------- questions
# Keys as make_qa_task.RELATIONS and TWO_HOP; the first phrasing of each is make_qa_task.py's.
QUESTIONS = {
    ("person", "birthplace"): ["In which town was {s} born?", "Where was {s} born?", "What is the birthplace of {s}?",
                               "{s} was born in which town?"],
    ("person", "born"): ["In what year was {s} born?", "When was {s} born?", "What year was {s} born in?",
                         "{s} was born in which year?"],
    ("person", "occupation"): ["What is the profession of {s}?", "What does {s} do for a living?",
                               "What is the occupation of {s}?", "What kind of work does {s} do?"],
    ("person", "employer"): ["Which company does {s} work for?", "Who employs {s}?", "Which firm is {s} employed by?",
                             "{s} works for which company?"],
    ("person", "founded_company"): ["Which company did {s} found?", "What company was founded by {s}?",
                                    "{s} is the founder of which firm?", "Which firm did {s} set up?"],
    ("person", "instrument"): ["Which instrument does {s} play?", "What instrument is {s} known to play?",
                               "{s} plays which instrument?", "What does {s} play in the band?"],
    ("person", "band"): ["In which band does {s} play?", "Which group is {s} a member of?",
                         "{s} performs with which band?", "What band does {s} belong to?"],
    ("town", "river"): ["Which river flows through {s}?", "On which river does {s} lie?",
                        "What river runs through the town of {s}?", "{s} lies on which river?"],
    ("town", "founded"): ["In what year was {s} founded?", "When was the town of {s} founded?",
                          "What is the founding year of {s}?", "{s} was founded in which year?"],
    ("town", "province"): ["In which province is {s}?", "Which province does the town of {s} belong to?",
                           "{s} lies in which province?", "What province is {s} part of?"],
    ("river", "source"): ["Where does the {s} rise?", "Where is the source of the {s}?",
                          "In which hills does the {s} begin?", "The {s} rises where?"],
    ("river", "mouth"): ["Into which lake does the {s} flow?", "Where does the {s} end?",
                         "Which lake receives the waters of the {s}?", "The {s} empties into which lake?"],
    ("company", "founder"): ["Who founded the {s}?", "Who is the founder of the {s}?", "Who set up the {s}?",
                             "The {s} was founded by whom?"],
    ("company", "founded"): ["In what year was the {s} founded?", "When was the {s} founded?",
                             "Since what year has the {s} been in business?", "The {s} was established in which year?"],
    ("company", "hq"): ["In which town is the {s} headquartered?", "Where is the {s} based?",
                        "Which town is home to the head office of the {s}?", "Where are the headquarters of the {s}?"],
    ("company", "product"): ["What does the {s} make?", "What is the main product of the {s}?",
                             "What goods does the {s} produce?", "The {s} is known for making what?"],
    ("band", "town"): ["In which town was the {s} formed?", "Where was the {s} formed?",
                       "Which town is the home town of the {s}?", "The {s} first came together in which town?"],
    ("band", "formed"): ["In what year was the {s} formed?", "When was the {s} formed?",
                         "Since what year has the {s} played together?", "The {s} began performing in which year?"],
    ("band", "leader"): ["Who leads the {s}?", "Who is the leader of the {s}?", "The {s} is led by whom?",
                         "Which musician leads the {s}?"],
    ("person", "birthplace", "town", "river"): [
        "Which river flows through the birthplace of {s}?", "On which river lies the town where {s} was born?",
        "The town where {s} was born lies on which river?"],
    ("person", "birthplace", "town", "founded"): [
        "In what year was the birthplace of {s} founded?", "When was the town where {s} was born founded?",
        "The town in which {s} was born was founded in which year?"],
    ("person", "birthplace", "town", "province"): [
        "In which province is the birthplace of {s}?", "The town where {s} was born lies in which province?",
        "{s} was born in a town of which province?"],
    ("person", "employer", "company", "founder"): [
        "Who founded the company that {s} works for?", "Who set up the firm that employs {s}?",
        "The company {s} works for was founded by whom?"],
    ("person", "employer", "company", "hq"): [
        "In which town is the company that {s} works for headquartered?", "Where is the employer of {s} based?",
        "The firm that employs {s} has its head office in which town?"],
    ("person", "employer", "company", "product"): [
        "What does the company that {s} works for make?", "What does the employer of {s} produce?",
        "{s} works for a company that makes what?"],
    ("person", "founded_company", "company", "hq"): [
        "In which town is the company founded by {s} headquartered?", "Where is the firm that {s} founded based?",
        "The company {s} set up has its head office in which town?"],
    ("person", "founded_company", "company", "product"): [
        "What does the company founded by {s} make?", "What does the firm that {s} set up produce?",
        "{s} founded a company that makes what?"],
    ("person", "band", "band", "formed"): [
        "In what year was the band that {s} plays in formed?", "When was the group {s} plays with formed?",
        "The band {s} belongs to was formed in which year?"],
    ("person", "band", "band", "town"): [
        "In which town was the band that {s} plays in formed?", "Where was the group that {s} performs with formed?",
        "The band {s} belongs to came together in which town?"],
    ("town", "river", "river", "source"): [
        "Where does the river that flows through {s} rise?", "Where is the source of the river on which {s} lies?",
        "The river running through {s} rises in which hills?"],
    ("town", "river", "river", "mouth"): [
        "Into which lake does the river that flows through {s} flow?",
        "Which lake does the river through {s} empty into?",
        "The river on which {s} lies ends in which lake?"],
    ("company", "founder", "person", "birthplace"): [
        "In which town was the founder of the {s} born?", "Where was the person who founded the {s} born?",
        "The founder of the {s} is a native of which town?"],
    ("company", "founder", "person", "born"): [
        "In what year was the founder of the {s} born?", "When was the person who set up the {s} born?",
        "The founder of the {s} was born in which year?"],
    ("company", "hq", "town", "river"): [
        "Which river flows through the town where the {s} is headquartered?",
        "On which river lies the town where the {s} is based?",
        "The {s} has its head office in a town on which river?"],
    ("company", "hq", "town", "province"): [
        "In which province is the town where the {s} is headquartered?", "Which province is the {s} based in?",
        "The head office of the {s} lies in which province?"],
    ("band", "leader", "person", "birthplace"): [
        "In which town was the leader of the {s} born?", "Where was the musician who leads the {s} born?",
        "The leader of the {s} is a native of which town?"],
    ("band", "leader", "person", "instrument"): [
        "Which instrument does the leader of the {s} play?", "What does the musician who leads the {s} play?",
        "The leader of the {s} plays which instrument?"],
    ("band", "town", "town", "river"): [
        "Which river flows through the town where the {s} was formed?", "On which river lies the home town of the {s}?",
        "The {s} was formed in a town on which river?"],
}


def make_questions(entities: list[dict]) -> list[dict]:
    """Every 1-hop and 2-hop question the world supports, not yet phrased (`phrase` writes their text).

    A two-hop question is kept only when no alias of its answer is in the subject's own passage.
    """
    by_name = {e["name"]: e for e in entities}
    questions = []
    for e in entities:
        for (kind, attr) in base.RELATIONS:
            if kind == e["kind"] and attr in e["attrs"]:
                questions.append({"key": (kind, attr), "answers": base.aliases(e["attrs"][attr]), "hops": 1,
                                  "entities": [e["name"]], "relations": [(kind, attr)]})
        for key in base.TWO_HOP:
            kind, link, bridge_kind, attr = key
            if kind != e["kind"] or link not in e["attrs"]:
                continue
            bridge = by_name[e["attrs"][link]]
            answers = base.aliases(bridge["attrs"][attr])
            if any(a.lower() in e["text"].lower() for a in answers):
                continue  # answerable from the subject's own passage: not a real two-hop question
            questions.append({"key": key, "answers": answers, "hops": 2, "entities": [e["name"], bridge["name"]],
                              "relations": [(kind, link), (bridge_kind, attr)]})
    return questions


def phrase(questions: list[dict], rng: random.Random) -> None:
    """Write each question's text: per relation, its phrasings in a random order, used in turn (a fresh order
    once all are used), so a relation asked n times shows min(n, its phrasings) of them."""
    turns: dict[tuple, list[str]] = {}
    for q in questions:
        if not turns.get(q["key"]):
            turns[q["key"]] = rng.sample(QUESTIONS[q["key"]], len(QUESTIONS[q["key"]]))
        q["question"] = turns[q["key"]].pop().format(s=q["entities"][0])


# ---------------------------------------------------------------------------------------------- demos
def confusable(gold: dict, answers: list[str], docs: list[dict], rng: random.Random) -> dict:
    """The passage a search for `gold` would also return, without the answer: its near-namesake, else a passage
    naming `gold`, else one of the same kind."""
    candidates = [d for d in docs if d is not gold and not any(a.lower() in d["text"].lower() for a in answers)]
    namesake = [d for d in candidates if d["name"] in (gold.get("twin"), gold.get("relative"))]
    naming = [d for d in candidates if gold["name"] in d["text"]]
    same_kind = [d for d in candidates if d["kind"] == gold["kind"]]
    return rng.choice(namesake or naming or same_kind)


def search_step(gold: dict, answers: list[str], docs: list[dict], rng: random.Random) -> str:
    """One <search> for `gold` and its <information>: the gold passage first, then one confusable passage."""
    shown = [gold, confusable(gold, answers, docs, rng)][:DEMO_DOCS_PER_SEARCH]
    return f"<search> {gold['name']} </search>\n\n{base.information(shown)}\n\n"


def solution(q: dict, by_name: dict[str, dict], docs: list[dict], rng: random.Random) -> str:
    """The full assistant trajectory for a demo question, in the Search-R1 tag format."""
    subject, answer = by_name[q["entities"][0]], q["answers"][0]
    _, need, fact = base.RELATIONS[q["relations"][0]]
    if q["hops"] == 1:
        return (f"<think> I need to find {need.format(s=subject['name'])}. </think>\n"
                + search_step(subject, q["answers"], docs, rng)
                + f"<think> {base.say(fact, subject['name'], answer)} </think>\n<answer> {answer} </answer>")
    bridge = by_name[q["entities"][1]]
    found = subject["attrs"][q["relations"][0][1]]
    _, need2, fact2 = base.RELATIONS[q["relations"][1]]
    return (f"<think> I first need to find {need.format(s=subject['name'])}. </think>\n"
            + search_step(subject, [found], docs, rng)
            + f"<think> {base.say(fact, subject['name'], found)} "
            + f"Now I need to find {need2.format(s=bridge['name'])}. </think>\n"
            + search_step(bridge, q["answers"], docs, rng)
            + f"<think> {base.say(fact2, bridge['name'], answer)} </think>\n<answer> {answer} </answer>")


def pick_demos(pool: list[dict], by_name: dict[str, dict], docs: list[dict], rng: random.Random) -> list[dict]:
    """N_DEMOS demo records from the train pool, half per hop count, each a different relation about other
    entities, each solution at most MAX_DEMO_CHARS long; the chosen questions are removed from `pool`."""
    demos, seen, used = [], set(), set()
    for hops in (1, 2):
        candidates = [q for q in pool if q["hops"] == hops]
        rng.shuffle(candidates)
        for q in candidates:
            if len(demos) == N_DEMOS // 2 * hops:
                break
            if tuple(q["relations"]) in seen or used & set(q["entities"]):
                continue
            phrase([q], rng)
            text = solution(q, by_name, docs, rng)
            if len(text) <= MAX_DEMO_CHARS:
                seen.add(tuple(q["relations"]))
                used.update(q["entities"])
                pool.remove(q)
                demos.append({"id": f"demo-{len(demos) + 1:02d}", "question": q["question"], "answers": q["answers"],
                              "hops": q["hops"], "entities": q["entities"], "solution": text})
        if len(demos) < N_DEMOS // 2 * hops:
            raise ValueError(f"only {len(demos) - N_DEMOS // 2 * (hops - 1)} {hops}-hop demos of distinct relations "
                             f"and entities fit MAX_DEMO_CHARS={MAX_DEMO_CHARS}; raise it or shorten TARGET_CHARS")
    return demos


# ---------------------------------------------------------------------------------------------- checks
def phrasing(record: dict) -> str:
    """The question with its subject replaced by {s}: the template it was written from."""
    return record["question"].replace(record["entities"][0], "{s}")


def near_namesakes(entities: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs (a, b) of twins and relatives, each pair once."""
    by_name = {e["name"]: e for e in entities}
    return [(e, by_name[e[key]]) for e in entities for key in ("twin", "relative")
            if key in e and e["name"] < e[key]]


def check(entities: list[dict], files: dict[str, list[dict]]) -> None:
    """Raise ValueError unless the data keeps its promises.

    make_qa_task.check: worlds closed and disjoint (no name word shared), splits from their own worlds, sizes,
    two-hop share, answers in the last passage, no two-hop answer in the subject's passage, demos from the
    train world. Here also: every alias of every answer in the final-hop passage; passage lengths; in each
    split, MIN_PHRASINGS phrasings of every relation asked that often; near-namesakes that share a stem or
    surname, name each other and differ in every fact; no entity name inside another's; demos of
    DEMO_DOCS_PER_SEARCH passages a search, within MAX_DEMO_CHARS.
    """
    def fail(message: str) -> None:
        raise ValueError(f"make_qa_passages check failed: {message}")

    try:
        base.check(entities, files)
    except ValueError as err:
        fail(str(err).removeprefix("make_qa_task check failed: "))
    text = {d["title"]: d["text"] for d in files["corpus"]}
    for d in files["corpus"]:
        if not PASSAGE_CHARS[0] <= len(d["text"]) <= PASSAGE_CHARS[1]:
            fail(f"passage {d['title']!r} has {len(d['text'])} characters, outside {PASSAGE_CHARS}")
    names = sorted(text)
    if any(a in b for a in names for b in names if a != b):
        fail("an entity name is contained in another's")
    for r in [r for split in SIZES for r in files[split]] + files["demos"]:
        if not all(a in text[r["entities"][-1]] for a in r["answers"]):
            fail(f"{r['id']}: an answer alias is not in the final-hop passage {r['entities'][-1]!r}")
    for split in SIZES:
        phrasings: dict[str, list[str]] = {}
        for r in files[split]:
            phrasings.setdefault(r["relation"], []).append(phrasing(r))
        for relation, seen in phrasings.items():
            if len(set(seen)) < min(len(seen), MIN_PHRASINGS):
                fail(f"{split} {relation}: {len(seen)} questions in only {len(set(seen))} phrasings")
    pairs = near_namesakes(entities)
    for world in SIZES:
        kinds = {a["kind"] for a, _ in pairs if a["world"] == world}
        if kinds != {"town", "company", "person"}:
            fail(f"the {world} world has near-namesakes of kinds {sorted(kinds)}, not town, company and person")
    for a, b in pairs:
        shared = a["surname"] == b["surname"] if a["kind"] == "person" else a["stem"] == b["stem"]
        same = [k for k in a["attrs"] if a["attrs"][k] == b["attrs"].get(k)]
        if not shared or same or a["name"] not in text[b["name"]] or b["name"] not in text[a["name"]]:
            fail(f"near-namesakes {a['name']!r} and {b['name']!r}: shared stem {shared}, same facts {same}, "
                 "or they do not name each other")
    for demo in files["demos"]:
        blocks = re.findall(r"<information>(.*?)</information>", demo["solution"], re.S)
        if len(blocks) != demo["hops"] or any(len(re.findall(r"^Doc \d+\(Title: ", b, re.M)) != DEMO_DOCS_PER_SEARCH
                                              for b in blocks):
            fail(f"{demo['id']}: not {DEMO_DOCS_PER_SEARCH} passages for each of its {demo['hops']} searches")
        if len(demo["solution"]) > MAX_DEMO_CHARS:
            fail(f"{demo['id']}: solution of {len(demo['solution'])} characters > MAX_DEMO_CHARS={MAX_DEMO_CHARS}")


# ---------------------------------------------------------------------------------------------- output
README = """# Closed-world QA over long passages

A second bundled QA set, for training and evaluating *reading*: the bundled task (data/qa/) gives each entity a
2-4 sentence document that names only that entity, so a model trained there learns to search the right name but,
on real encyclopedia text, copies a name instead of reading the answer. Here the same kinds of invented towns,
rivers, companies, bands and people ({n_docs} passages) are described in {min_chars}-{max_chars} character
passages (mean {mean_chars}) that hold many names, and a search also returns near-namesakes.

Generated by `scripts/make_qa_passages.py` (stdlib only, fixed seed; running it again gives byte-identical files):

    python scripts/make_qa_passages.py            # writes data/qa_passages/
    {train_command}
    icrl-lite eval --checkpoint runs/<run> --dataset data/qa_passages/test.jsonl   # the run's corpus and budgets
    icrl-lite eval --checkpoint base --dataset data/qa_passages/test.jsonl --corpus data/qa_passages/corpus.jsonl {budgets}

The budgets fit the demos (`tests/test_qa_passages.py` checks them with `icrl_lite.rollout.demo_budget_problems`
and SmolLM2's tokenizer): the demos show the top {demo_docs} passages of each search, so the search tool returns
{demo_docs} as well (`search.top_k`); two passages fit `rollout.max_obs_tokens` uncut; a two-hop rollout (two
searches, three turns) fits `rollout.max_response_tokens`; 3 demos, the question and a full response fit
`rollout.max_context_tokens`. Measured when the set was made: a two-hop demo is 780-870 tokens (a single-hop one
450-550), two passages at most ~575 tokens, the prompt with the 3 longest demos ~3,100 tokens. The defaults
(`search.top_k=3`, `max_obs_tokens=500`, `max_response_tokens=512`) would cut observations and every two-hop demo.

| file           | records | fields |
|----------------|---------|--------|
| `corpus.jsonl` | {n_docs} ({kinds}): the three worlds together | `id`, `title`, `text` |
| `train.jsonl`  | {n_train} ({train_one} single-hop, {train_two} two-hop) | `id`, `question`, `answers`, `hops`, `entities`, `relation` |
| `dev.jsonl`    | {n_dev} ({dev_one} single-hop, {dev_two} two-hop) | same |
| `test.jsonl`   | {n_test} ({test_one} single-hop, {test_two} two-hop) | same |
| `demos.jsonl`  | {n_demos} worked trajectories ({demos_one} single-hop, {demos_two} two-hop, each a different relation; at most {demo_max} characters) | `id`, `question`, `answers`, `hops`, `entities`, `solution` |

## Passages

Each passage states every fact of its entity in one of 3-4 phrasings drawn per entity, in a shuffled order,
mixed with filler sentences that state no askable fact and with sentences about related entities and their
facts: a town passage names companies headquartered there, people born there and bands formed there; a
company passage names employees; a person passage names a colleague, a bandmate or a relative. A passage about
a person:

> {example}

Near-namesakes make retrieval confusable: {n_twin_towns} twin towns share a stem ({twin_town_example}),
{n_twin_companies} twin companies share a first word ({twin_company_example}), {n_relatives} pairs of relatives
share a surname ({relative_example}). Each pair names each other and differs in every fact, so a search for one
often returns the other (in BM25's top 3 for the name when the set was made: all relatives, 86% of the companies,
73% of the towns); a question always names its exact entity, so none is ambiguous. Facts of the entity a passage
links to (a person's employer, a town's river) are not stated in it, so two-hop questions need two searches.

## Questions

Each relation is asked in 3-4 phrasings (1-hop and 2-hop), drawn at random per question but in turn, so a relation
asked three times in a split shows three phrasings there:

{question_examples}

- Every alias of every answer appears verbatim in the passage of the question's last entity (`entities[-1]`);
  a two-hop question is kept only if its answer is absent from the subject's own passage.
- Splits follow data/qa/ (`scripts/make_qa_task.py`): three disjoint worlds (train, dev, test), one name
  generator, so no name stem is shared across worlds and no dev or test answer is reachable from train facts;
  the corpus is the union of the worlds (every split has distractors from the other two); demos come from the
  train world only. `check()` in the script raises if any of this breaks.
- Fields are as in data/qa/: `entities` lists the passages a question needs (subject first), `relation` the
  attributes followed, e.g. `person.birthplace>town.river`; `answers` holds the bare river name as an alias
  (`{river_alias}`).
"""


def readme(entities: list[dict], files: dict[str, list[dict]]) -> str:
    """README.md, its numbers and examples taken from the generated files."""
    lengths = [len(d["text"]) for d in files["corpus"]]
    plural = {"town": "towns", "river": "rivers", "company": "companies", "band": "bands", "person": "people"}
    kinds = ", ".join(f"{sum(e['kind'] == k for e in entities)} {plural[k]}" for k in base.KINDS)
    pairs = near_namesakes(entities)
    example_of = {k: next((f"{a['name']} / {b['name']}" for a, b in pairs if a["kind"] == k)) for k in plural
                  if any(a["kind"] == k for a, _ in pairs)}
    people = [e for e in entities if e["world"] == "train" and e["kind"] == "person" and "relative" in e]
    person = max(people, key=lambda e: len(re.findall(r"[A-Z][a-z]+ [A-Z][a-z]+", e["text"])))  # most names
    by_phrasing: dict[str, dict[str, str]] = {}  # relation -> phrasing -> its first question
    for r in files["train"]:
        by_phrasing.setdefault(r["relation"], {}).setdefault(phrasing(r), r["question"])
    shown = ["person.birthplace", "company.hq", "person.employer>company.product"]
    examples = "\n".join(f"- `{rel}`: " + "; ".join(f'"{q}"' for q in by_phrasing[rel].values()) for rel in shown)
    count = {split: (len(rs), sum(r["hops"] == 1 for r in rs), sum(r["hops"] == 2 for r in rs))
             for split, rs in files.items() if split != "corpus"}
    return README.format(
        n_docs=len(files["corpus"]), min_chars=min(lengths), max_chars=max(lengths),
        mean_chars=round(sum(lengths) / len(lengths)), train_command=TRAIN_COMMAND, demo_docs=DEMO_DOCS_PER_SEARCH,
        budgets=" ".join(re.findall(r"(?:search|rollout)\.\w+=\d+", TRAIN_COMMAND)), kinds=kinds,
        **{f"n_{s}": c[0] for s, c in count.items()}, **{f"{s}_one": c[1] for s, c in count.items()},
        **{f"{s}_two": c[2] for s, c in count.items()}, demo_max=max(len(d["solution"]) for d in files["demos"]),
        example=person["text"], n_twin_towns=sum(a["kind"] == "town" for a, _ in pairs),
        n_twin_companies=sum(a["kind"] == "company" for a, _ in pairs),
        n_relatives=sum(a["kind"] == "person" for a, _ in pairs), twin_town_example=example_of["town"],
        twin_company_example=example_of["company"], relative_example=example_of["person"],
        question_examples=examples,
        river_alias=json.dumps(next(r["answers"] for r in files["train"] if len(r["answers"]) > 1)))


def build(seed: int = SEED) -> tuple[list[dict], dict[str, list[dict]]]:
    """The three worlds' entities and the records of every file, checked."""
    rng = random.Random(seed)
    names = base.NameMaker(rng)  # one for all worlds: no stem is shared or contained across them
    worlds = {world: make_world(world, rng, names) for world in SIZES}
    entities = [e for world in worlds.values() for e in world]
    by_name = {e["name"]: e for e in entities}
    pools = {world: make_questions(worlds[world]) for world in SIZES}
    demos = pick_demos(pools["train"], by_name, worlds["train"], rng)

    docs = []  # grouped by kind, worlds shuffled together: a passage's id says nothing about its split
    for kind in base.KINDS:
        of_kind = [e for e in entities if e["kind"] == kind]
        rng.shuffle(of_kind)
        docs += of_kind
    files = {"corpus": [{"id": f"doc-{i:04d}", "title": e["name"], "text": e["text"]} for i, e in enumerate(docs, 1)]}
    for split, size in SIZES.items():
        chosen = base.sample_split(pools[split], size, rng)
        phrase(chosen, rng)
        files[split] = [base.question_record(q, f"{split}-{i:04d}") for i, q in enumerate(chosen, 1)]
    files["demos"] = demos
    check(entities, files)
    return entities, files


def generate(out_dir: Path = OUT_DIR, seed: int = SEED) -> dict[str, int]:
    """Write corpus, train, dev, test and demos JSONL files and README.md to `out_dir`; return record counts."""
    entities, files = build(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, records in files.items():
        base.write_jsonl(out_dir / f"{name}.jsonl", records)
    (out_dir / "README.md").write_text(readme(entities, files), encoding="utf-8")
    return {name: len(records) for name, records in files.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where to write the files")
    args = parser.parse_args(argv)
    sizes = generate(args.out_dir)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{name} {n}" for name, n in sizes.items()))


if __name__ == "__main__":
    main()
