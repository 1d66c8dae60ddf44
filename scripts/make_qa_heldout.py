"""Generate a held-out QA set in data/qa_heldout/: a corpus and test questions the bundled task never shows.

It checks that a model trained on data/qa/ generalises rather than learning that task's world. Everything
differs from scripts/make_qa_task.py: the domain (seas, islands, ships, lighthouses, observatories and comets
instead of towns, rivers, companies, bands and people), the name syllables (each stem holds an x, q, j or y,
letters the bundled stems never use), the document style (gazetteer and register entries as well as prose)
and the question phrasing ("The ship X was launched in which year?", "What is the name of ...").
About a quarter of the documents are distractors (harbour books, observatory bulletins, sea surveys,
keepers' notes) that name several entities and state true facts about them, so a search for an entity
returns more than its own document. There is only a test split: no training questions, no demos.
Stdlib only and seeded: running it twice writes byte-identical files.

    python scripts/make_qa_heldout.py [--out-dir data/qa_heldout]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 4417
OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "qa_heldout"
N_QUESTIONS = 100
TWO_HOP_SHARE = 0.4
COUNTS = {"sea": 5, "island": 24, "ship": 45, "lighthouse": 20, "observatory": 12, "comet": 30,
          "harbour_book": 24, "bulletin": 12, "keepers_notes": 10}

# ---------------------------------------------------------------------------------------------- names
# Disjoint in spirit from make_qa_task.py's inventory (b br d dr ... / a e i o u ae ou / l n r s k th m):
# MARKERS are letters no bundled stem contains, so no held-out stem can equal or sit inside a bundled one.
ONSETS = ["c", "ch", "cl", "j", "qu", "w", "wh", "x", "y", "gl", "pl", "sn", "sp", "fl"]
VOWELS = ["a", "e", "i", "o", "u", "y", "ei", "oa", "ia", "uo"]
CODAS = ["", "", "x", "ck", "nd", "lt", "sp", "ng"]
MARKERS = ("x", "q", "j", "y")


class NameMaker:
    """Invents capitalised two-syllable stems; no stem is a substring of another, so names never overlap in text."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.stems: list[str] = []

    def stem(self, min_len: int = 5, max_len: int = 8) -> str:
        while True:
            word = "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)
                           for _ in range(2))
            if not min_len <= len(word) <= max_len or not any(m in word for m in MARKERS):
                continue
            if any(x == y for x, y in zip(word, word[1:])):  # "Wultyynd", "Caxyyx": hard to read and to copy
                continue
            if any(word in s or s in word for s in self.stems):
                continue
            self.stems.append(word)
            return word.capitalize()


# ---------------------------------------------------------------------------------------------- world
FISH = ["herring", "mackerel", "pilchards", "sprats", "lobsters", "oysters"]
RIGS = ["schooner", "brig", "ketch", "barque", "sloop", "cutter", "steam packet"]
CARGOES = ["whale oil", "salt cod", "copper ore", "tea chests", "pepper", "cane sugar", "coal", "roofing slate",
           "pine timber", "pearl shell", "guano"]
LIGHTS = ["two red flashes", "three white flashes", "four quick flashes", "a fixed green light",
          "alternating red and white", "one long amber flash"]
TELESCOPES = ["refractor", "reflector"]


