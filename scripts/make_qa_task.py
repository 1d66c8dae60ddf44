"""Generate the bundled closed-world QA task in data/qa/: a corpus about invented entities and 1- and 2-hop questions.

Every name comes from a syllable generator, so a model cannot answer from memory and has to search. Subject
entities (the one named in a question) are split into train / dev / test before any question is written, so
the splits share none. Demonstrations use train entities only and follow the Search-R1 tag format.
Stdlib only and seeded: running it twice writes byte-identical files.

    python scripts/make_qa_task.py [--out-dir data/qa]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 1873
OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "qa"
SIZES = {"train": 1200, "dev": 100, "test": 200}
TWO_HOP_SHARE = 0.4
HELD_OUT_SHARES = {"test": 0.17, "dev": 0.09}  # of each kind's entities; the rest is train
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
COUNTS = {"province": 6, "river": 15, "towns_per_river": 3, "company": 50, "band": 25, "members": 3,
          "employee": 140}


def make_world(rng: random.Random) -> list[dict]:
    """All entities as {"kind", "name", "attrs", "text"}: towns, rivers, companies, bands, then people."""
    names = NameMaker(rng)
    provinces = [names.stem() for _ in range(COUNTS["province"])]
    rivers, towns = [], []
    for _ in range(COUNTS["river"]):
        river = {"kind": "river", "name": f"{names.stem(4, 6)} River",
                 "attrs": {"source": f"{names.stem()} Hills", "mouth": f"Lake {names.stem()}"}}
        river["towns"] = [names.stem(4, 6) + rng.choice(TOWN_SUFFIXES) for _ in range(COUNTS["towns_per_river"])]
        rivers.append(river)
        towns += [{"kind": "town", "name": t, "attrs": {"river": river["name"], "founded": str(rng.randint(1150, 1750)),
                                                        "province": rng.choice(provinces)}} for t in river["towns"]]
    town_names = [t["name"] for t in towns]

    def person(job: str, born: int) -> dict:
        first, last = names.stem(), names.stem()
        return {"kind": "person", "name": f"{first} {last}", "surname": last,
                "attrs": {"occupation": job, "birthplace": rng.choice(town_names), "born": str(born)}}

    companies, founders = [], []
    for _ in range(COUNTS["company"]):
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
    for _ in range(COUNTS["band"]):
        formed = rng.randint(1950, 2010)
        members = [person("musician", formed - rng.randint(18, 40)) for _ in range(COUNTS["members"])]
        band = {"kind": "band", "name": f"{names.stem()} {rng.choice(ENSEMBLES)}", "genre": rng.choice(GENRES),
                "attrs": {"town": rng.choice(town_names), "formed": str(formed), "leader": members[0]["name"]}}
        for member, instrument in zip(members, rng.sample(INSTRUMENTS, len(members))):
            member["attrs"].update(instrument=instrument, band=band["name"])
        members[0]["leads"] = True
        bands.append(band)
        musicians += members

    employees = []
    for _ in range(COUNTS["employee"]):
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


def split_subjects(entities: list[dict], rng: random.Random) -> dict[str, str]:
    """Entity name -> split, drawn per kind so every split has people, towns, companies, bands and rivers."""
    split_of = {}
    for kind in ["town", "river", "company", "band", "person"]:
        names = [e["name"] for e in entities if e["kind"] == kind]
        rng.shuffle(names)
        n_test = round(len(names) * HELD_OUT_SHARES["test"])
        n_dev = round(len(names) * HELD_OUT_SHARES["dev"])
        for i, name in enumerate(names):
            split_of[name] = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    return split_of


def sample_split(pool: list[dict], size: int, rng: random.Random) -> list[dict]:
    """`size` questions, TWO_HOP_SHARE of them two-hop, in a shuffled order."""
    n_two = round(size * TWO_HOP_SHARE)
    singles = [q for q in pool if q["hops"] == 1]
    doubles = [q for q in pool if q["hops"] == 2]
    if len(singles) < size - n_two or len(doubles) < n_two:
        raise ValueError(f"only {len(singles)} single-hop and {len(doubles)} two-hop candidates for {size} "
                         "questions; raise COUNTS or lower SIZES")
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


def pick_demos(pool: list[dict], split_of: dict[str, str], rng: random.Random) -> list[dict]:
    """N_DEMOS train questions, half per hop count, each with a different relation; no held-out name in them."""
    def train_only(q: dict) -> bool:
        return all(split_of.get(n, "train") == "train" for n in q["entities"] + q["answers"])

    demos, seen = [], set()
    for hops in (1, 2):
        candidates = [q for q in pool if q["hops"] == hops and train_only(q)]
        rng.shuffle(candidates)
        for q in candidates:
            if len(demos) < N_DEMOS // 2 * hops and tuple(q["relations"]) not in seen:
                seen.add(tuple(q["relations"]))
                demos.append(q)
    return demos


# ---------------------------------------------------------------------------------------------- output
def question_record(q: dict, qid: str) -> dict:
    relation = ">".join(f"{kind}.{attr}" for kind, attr in q["relations"])
    return {"id": qid, "question": q["question"], "answers": q["answers"], "hops": q["hops"],
            "entities": q["entities"], "relation": relation}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def generate(out_dir: Path = OUT_DIR, seed: int = SEED) -> dict[str, int]:
    """Write corpus, train, dev, test and demos JSONL files to `out_dir`; return the number of records in each."""
    rng = random.Random(seed)
    entities = make_world(rng)
    by_name = {e["name"]: e for e in entities}
    split_of = split_subjects(entities, rng)
    questions = make_questions(entities)
    pools = {split: [q for q in questions if split_of[q["entities"][0]] == split] for split in SIZES}

    demo_questions = pick_demos(pools["train"], split_of, rng)
    pools["train"] = [q for q in pools["train"] if q not in demo_questions]
    train_docs = [e for e in entities if split_of[e["name"]] == "train"]
    demos = [{"id": f"demo-{i:02d}", "question": q["question"], "answers": q["answers"], "hops": q["hops"],
              "entities": q["entities"], "solution": solution(q, by_name, train_docs, rng)}
             for i, q in enumerate(demo_questions, 1)]

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"corpus": [{"id": f"doc-{i:04d}", "title": e["name"], "text": e["text"]}
                        for i, e in enumerate(entities, 1)]}
    for split, size in SIZES.items():
        chosen = sample_split(pools[split], size, rng)
        files[split] = [question_record(q, f"{split}-{i:04d}") for i, q in enumerate(chosen, 1)]
    files["demos"] = demos
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
