"""Generate the bundled closed-world QA task in data/qa/: a corpus about invented entities and 1- and 2-hop questions.

Every name comes from a syllable generator, so a model cannot answer from memory and has to search.

The split is by world (by fact graph), not by question subject. Three disjoint worlds are built, one per
split (train, dev, test): every town, river, company, band and person, and every link between them
(birthplace, employer, founder, band, headquarters, river, ...), belongs to exactly one world, and links never
cross worlds. One name generator serves all three, so no name (or name stem) of one world occurs in another;
only generic values (years, products, instruments, occupations, genres) recur. Splitting subjects alone is not
enough: a bridge entity held out as a subject still answers train questions, so test questions would end on
facts the train set states, and memorising train answers would score without searching. Here a dev or test
question shares no entity, no final fact and no named answer with train, or with the other held-out split.
The corpus is the union of the three worlds' documents, so at search time every split has distractors from the
other two. Each split's questions are drawn from its own world; demonstrations come from the train world only
(gold and distractor documents alike) and follow the Search-R1 tag format. `check()` raises if any of this
breaks. Stdlib only and seeded: running it twice writes byte-identical files.

    python scripts/make_qa_task.py [--out-dir data/qa]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SEED = 1873
OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "qa"
SIZES = {"train": 1200, "dev": 240, "test": 200}  # questions per split, each from its own world
TWO_HOP_SHARE = 0.4
N_DEMOS = 12  # half single-hop, half two-hop
DOCS_PER_SEARCH = 3

# ---------------------------------------------------------------------------------------------- names
ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "sk", "t", "th",
          "tr", "v", "z"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ou"]
CODAS = ["", "", "", "l", "n", "r", "s", "k", "th", "m"]
RARE = ("k", "v", "z", "th", "ae")  # every stem has one: keeps names away from real words like "Boston"
TOWN_SUFFIXES = ["low", "wick", "mere", "holt", "by", "stead", "ford"]


class NameMaker:
    """Invents capitalised word stems; no stem is a substring of another, so names never overlap in text."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.stems: list[str] = []

    def stem(self, min_len: int = 5, max_len: int = 8) -> str:
        while True:
            word = "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)
                           for _ in range(2))
            if not min_len <= len(word) <= max_len or not any(r in word for r in RARE):
                continue
            if any(word in s or s in word for s in self.stems):
                continue
            self.stems.append(word)
            return word.capitalize()


# ---------------------------------------------------------------------------------------------- world
TOWN_KINDS = ["market town", "harbour town", "mill town", "hill town", "river town"]
TOWN_FEATURES = ["covered bridge", "clock tower", "salt market", "lantern festival", "stone granaries", "tanneries"]
COMPANY_KINDS = [("Foundry", "iron bells"), ("Press", "almanacs"), ("Mills", "woollen cloth"),
                 ("Instruments", "barometers"), ("Brewery", "dark ale"), ("Shipyard", "river barges"),
                 ("Confectioners", "marzipan"), ("Optics", "telescope lenses"), ("Ropeworks", "ship rope")]
FOUNDER_JOBS = ["merchant", "engineer", "chemist", "brewer", "inventor", "shipwright"]
EMPLOYEE_JOBS = ["glassblower", "clockmaker", "cartographer", "bookbinder", "botanist", "printer", "surveyor",
                 "accountant", "draughtsman", "lens grinder"]
DEEDS = ["a treatise on lamp oil", "a map of the northern marshes", "a clock that runs backwards",
         "a guide to river fishing", "a collection of moth drawings", "a record for walking between towns"]
ENSEMBLES = ["Quartet", "Trio", "Brass Band", "Players", "Orchestra"]
GENRES = ["folk", "jazz", "chamber", "dance", "marching"]
INSTRUMENTS = ["cello", "violin", "oboe", "trumpet", "accordion", "harp", "clarinet", "double bass", "flute"]
# Entities per world. Train keeps the size the bundled task always had (400 documents: 1575 single-hop and 1825
# two-hop candidates for 720 + 480 questions); dev (58 documents: 225 and 249 candidates for 144 + 96) and test
# (50: 191 and 209 for 120 + 80) are as small as leaves ~1.5x slack on single-hop, the scarcer kind.
# `members` is per band; every band, river and company lives in the world of its members, towns and staff.
COUNTS = {
    "train": {"province": 6, "river": 15, "towns_per_river": 3, "company": 50, "band": 25, "members": 3,
              "employee": 140},
    "dev": {"province": 3, "river": 3, "towns_per_river": 3, "company": 7, "band": 4, "members": 3, "employee": 16},
    "test": {"province": 3, "river": 3, "towns_per_river": 3, "company": 6, "band": 3, "members": 3, "employee": 14},
}
KINDS = ["town", "river", "company", "band", "person"]  # corpus order