def make_world(rng: random.Random) -> list[dict]:
    """Every entity as {"kind", "name", "attrs", "text"}: seas, islands, ships, lighthouses, observatories, comets."""
    names = NameMaker(rng)
    seas = [{"kind": "sea", "name": f"{names.stem()} Sea",
             "attrs": {"current": f"{names.stem()} Drift", "fish": rng.choice(FISH)}} for _ in range(COUNTS["sea"])]
    islands = [{"kind": "island", "name": names.stem(),
                "attrs": {"sea": rng.choice(seas)["name"], "harbour": f"Port {names.stem(4, 6)}",
                          "charted": str(rng.randint(1500, 1790))}} for _ in range(COUNTS["island"])]
    island_names = [i["name"] for i in islands]
    ships = [{"kind": "ship", "name": names.stem(),
              "attrs": {"rig": rng.choice(RIGS), "launched": str(rng.randint(1820, 1910)),
                        "home": rng.choice(island_names), "cargo": rng.choice(CARGOES)}}
             for _ in range(COUNTS["ship"])]
    lighthouses = [{"kind": "lighthouse", "name": f"{names.stem()} Light",
                    "attrs": {"island": rng.choice(island_names), "lit": str(rng.randint(1790, 1900)),
                              "light": rng.choice(LIGHTS), "height": f"{rng.randint(18, 64)} metres"}}
                   for _ in range(COUNTS["lighthouse"])]
    observatories = [{"kind": "observatory", "name": f"{names.stem()} Observatory",
                      "attrs": {"island": rng.choice(island_names), "founded": str(rng.randint(1780, 1890)),
                                "telescope": f"{rng.choice([12, 15, 18, 20, 24, 28, 30, 36, 40])}-inch "
                                             f"{rng.choice(TELESCOPES)}"}}
                     for _ in range(COUNTS["observatory"])]
    comets = []
    for _ in range(COUNTS["comet"]):
        observatory = rng.choice(observatories)
        comets.append({"kind": "comet", "name": f"Comet {names.stem()}",
                       "attrs": {"observatory": observatory["name"],
                                 "discovered": str(rng.randint(int(observatory["attrs"]["founded"]) + 1, 1950)),
                                 "period": f"{rng.randint(5, 140)} years"}})
    entities = seas + islands + ships + lighthouses + observatories + comets
    for entity in entities:
        entity["text"] = describe(entity, rng.random() < 0.5)
    return entities


def describe(e: dict, register: bool) -> str:
    """One or two sentences stating the entity's attributes, as prose or as a register entry."""
    a, name = e["attrs"], e["name"]
    if e["kind"] == "sea":
        if register:
            return f"{name}. Chief fishery: {a['fish']}. Prevailing current: the {a['current']}."
        return (f"Sailing directions for the {name}: the {a['current']} sweeps its western reaches, and its "
                f"fishing fleets land mostly {a['fish']}.")
    if e["kind"] == "island":
        if register:
            return f"Gazetteer, {name}: an island of the {a['sea']}. Harbour: {a['harbour']}. First charted: {a['charted']}."
        return f"Lying in the {a['sea']}, the island of {name} was first charted in {a['charted']}. Its main anchorage is {a['harbour']}."
    if e["kind"] == "ship":
        if register:
            return (f"Ship register, {name}. Rig: {a['rig']}. Launched: {a['launched']}. Home island: {a['home']}. "
                    f"Cargo: {a['cargo']}.")
        return (f"The {a['rig']} {name} went down the slipway in {a['launched']} and sails out of {a['home']}, "
                f"usually laden with {a['cargo']}.")
    if e["kind"] == "lighthouse":
        if register:
            return (f"Light list, {name} ({a['island']}). First lit: {a['lit']}. Character: {a['light']}. "
                    f"Tower height: {a['height']}.")
        return (f"Since {a['lit']} the {name} has stood on {a['island']}, showing {a['light']} from a tower "
                f"{a['height']} tall.")
    if e["kind"] == "observatory":
        if register:
            return f"{name} (est. {a['founded']}), on the island of {a['island']}. Principal instrument: {a['telescope']}."
        article = "an" if a["telescope"].startswith(("8", "11", "18")) else "a"
        return f"Built on {a['island']} in {a['founded']}, the {name} houses {article} {a['telescope']}."
    if register:
        return f"Catalogue entry, {name}. Discovered: {a['discovered']}, at the {a['observatory']}. Period: {a['period']}."
    return f"{name} was first sighted from the {a['observatory']} in {a['discovered']}; it comes back every {a['period']}."