def make_world(world: str, rng: random.Random, names: NameMaker) -> list[dict]:
    """One split's world, as {"kind", "name", "attrs", "text", "world"}: towns, rivers, companies, bands, people.

    Every link (birthplace, hq, employer, band, founder, river) points inside the world; `names` is shared by
    all worlds, so no name stem is reused across them.
    """
    counts = COUNTS[world]
    provinces = [names.stem() for _ in range(counts["province"])]
    rivers, towns = [], []
    for _ in range(counts["river"]):
        river = {"kind": "river", "name": f"{names.stem(4, 6)} River",
                 "attrs": {"source": f"{names.stem()} Hills", "mouth": f"Lake {names.stem()}"}}
        river["towns"] = [names.stem(4, 6) + rng.choice(TOWN_SUFFIXES) for _ in range(counts["towns_per_river"])]
        rivers.append(river)
        towns += [{"kind": "town", "name": t, "attrs": {"river": river["name"], "founded": str(rng.randint(1150, 1750)),
                                                        "province": rng.choice(provinces)}} for t in river["towns"]]
    town_names = [t["name"] for t in towns]

    def person(job: str, born: int) -> dict:
        first, last = names.stem(), names.stem()
        return {"kind": "person", "name": f"{first} {last}", "surname": last,
                "attrs": {"occupation": job, "birthplace": rng.choice(town_names), "born": str(born)}}

    companies, founders = [], []
    for _ in range(counts["company"]):
        kind, product = rng.choice(COMPANY_KINDS)
        founder = person(rng.choice(FOUNDER_JOBS), rng.randint(1800, 1930))
        company = {"kind": "company", "name": f"{names.stem()} {kind}",
                   "attrs": {"product": product, "founded": str(int(founder["attrs"]["born"]) + rng.randint(22, 50)),
                             "founder": founder["name"], "hq": rng.choice(town_names)}}
        founder["attrs"]["founded_company"] = company["name"]
        founder["company_year"] = company["attrs"]["founded"]
        companies.append(company)
        founders.append(founder)

    bands, musicians = [], []
    for _ in range(counts["band"]):
        formed = rng.randint(1950, 2010)
        members = [person("musician", formed - rng.randint(18, 40)) for _ in range(counts["members"])]
        band = {"kind": "band", "name": f"{names.stem()} {rng.choice(ENSEMBLES)}", "genre": rng.choice(GENRES),
                "attrs": {"town": rng.choice(town_names), "formed": str(formed), "leader": members[0]["name"]}}
        for member, instrument in zip(members, rng.sample(INSTRUMENTS, len(members))):
            member["attrs"].update(instrument=instrument, band=band["name"])
        members[0]["leads"] = True
        bands.append(band)
        musicians += members

    employees = []
    for _ in range(counts["employee"]):
        employee = person(rng.choice(EMPLOYEE_JOBS), rng.randint(1850, 1995))
        employee["attrs"]["employer"] = rng.choice(companies)["name"]
        employee["deed"] = rng.choice(DEEDS) if rng.random() < 0.5 else None
        employees.append(employee)

    for town in towns:
        town["feature"] = rng.choice(TOWN_FEATURES) if rng.random() < 0.5 else None
        town["town_kind"] = rng.choice(TOWN_KINDS)
    entities = towns + rivers + companies + bands + founders + musicians + employees
    for entity in entities:
        entity["text"] = describe(entity)
        entity["world"] = world
    return entities