def make_distractors(entities: list[dict], rng: random.Random) -> list[dict]:
    """Documents naming several entities with true facts, none of them the entity's own document.

    Harbour books name visiting ships (not ships of that island), bulletins name comets found elsewhere,
    surveys list a sea's islands, keepers' notes set two lighthouses side by side.
    """
    of_kind = {kind: [e for e in entities if e["kind"] == kind] for kind in ("sea", "island", "ship", "lighthouse", "comet",
                                                                            "observatory")}
    docs = []
    for island in rng.sample(of_kind["island"], COUNTS["harbour_book"]):
        visitor, stormbound = rng.sample([s for s in of_kind["ship"] if s["attrs"]["home"] != island["name"]], 2)
        year = rng.randint(max(int(visitor["attrs"]["launched"]), int(stormbound["attrs"]["launched"])) + 1, 1930)
        harbour = island["attrs"]["harbour"]
        docs.append({"title": f"Harbour book of {harbour}",
                     "text": f"Entries for {year} at {harbour}, {island['name']}: the {visitor['name']} put in with a "
                             f"hold of {visitor['attrs']['cargo']}, and the {stormbound['name']}, a "
                             f"{stormbound['attrs']['rig']} out of {stormbound['attrs']['home']}, sheltered here "
                             f"from a gale."})
    for observatory in rng.sample(of_kind["observatory"], COUNTS["bulletin"]):
        seen = rng.sample([c for c in of_kind["comet"] if c["attrs"]["observatory"] != observatory["name"]], 2)
        year = rng.randint(max(int(c["attrs"]["discovered"]) for c in seen) + 1, 1960)
        docs.append({"title": f"Observing bulletin of {year}",
                     "text": f"Staff of the {observatory['name']} followed {seen[0]['name']} and {seen[1]['name']} "
                             f"this season, though neither was found there; {seen[0]['name']} returns every "
                             f"{seen[0]['attrs']['period']}, and {seen[1]['name']} was first seen in "
                             f"{seen[1]['attrs']['discovered']}."})
    for sea in of_kind["sea"]:
        members = [i["name"] for i in of_kind["island"] if i["attrs"]["sea"] == sea["name"]]
        listed = ", ".join(members[:-1]) + f" and {members[-1]}" if len(members) > 1 else members[0]
        docs.append({"title": f"Survey of the {sea['name']}",
                     "text": f"A survey made in {rng.randint(1800, 1900)} counts {len(members)} charted islands "
                             f"in the {sea['name']}: {listed}."})
    lights = of_kind["lighthouse"][:]
    rng.shuffle(lights)
    for first, second in zip(lights[0:2 * COUNTS["keepers_notes"]:2], lights[1:2 * COUNTS["keepers_notes"]:2]):
        docs.append({"title": "Keepers' notes",
                     "text": f"Mariners often mistake the {first['name']} for the {second['name']}. The former shows "
                             f"{first['attrs']['light']}; the latter, on {second['attrs']['island']}, shows "
                             f"{second['attrs']['light']}."})
    return docs


# ---------------------------------------------------------------------------------------------- questions
# (kind, attribute) -> question about the subject {s}; phrased unlike any template of make_qa_task.py.
RELATIONS = {
    ("sea", "current"): "What is the name of the current that sweeps the {s}?",
    ("sea", "fish"): "Which catch do the fishing fleets of the {s} mostly land?",
    ("island", "sea"): "Which sea surrounds the island of {s}?",
    ("island", "harbour"): "What is the name of the main harbour on {s}?",
    ("island", "charted"): "The island of {s} was first charted in which year?",
    ("ship", "rig"): "What kind of vessel is the ship {s}?",
    ("ship", "launched"): "The ship {s} was launched in which year?",
    ("ship", "home"): "Which island is the ship {s} based at?",
    ("ship", "cargo"): "What cargo does the ship {s} usually carry?",
    ("lighthouse", "island"): "Name the island on which the {s} stands.",
    ("lighthouse", "lit"): "When was the {s} first lit?",
    ("lighthouse", "light"): "What light does the {s} show to ships at night?",
    ("lighthouse", "height"): "How tall is the tower of the {s}?",
    ("observatory", "island"): "The {s} was built on which island?",
    ("observatory", "founded"): "What year was the {s} established?",
    ("observatory", "telescope"): "What is the principal instrument of the {s}?",
    ("comet", "observatory"): "From which observatory was {s} first sighted?",
    ("comet", "discovered"): "{s} was discovered in which year?",
    ("comet", "period"): "How often does {s} come back?",
}