def article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def describe(e: dict) -> str:
    """2-4 sentences stating the entity's attributes."""
    a, name = e["attrs"], e["name"]
    if e["kind"] == "town":
        text = (f"{name} is a {e['town_kind']} in the province of {a['province']}, founded in {a['founded']}. "
                f"It lies on the {a['river']}.")
        return text + (f" {name} is known for its {e['feature']}." if e["feature"] else "")
    if e["kind"] == "river":
        first, second, third = e["towns"]
        return (f"The {name} rises in the {a['source']} and flows into {a['mouth']}. "
                f"It passes through {first}, {second} and {third}.")
    if e["kind"] == "company":
        return (f"The {name} makes {a['product']}. It was founded in {a['founded']} by {a['founder']} "
                f"and is headquartered in {a['hq']}.")
    if e["kind"] == "band":
        return (f"The {name} is a {e['genre']} group formed in {a['town']} in {a['formed']}. "
                f"It is led by {a['leader']}.")
    text = f"{name} is {article(a['occupation'])} {a['occupation']} born in {a['birthplace']} in {a['born']}."
    surname = e["surname"]
    if "founded_company" in a:
        return text + f" {surname} founded the {a['founded_company']} in {e['company_year']}."
    if "band" in a:
        text += f" {surname} plays the {a['instrument']} in the {a['band']}."
        return text + (f" {surname} is the leader of the group." if e.get("leads") else "")
    text += f" {surname} works for the {a['employer']}."
    return text + (f" {surname} is remembered for {e['deed']}." if e["deed"] else "")


# ---------------------------------------------------------------------------------------------- questions
# (kind, attribute) -> question, what to look for, the fact once found. {s} subject, {a} answer.
RELATIONS = {
    ("person", "birthplace"): ("In which town was {s} born?", "where {s} was born", "{s} was born in {a}."),
    ("person", "born"): ("In what year was {s} born?", "the year {s} was born", "{s} was born in {a}."),
    ("person", "occupation"): ("What is the profession of {s}?", "the profession of {s}", "{s} is {art} {a}."),
    ("person", "employer"): ("Which company does {s} work for?", "which company {s} works for",
                             "{s} works for the {a}."),
    ("person", "founded_company"): ("Which company did {s} found?", "which company {s} founded",
                                    "{s} founded the {a}."),
    ("person", "instrument"): ("Which instrument does {s} play?", "which instrument {s} plays",
                               "{s} plays the {a}."),
    ("person", "band"): ("In which band does {s} play?", "which band {s} plays in", "{s} plays in the {a}."),
    ("town", "river"): ("Which river flows through {s}?", "which river flows through {s}", "{s} lies on the {a}."),
    ("town", "founded"): ("In what year was {s} founded?", "the year {s} was founded", "{s} was founded in {a}."),
    ("town", "province"): ("In which province is {s}?", "the province {s} is in",
                           "{s} is in the province of {a}."),
    ("river", "source"): ("Where does the {s} rise?", "where the {s} rises", "The {s} rises in the {a}."),
    ("river", "mouth"): ("Into which lake does the {s} flow?", "which lake the {s} flows into",
                         "The {s} flows into {a}."),
    ("company", "founder"): ("Who founded the {s}?", "who founded the {s}", "The {s} was founded by {a}."),
    ("company", "founded"): ("In what year was the {s} founded?", "the year the {s} was founded",
                             "The {s} was founded in {a}."),
    ("company", "hq"): ("In which town is the {s} headquartered?", "where the {s} is headquartered",
                        "The {s} is headquartered in {a}."),
    ("company", "product"): ("What does the {s} make?", "what the {s} makes", "The {s} makes {a}."),
    ("band", "town"): ("In which town was the {s} formed?", "the town where the {s} was formed",
                       "The {s} was formed in {a}."),
    ("band", "formed"): ("In what year was the {s} formed?", "the year the {s} was formed",
                         "The {s} was formed in {a}."),
    ("band", "leader"): ("Who leads the {s}?", "who leads the {s}", "The {s} is led by {a}."),
}

# (kind, link attribute, bridge kind, bridge attribute) -> question about the subject {s}
TWO_HOP = {
    ("person", "birthplace", "town", "river"): "Which river flows through the birthplace of {s}?",
    ("person", "birthplace", "town", "founded"): "In what year was the birthplace of {s} founded?",
    ("person", "birthplace", "town", "province"): "In which province is the birthplace of {s}?",
    ("person", "employer", "company", "founder"): "Who founded the company that {s} works for?",
    ("person", "employer", "company", "hq"): "In which town is the company that {s} works for headquartered?",
    ("person", "employer", "company", "product"): "What does the company that {s} works for make?",
    ("person", "founded_company", "company", "hq"): "In which town is the company founded by {s} headquartered?",
    ("person", "founded_company", "company", "product"): "What does the company founded by {s} make?",
    ("person", "band", "band", "formed"): "In what year was the band that {s} plays in formed?",
    ("person", "band", "band", "town"): "In which town was the band that {s} plays in formed?",
    ("town", "river", "river", "source"): "Where does the river that flows through {s} rise?",
    ("town", "river", "river", "mouth"): "Into which lake does the river that flows through {s} flow?",
    ("company", "founder", "person", "birthplace"): "In which town was the founder of the {s} born?",
    ("company", "founder", "person", "born"): "In what year was the founder of the {s} born?",
    ("company", "hq", "town", "river"): "Which river flows through the town where the {s} is headquartered?",
    ("company", "hq", "town", "province"): "In which province is the town where the {s} is headquartered?",
    ("band", "leader", "person", "birthplace"): "In which town was the leader of the {s} born?",
    ("band", "leader", "person", "instrument"): "Which instrument does the leader of the {s} play?",
    ("band", "town", "town", "river"): "Which river flows through the town where the {s} was formed?",
}


def aliases(value: str) -> list[str]:
    """Accepted answers: the value, plus the bare stem for rivers ("Velm River" -> "Velm")."""
    return [value, value.removesuffix(" River")] if value.endswith(" River") else [value]


def make_questions(entities: list[dict]) -> list[dict]:
    """Every 1-hop and 2-hop question the world supports, with the documents each hop needs."""
    by_name = {e["name"]: e for e in entities}
    questions = []
    for e in entities:
        for (kind, attr), (template, _, _) in RELATIONS.items():
            if kind == e["kind"] and attr in e["attrs"]:
                answers = aliases(e["attrs"][attr])
                assert answers[0] in e["text"], (e["name"], attr)
                questions.append({"question": template.format(s=e["name"]), "answers": answers, "hops": 1,
                                  "entities": [e["name"]], "relations": [(kind, attr)]})
        for (kind, link, bridge_kind, attr), template in TWO_HOP.items():
            if kind != e["kind"] or link not in e["attrs"]:
                continue
            bridge = by_name[e["attrs"][link]]
            answers = aliases(bridge["attrs"][attr])
            if any(a.lower() in e["text"].lower() for a in answers):
                continue  # answerable from the subject's own document: not a real two-hop question
            questions.append({"question": template.format(s=e["name"]), "answers": answers, "hops": 2,
                              "entities": [e["name"], bridge["name"]],
                              "relations": [(kind, link), (bridge_kind, attr)]})
    return questions


def sample_split(pool: list[dict], size: int, rng: random.Random) -> list[dict]:
    """`size` questions, TWO_HOP_SHARE of them two-hop, in a shuffled order."""
    n_two = round(size * TWO_HOP_SHARE)
    singles = [q for q in pool if q["hops"] == 1]
    doubles = [q for q in pool if q["hops"] == 2]
    if len(singles) < size - n_two or len(doubles) < n_two:
        raise ValueError(f"only {len(singles)} single-hop and {len(doubles)} two-hop candidates for {size} "
                         "questions; raise that world's COUNTS or lower SIZES")
    chosen = rng.sample(singles, size - n_two) + rng.sample(doubles, n_two)
    rng.shuffle(chosen)
    return chosen


# ---------------------------------------------------------------------------------------------- demos
def information(docs: list[dict]) -> str:
    lines = [f"Doc {i}(Title: {d['name']}) {d['text']}" for i, d in enumerate(docs, 1)]
    return "<information>" + "\n".join(lines) + "</information>"


def search_step(gold: dict, answer: str, train_docs: list[dict], rng: random.Random) -> str:
    """One <search> and its <information>: the gold document first, then same-kind train distractors."""
    candidates = [d for d in train_docs if d["kind"] == gold["kind"] and d is not gold and answer not in d["text"]]
    docs = [gold] + rng.sample(candidates, DOCS_PER_SEARCH - 1)
    return f"<search> {gold['name']} </search>\n\n{information(docs)}\n\n"