# (kind, link attribute, bridge kind, bridge attribute) -> question about the subject {s}
TWO_HOP = {
    ("island", "sea", "sea", "current"): "Which current sweeps the sea around the island of {s}?",
    ("island", "sea", "sea", "fish"): "What do the fishing fleets of the sea around {s} mostly land?",
    ("ship", "home", "island", "sea"): "The ship {s} is based at an island; which sea is that island in?",
    ("ship", "home", "island", "harbour"): "What is the name of the harbour on the home island of the ship {s}?",
    ("ship", "home", "island", "charted"): "In which year was the home island of the ship {s} first charted?",
    ("lighthouse", "island", "island", "sea"): "Which sea surrounds the island where the {s} stands?",
    ("lighthouse", "island", "island", "harbour"): "What is the main harbour of the island that the {s} stands on?",
    ("observatory", "island", "island", "sea"): "Which sea lies around the island that hosts the {s}?",
    ("observatory", "island", "island", "charted"): "The island where the {s} was built was first charted in which year?",
    ("comet", "observatory", "observatory", "island"): "On which island is the observatory that discovered {s}?",
    ("comet", "observatory", "observatory", "founded"): "When was the observatory that first sighted {s} established?",
    ("comet", "observatory", "observatory", "telescope"): "What telescope does the observatory that discovered {s} house?",
}

ALIAS_AFFIXES = (" Sea", " Drift", " Observatory", " years", " metres")


def aliases(value: str) -> list[str]:
    """Accepted answers: the value, plus its bare form ("Quoxa Sea" -> "Quoxa", "Port Jix" -> "Jix", "71 years" -> "71")."""
    for suffix in ALIAS_AFFIXES:
        if value.endswith(suffix):
            return [value, value.removesuffix(suffix)]
    return [value, value.removeprefix("Port ")] if value.startswith("Port ") else [value]


def make_questions(entities: list[dict]) -> list[dict]:
    """Every 1-hop and 2-hop question the world supports, with the documents each hop needs."""
    by_name = {e["name"]: e for e in entities}
    questions = []
    for e in entities:
        for (kind, attr), template in RELATIONS.items():
            if kind == e["kind"]:
                answers = aliases(e["attrs"][attr])
                assert answers[0] in e["text"], (e["name"], attr)
                questions.append({"question": template.format(s=e["name"]), "answers": answers, "hops": 1,
                                  "entities": [e["name"]], "relations": [(kind, attr)]})
        for (kind, link, bridge_kind, attr), template in TWO_HOP.items():
            if kind != e["kind"]:
                continue
            bridge = by_name[e["attrs"][link]]
            answers = aliases(bridge["attrs"][attr])
            assert answers[0] in bridge["text"], (bridge["name"], attr)
            if any(a.lower() in e["text"].lower() for a in answers):
                continue  # answerable from the subject's own document: not a real two-hop question
            questions.append({"question": template.format(s=e["name"]), "answers": answers, "hops": 2,
                              "entities": [e["name"], bridge["name"]],
                              "relations": [(kind, link), (bridge_kind, attr)]})
    return questions


def sample_questions(pool: list[dict], rng: random.Random) -> list[dict]:
    """N_QUESTIONS questions, TWO_HOP_SHARE two-hop, shuffled; relations taken in turn and no subject asked twice."""
    n_two = round(N_QUESTIONS * TWO_HOP_SHARE)
    chosen, asked = [], set()
    for hops, quota in ((2, n_two), (1, N_QUESTIONS - n_two)):
        by_relation: dict[tuple, list[dict]] = {}
        for q in pool:
            if q["hops"] == hops:
                by_relation.setdefault(tuple(q["relations"]), []).append(q)
        for candidates in by_relation.values():
            rng.shuffle(candidates)
        picked = 0
        while picked < quota:
            progress = False
            for candidates in by_relation.values():
                fresh = next((q for q in candidates if q["entities"][0] not in asked), None)
                if fresh is None or picked == quota:
                    continue
                candidates.remove(fresh)
                asked.add(fresh["entities"][0])
                chosen.append(fresh)
                picked += 1
                progress = True
            if not progress:
                raise ValueError(f"only {picked} {hops}-hop questions with distinct subjects for {quota}; raise COUNTS")
    rng.shuffle(chosen)
    return chosen