def say(fact: str, subject: str, value: str) -> str:
    return fact.format(s=subject, a=value, art=article(value))


def solution(q: dict, by_name: dict[str, dict], train_docs: list[dict], rng: random.Random) -> str:
    """The full assistant trajectory for a demo question, in the Search-R1 tag format."""
    subject, answer = by_name[q["entities"][0]], q["answers"][0]
    _, need, fact = RELATIONS[q["relations"][0]]
    found = subject["attrs"][q["relations"][0][1]]
    if q["hops"] == 1:
        return (f"<think> I need to find {need.format(s=subject['name'])}. </think>\n"
                + search_step(subject, answer, train_docs, rng)
                + f"<think> {say(fact, subject['name'], answer)} </think>\n<answer> {answer} </answer>")
    bridge = by_name[q["entities"][1]]
    _, need2, fact2 = RELATIONS[q["relations"][1]]
    return (f"<think> I first need to find {need.format(s=subject['name'])}. </think>\n"
            + search_step(subject, found, train_docs, rng)
            + f"<think> {say(fact, subject['name'], found)} "
            + f"Now I need to find {need2.format(s=bridge['name'])}. </think>\n"
            + search_step(bridge, answer, train_docs, rng)
            + f"<think> {say(fact2, bridge['name'], answer)} </think>\n<answer> {answer} </answer>")


def pick_demos(pool: list[dict], rng: random.Random) -> list[dict]:
    """N_DEMOS questions of the train world's pool, half per hop count, each with a different relation."""
    demos, seen = [], set()
    for hops in (1, 2):
        candidates = [q for q in pool if q["hops"] == hops]
        rng.shuffle(candidates)
        for q in candidates:
            if len(demos) < N_DEMOS // 2 * hops and tuple(q["relations"]) not in seen:
                seen.add(tuple(q["relations"]))
                demos.append(q)
    return demos


# ---------------------------------------------------------------------------------------------- records
def question_record(q: dict, qid: str) -> dict:
    relation = ">".join(f"{kind}.{attr}" for kind, attr in q["relations"])
    return {"id": qid, "question": q["question"], "answers": q["answers"], "hops": q["hops"],
            "entities": q["entities"], "relation": relation}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- checks
GENERIC_NAME_WORDS = {word.lower() for part in ["River", "Hills", "Lake", *ENSEMBLES, *dict(COMPANY_KINDS)]
                      for word in part.split()}  # the fixed words in names ("Brass Band"): the rest is invented


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def name_words(entities: list[dict]) -> set[str]:
    """The invented words of a world: every word of its entity, province, hill and lake names but the generic ones."""
    names = [e["name"] for e in entities] + [e["attrs"][a] for e in entities for a in ("province", "source", "mouth")
                                             if a in e["attrs"]]
    return set().union(*map(words, names)) - GENERIC_NAME_WORDS


def final_fact(record: dict) -> tuple[str, str]:
    """(last entity, final kind.attribute): the fact a question's answer is read from."""
    return record["entities"][-1], record["relation"].split(">")[-1]


def check(entities: list[dict], files: dict[str, list[dict]]) -> None:
    """Raise ValueError unless the worlds are closed and disjoint and the splits keep to their own world.

    Checked: no name word is shared by two worlds and no document or link reaches into another world; each
    split's questions use only its own world's entities and names (so no entity, final fact or named answer is
    shared between splits); sizes and the two-hop share; every answer is in the corpus and in the question's
    last document, and no two-hop answer is in the subject's document; demos show train-world documents only.
    """
    def fail(message: str) -> None:
        raise ValueError(f"make_qa_task check failed: {message}")

    by_name = {e["name"]: e for e in entities}
    if len(by_name) != len(entities):
        fail("two entities share a name")
    worlds = {w: [e for e in entities if e["world"] == w] for w in SIZES}
    own = {w: name_words(es) for w, es in worlds.items()}
    if any(own[a] & own[b] for a in SIZES for b in SIZES if a < b):
        fail("a name word is shared by two worlds")
    foreign = {w: set().union(*(own[v] for v in SIZES if v != w)) for w in SIZES}
    for e in entities:  # links never cross worlds: a document names nothing of another world
        if words(e["name"] + " " + e["text"]) & foreign[e["world"]]:
            fail(f"document {e['name']!r} ({e['world']}) names another world")
        linked = [v for v in e["attrs"].values() if v in by_name] + e.get("towns", [])
        if any(by_name[v]["world"] != e["world"] for v in linked):
            fail(f"{e['name']!r} links to another world")

    text = {e["name"]: e["text"] for e in entities}
    all_text = "\n".join(r["text"] for r in files["corpus"])
    if sorted(r["title"] for r in files["corpus"]) != sorted(by_name):
        fail("the corpus is not the union of the worlds")
    facts = {}
    for split, size in SIZES.items():
        records = files[split]
        if len(records) != size or sum(r["hops"] == 2 for r in records) != round(size * TWO_HOP_SHARE):
            fail(f"{split} has {len(records)} questions, {sum(r['hops'] == 2 for r in records)} two-hop")
        facts[split] = {final_fact(r) for r in records}
        for r in records:
            if any(by_name[n]["world"] != split for n in r["entities"]):
                fail(f"{r['id']} uses an entity of another world")
            if words(" ".join([r["question"], *r["answers"]])) & foreign[split]:
                fail(f"{r['id']} names another world")
            if not all(a in all_text for a in r["answers"]) or r["answers"][0] not in text[r["entities"][-1]]:
                fail(f"{r['id']}: answer not in the corpus / the last document")
            if r["hops"] == 2 and any(a.lower() in text[r["entities"][0]].lower() for a in r["answers"]):
                fail(f"{r['id']}: two-hop answer in the subject's own document")
    if any(facts[a] & facts[b] for a in SIZES for b in SIZES if a < b):
        fail("two splits share a final fact")
    demos = files["demos"]
    if len(demos) != N_DEMOS or sum(d["hops"] == 2 for d in demos) != N_DEMOS // 2:
        fail(f"{len(demos)} demos, {sum(d['hops'] == 2 for d in demos)} two-hop")
    for demo in demos:
        titles = re.findall(r"Title: ([^)\n]+)\)", demo["solution"])
        if any(by_name[t]["world"] != "train" for t in titles + demo["entities"]):
            fail(f"{demo['id']} shows a document outside the train world")
        if words(" ".join([demo["question"], demo["solution"], *demo["answers"]])) & foreign["train"]:
            fail(f"{demo['id']} names a held-out world")


# ---------------------------------------------------------------------------------------------- output
def generate(out_dir: Path = OUT_DIR, seed: int = SEED) -> dict[str, int]:
    """Write corpus, train, dev, test and demos JSONL files to `out_dir`; return the number of records in each."""
    rng = random.Random(seed)
    names = NameMaker(rng)  # one for all worlds: no stem is shared or contained across them
    worlds = {world: make_world(world, rng, names) for world in SIZES}
    entities = [e for world in worlds.values() for e in world]
    by_name = {e["name"]: e for e in entities}
    pools = {world: make_questions(worlds[world]) for world in SIZES}

    demo_questions = pick_demos(pools["train"], rng)
    pools["train"] = [q for q in pools["train"] if q not in demo_questions]
    demos = [{"id": f"demo-{i:02d}", "question": q["question"], "answers": q["answers"], "hops": q["hops"],
              "entities": q["entities"], "solution": solution(q, by_name, worlds["train"], rng)}
             for i, q in enumerate(demo_questions, 1)]

    docs = []  # grouped by kind, worlds shuffled together: a document's id says nothing about its split
    for kind in KINDS:
        of_kind = [e for e in entities if e["kind"] == kind]
        rng.shuffle(of_kind)
        docs += of_kind
    files = {"corpus": [{"id": f"doc-{i:04d}", "title": e["name"], "text": e["text"]} for i, e in enumerate(docs, 1)]}
    for split, size in SIZES.items():
        chosen = sample_split(pools[split], size, rng)
        files[split] = [question_record(q, f"{split}-{i:04d}") for i, q in enumerate(chosen, 1)]
    files["demos"] = demos
    check(entities, files)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, records in files.items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
    return {name: len(records) for name, records in files.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where to write the JSONL files")
    args = parser.parse_args(argv)
    sizes = generate(args.out_dir)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{name} {n}" for name, n in sizes.items()))


if __name__ == "__main__":
    main()