# ---------------------------------------------------------------------------------------------- output
README = """# Held-out closed-world QA set

A test set for generalisation off the bundled task (data/qa/): {n_docs} short documents about invented seas,
islands, ships, lighthouses, observatories and comets, and {n_questions} questions whose answers are only in
those documents. Nothing is shared with data/qa/: not the domain, not a name (the name syllables differ), not
the document style, not the question phrasing. There is no train split and no demos file: evaluate a model
trained on data/qa/ (or the untrained one) with the bundled demos.

Generated by `scripts/make_qa_heldout.py` (stdlib only, fixed seed; running it again gives byte-identical files):

    python scripts/make_qa_heldout.py            # writes data/qa_heldout/
    icrl-lite eval --checkpoint base --dataset data/qa_heldout/test.jsonl --corpus data/qa_heldout/corpus.jsonl

| file           | records | fields |
|----------------|---------|--------|
| `corpus.jsonl` | {n_docs} ({kinds}; {n_distractors} distractors) | `id`, `title`, `text` |
| `test.jsonl`   | {n_questions} ({n_one} single-hop, {n_two} two-hop) | `id`, `question`, `answers`, `hops`, `entities`, `relation` |

- Documents come as prose or as register entries, chosen at random per entity:
  "{prose}"
  "{register}"
- Distractors (harbour books, observing bulletins, sea surveys, keepers' notes) name several entities and
  state true facts about them, but are no entity's own document: a search for a ship also finds the harbour
  books of the islands it visited, and those name other islands than its home.
- Fields are as in data/qa/test.jsonl: `entities` lists the documents a question needs (subject first, then the
  bridge entity of a two-hop question; each is the `title` of its document), `relation` the attributes followed,
  e.g. `comet.observatory>observatory.island`. No subject is asked about twice.
- A two-hop question is kept only if its answer is absent from the subject's own document.
- `answers` holds the value and its bare form where natural (`{sea_alias}`, `["71 years", "71"]`);
  every alias appears verbatim in some document.
"""


def question_record(q: dict, qid: str) -> dict:
    relation = ">".join(f"{kind}.{attr}" for kind, attr in q["relations"])
    return {"id": qid, "question": q["question"], "answers": q["answers"], "hops": q["hops"],
            "entities": q["entities"], "relation": relation}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def generate(out_dir: Path = OUT_DIR, seed: int = SEED) -> dict[str, int]:
    """Write corpus.jsonl, test.jsonl and README.md to `out_dir`; return the number of records in each JSONL file."""
    rng = random.Random(seed)
    entities = make_world(rng)
    distractors = make_distractors(entities, rng)
    questions = sample_questions(make_questions(entities), rng)

    docs = [{"title": e["name"], "text": e["text"]} for e in entities] + distractors
    rng.shuffle(docs)
    corpus = [{"id": f"doc-{i:04d}", **d} for i, d in enumerate(docs, 1)]
    test = [question_record(q, f"heldout-{i:04d}") for i, q in enumerate(questions, 1)]

    kinds = {}
    for e in entities:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    plural = {"sea": "seas", "island": "islands", "ship": "ships", "lighthouse": "lighthouses",
              "observatory": "observatories", "comet": "comets"}
    n_two = sum(q["hops"] == 2 for q in questions)
    ship_texts = [e["text"] for e in entities if e["kind"] == "ship"]
    prose = next(t for t in ship_texts if t.startswith("The "))
    register = next(t for t in ship_texts if t.startswith("Ship register"))
    sea = next(e["name"] for e in entities if e["kind"] == "sea")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "corpus.jsonl", corpus)
    write_jsonl(out_dir / "test.jsonl", test)
    (out_dir / "README.md").write_text(README.format(
        n_docs=len(corpus), n_questions=len(test), n_one=len(test) - n_two, n_two=n_two,
        n_distractors=len(distractors), prose=prose, register=register, sea_alias=json.dumps(aliases(sea)),
        kinds=", ".join(f"{n} {plural[k]}" for k, n in kinds.items())),
        encoding="utf-8")
    return {"corpus": len(corpus), "test": len(test)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where to write the files")
    args = parser.parse_args(argv)
    sizes = generate(args.out_dir)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{name} {n}" for name, n in sizes.items()))


if __name__ == "__main__":
    main()
