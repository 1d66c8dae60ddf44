"""Generate the bundled math task in data/math/: short word problems that need exact multi-step arithmetic.

Each problem comes from one of TEMPLATES: a formula, number ranges and three wordings. The numbers are large
enough (3-4 digit products, sums of long sequences, fractions with unlike denominators, 10-20 digit powers)
that a 135M model cannot do the arithmetic in its head, while a few lines of Python can. A problem is unique by
(template, numbers) across all files, so train, dev, test and the demos share no problem; the splits do share
templates. Demonstrations are full trajectories in the math-track tag format, and the text in their <output>
blocks is what Python prints when their code is executed here (blocks of one demo share a namespace, like
notebook cells). Stdlib only and seeded: running it twice writes byte-identical files.

    python scripts/make_math_task.py [--out-dir data/math]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

SEED = 2718
OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "math"
SIZES = {"test": 200, "dev": 100, "train": 1000}  # drawn in this order, after the demos: test never depends on train
LOWEST_TERMS = " Give the answer as a fraction in lowest terms."


class Problem(NamedTuple):
    """One drawn problem. `blocks` is the demo solution: (thought, Python code) per tool call; a thought may
    contain "{previous}", replaced by the output of the block before it."""

    template: str
    numbers: tuple
    question: str
    answer: int | Fraction
    steps: int
    blocks: list[tuple[str, str]]
    conclusion: str


def fraction(rng: random.Random, low: int, high: int, exclude: tuple[int, ...] = ()) -> Fraction:
    """A proper fraction in lowest terms whose denominator is in [low, high] and not in `exclude`."""
    while True:
        den = rng.randint(low, high)
        num = rng.randint(1, den - 1)
        if den not in exclude and math.gcd(num, den) == 1:
            return Fraction(num, den)


def as_text(x: Fraction) -> str:
    """A fraction as the question writes it, "3/8"."""
    return f"{x.numerator}/{x.denominator}"


def as_code(x: Fraction) -> str:
    """A fraction as Python code writes it, "Fraction(3, 8)"."""
    return f"Fraction({x.numerator}, {x.denominator})"


# ---------------------------------------------------------------------------------------------- templates
# Each template draws its numbers and returns the wordings (one is picked), the answer and the demo solution.
# In every wording the numbers appear in the same order (tests recompute answers from the question text).
def product_difference(rng: random.Random) -> dict:
    a, b, c = rng.randint(120, 999), rng.randint(1200, 9999), rng.randint(1000, 9999)
    return dict(numbers=(a, b, c), answer=a * b - c, steps=2, wordings=[
        f"A warehouse receives {a} crates, each holding {b} bolts. {c} bolts turn out to be damaged and are "
        "thrown away. How many bolts are left?",
        f"A printer runs for {a} hours and prints {b} pages every hour, but {c} of the pages are misprinted and "
        "recycled. How many good pages does it print?",
        f"A farm fills {a} sacks with {b} grams of seed each, then takes {c} grams out for testing. How many "
        "grams of seed are left in the sacks?",
    ], blocks=[(f"The total is {a} times {b}, and then {c} is taken away. I will compute it exactly in Python.",
                f"total = {a} * {b}\nleft = total - {c}\nprint(left)")],
        conclusion="The program printed {answer}, so {answer} is what is left.")


def sum_of_products(rng: random.Random) -> dict:
    a, b, c, d = (rng.randint(100, 999) for _ in range(4))
    return dict(numbers=(a, b, c, d), answer=a * b + c * d, steps=3, wordings=[
        f"A shop sells {a} lamps at {b} dollars each and {c} chairs at {d} dollars each. How many dollars does "
        "it take in altogether?",
        f"A school orders {a} textbooks at {b} cents each and {c} notebooks at {d} cents each. What is the "
        "total cost in cents?",
        f"A bakery bakes {a} trays of rolls with {b} rolls on each tray and {c} trays of buns with {d} buns on "
        "each tray. How many rolls and buns does it bake in total?",
    ], blocks=[(f"First I compute the first product, {a} times {b}.", f"first = {a} * {b}\nprint(first)"),
               (f"The first product is {{previous}}. Now I add {c} times {d} to it.",
                f"total = first + {c} * {d}\nprint(total)")],
        conclusion="The total is {answer}.")


def division_remainder(rng: random.Random) -> dict:
    while True:
        n, k = rng.randint(10000, 99999), rng.randint(13, 97)
        if n % k:
            break
    return dict(numbers=(n, k), answer=n % k, steps=1, wordings=[
        f"A factory makes {n} screws and packs them into boxes of {k}. After filling as many full boxes as "
        "possible, how many screws are left over?",
        f"A library has {n} books to put on shelves that hold {k} books each. Every shelf is filled completely "
        "before the next one is started. How many books are on the last shelf, which is not full?",
        f"What is the remainder when {n} is divided by {k}?",
    ], blocks=[(f"What is left over is the remainder of {n} divided by {k}.",
                f"full, left = divmod({n}, {k})\nprint(left)")],
        conclusion="The remainder is {answer}.")


def percentage(rng: random.Random) -> dict:
    while True:
        p = rng.randint(3, 97)
        if p % 10:
            break
    unit = 100 // math.gcd(p, 100)  # base must be a multiple of this for p% of it to be whole
    base = unit * rng.randint(-(-1000 // unit), 99999 // unit)
    return dict(numbers=(base, p), answer=base * (100 + p) // 100, steps=2, wordings=[
        f"A town has {base} residents. Its population grows by {p}%. How many residents does it have now?",
        f"A company's yearly revenue of {base} dollars rises by {p}%. What is the new revenue in dollars?",
        f"A machine costs {base} cents, and the shop raises its price by {p}%. What is the new price in cents?",
    ], blocks=[(f"The increase is {p}% of {base}, and I add it to {base}.",
                f"base = {base}\nincrease = base * {p} // 100\nprint(base + increase)")],
        conclusion="The new amount is {answer}.")


def fraction_sum(rng: random.Random) -> dict:
    while True:
        x = fraction(rng, 3, 16)
        y = fraction(rng, 3, 16, (x.denominator,))
        z = fraction(rng, 3, 16, (x.denominator, y.denominator))
        if (x + y + z).denominator >= 10:
            break
    tx, ty, tz = as_text(x), as_text(y), as_text(z)
    return dict(numbers=(x, y, z), answer=x + y + z, steps=2, wordings=[
        f"A recipe uses {tx} of a cup of milk, {ty} of a cup of water and {tz} of a cup of oil. How many "
        "cups of liquid does it use in total?" + LOWEST_TERMS,
        f"Three pieces of ribbon are {tx} metre, {ty} metre and {tz} metre long. What is their total "
        "length in metres?" + LOWEST_TERMS,
        f"Mia reads for {tx} of an hour on Monday, {ty} of an hour on Tuesday and {tz} of an hour on "
        "Wednesday. For how many hours does she read in total?" + LOWEST_TERMS,
    ], blocks=[("I add the three fractions exactly with Python's Fraction, which keeps them in lowest terms.",
                f"from fractions import Fraction\ntotal = {as_code(x)} + {as_code(y)} + {as_code(z)}\nprint(total)")],
        conclusion="The sum in lowest terms is {answer}.")


def fraction_of_remainder(rng: random.Random) -> dict:
    x, y = fraction(rng, 3, 12), fraction(rng, 3, 12)
    unit = x.denominator * y.denominator  # a multiple of both denominators keeps both steps whole
    total = unit * rng.randint(-(-1000 // unit), 50000 // unit)
    left = total * (1 - x) * (1 - y)
    tx, ty = as_text(x), as_text(y)
    return dict(numbers=(total, x, y), answer=int(left), steps=3, wordings=[
        f"A tank holds {total} litres of water. On Monday {tx} of the water is used, and on Tuesday {ty} of "
        "what is left is used. How many litres remain in the tank?",
        f"A school has {total} dollars for the year. It spends {tx} of the money on books and then {ty} of "
        "the remaining money on trips. How many dollars are left?",
        f"A farmer harvests {total} kilograms of apples. He sells {tx} of them at the market and gives {ty} "
        "of the rest to a juice factory. How many kilograms of apples does he keep?",
    ], blocks=[(f"First I find what is left after {tx} of {total} is taken.",
                f"from fractions import Fraction\nleft = {total} - {total} * {as_code(x)}\nprint(left)"),
               (f"{{previous}} is left after the first step. Now {ty} of that is taken.",
                f"left = left - left * {as_code(y)}\nprint(left)")],
        conclusion="{answer} is left at the end.")


def modular(rng: random.Random) -> dict:
    a, b, m = rng.randint(1000, 9999), rng.randint(1000, 9999), rng.randint(13, 97)
    return dict(numbers=(a, b, m), answer=a * b % m, steps=2, wordings=[
        f"{a} boxes each hold {b} marbles. The marbles are shared equally among {m} children, each child getting "
        "as many as possible. How many marbles are left over?",
        f"Starting at station zero, a robot makes {a} moves of {b} stations each around a circular track whose "
        f"{m} stations are numbered from zero. At which station does it stop?",
        f"What is the remainder when {a} × {b} is divided by {m}?",
    ], blocks=[(f"I need the remainder of {a} times {b} when divided by {m}.", f"print({a} * {b} % {m})")],
        conclusion="The remainder is {answer}.")


def arithmetic_series(rng: random.Random) -> dict:
    a, d, n = rng.randint(100, 2000), rng.randint(5, 150), rng.randint(12, 60)
    return dict(numbers=(a, d, n), answer=n * a + d * n * (n - 1) // 2, steps=3, wordings=[
        f"A runner runs {a} metres on the first day of training, and each day after that she runs {d} metres "
        f"more than the day before. How many metres does she run in total over {n} days?",
        f"A factory makes {a} chairs in its first week, and every week after that it makes {d} more chairs than "
        f"the week before. How many chairs does it make in its first {n} weeks?",
        f"Leo saves {a} cents in the first month, and each month he saves {d} cents more than in the month "
        f"before. How many cents has he saved after {n} months?",
    ], blocks=[(f"The amounts start at {a} and grow by {d} each time, for {n} terms. I list them all.",
                f"amounts = [{a} + {d} * i for i in range({n})]\nprint(amounts[-1])"),
               (f"The last amount is {{previous}}. Now I add up all {n} amounts.", "print(sum(amounts))")],
        conclusion="The total is {answer}.")


def unit_conversion(rng: random.Random) -> dict:
    days, hours = rng.randint(100, 999), rng.randint(2, 23)
    return dict(numbers=(days, hours), answer=days * 1440 + hours * 60, steps=3, wordings=[
        f"How many minutes are there in {days} days and {hours} hours?",
        f"A ship's voyage lasts {days} days and {hours} hours. How many minutes is that?",
        f"A machine runs without stopping for {days} days and {hours} hours. For how many minutes does it run?",
    ], blocks=[("A day has 24 hours and an hour has 60 minutes.",
                f"minutes = {days} * 24 * 60 + {hours} * 60\nprint(minutes)")],
        conclusion="That is {answer} minutes.")


def multiples_sum(rng: random.Random) -> dict:
    k, low, high = rng.randint(7, 47), rng.randint(100, 999), rng.randint(2000, 9999)
    return dict(numbers=(k, low, high), answer=sum(x for x in range(low, high + 1) if x % k == 0), steps=3,
                wordings=[
        f"What is the sum of all multiples of {k} from {low} to {high}, inclusive?",
        f"A clerk stamps every ticket whose number is a multiple of {k}, among tickets numbered {low} to {high}. "
        "What is the sum of the numbers on the stamped tickets?",
        f"Add up every whole number that is divisible by {k} and lies between {low} and {high}, both included. "
        "What is the total?",
    ], blocks=[(f"I list the multiples of {k} between {low} and {high}.",
                f"multiples = [x for x in range({low}, {high} + 1) if x % {k} == 0]\nprint(len(multiples))"),
               ("There are {previous} of them. Now I add them up.", "print(sum(multiples))")],
        conclusion="The sum is {answer}.")


def exponential_growth(rng: random.Random) -> dict:
    factor = rng.choice((2, 3))
    start = rng.randint(11, 99)
    periods = rng.randint(14, 40) if factor == 2 else rng.randint(9, 25)
    return dict(numbers=(start, factor, periods), answer=start * factor**periods, steps=2, wordings=[
        f"A culture starts with {start} cells. Every hour each cell splits into {factor} cells. How many cells "
        f"are there after {periods} hours?",
        f"A rumour is known by {start} people. Each day the number of people who know it becomes {factor} times "
        f"as large. How many people know it after {periods} days?",
        f"A token is worth {start} cents. Its value is multiplied by {factor} every year. What is it worth in "
        f"cents after {periods} years?",
    ], blocks=[(f"The amount is multiplied by {factor} each time, {periods} times, so it is {start} times "
                f"{factor} to the power {periods}.", f"print({start} * {factor} ** {periods})")],
        conclusion="The amount is {answer}.")


TEMPLATES: dict[str, Callable[[random.Random], dict]] = {
    t.__name__: t for t in (product_difference, sum_of_products, division_remainder, percentage, fraction_sum,
                            fraction_of_remainder, modular, arithmetic_series, unit_conversion, multiples_sum,
                            exponential_growth)
}
# One demo per template, plus a second of a template whose demo uses two python blocks.
DEMO_TEMPLATES = [*TEMPLATES, "fraction_of_remainder"]


# ---------------------------------------------------------------------------------------------- problems
def answer_text(answer: int | Fraction) -> str:
    """The canonical answer string: "5963" or "17/24" (never a whole number written as a fraction)."""
    return str(answer)


def draw(template: str, rng: random.Random, seen: set[tuple]) -> Problem:
    """A problem of `template` whose (template, numbers) is not in `seen` (which it joins)."""
    while True:
        d = TEMPLATES[template](rng)
        key = (template, d["numbers"])
        if key not in seen:
            seen.add(key)
            return Problem(template, d["numbers"], rng.choice(d["wordings"]), d["answer"], d["steps"],
                           d["blocks"], d["conclusion"])


def draw_split(size: int, rng: random.Random, seen: set[tuple]) -> list[Problem]:
    """`size` problems, the templates taken in turn (so each gets an equal share), in a shuffled order."""
    names = list(TEMPLATES)
    problems = [draw(names[i % len(names)], rng, seen) for i in range(size)]
    rng.shuffle(problems)
    return problems


# ---------------------------------------------------------------------------------------------- demos
def run_blocks(codes: list[str]) -> list[str]:
    """Execute code blocks in one shared namespace, like notebook cells; return each block's stdout."""
    namespace: dict = {"__name__": "__demo__"}
    outputs = []
    for code in codes:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(code, namespace)
        outputs.append(buffer.getvalue().rstrip("\n"))
    return outputs


def solution(problem: Problem) -> str:
    """The full trajectory: think, python, output (really executed) per block, then think and answer."""
    outputs = run_blocks([code for _, code in problem.blocks])
    answer = answer_text(problem.answer)
    if outputs[-1] != answer:
        raise AssertionError(f"demo code of {problem.template} prints {outputs[-1]!r}, expected {answer!r}")
    text, previous = "", ""
    for (thought, code), output in zip(problem.blocks, outputs):
        thought = thought.replace("{previous}", previous)
        text += f"<think> {thought} </think>\n<python>\n{code}\n</python>\n\n<output>{output}</output>\n\n"
        previous = output
    return text + f"<think> {problem.conclusion.format(answer=answer)} </think>\n<answer> {answer} </answer>"


# ---------------------------------------------------------------------------------------------- output
def record(problem: Problem, qid: str) -> dict:
    return {"id": qid, "question": problem.question, "answers": [answer_text(problem.answer)],
            "template": problem.template, "steps": problem.steps}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def readme(files: dict[str, list[dict]]) -> str:
    """data/math/README.md, with the counts of the files just written."""
    sizes = {name: len(records) for name, records in files.items()}
    two_block = sum(d["solution"].count("<python>") == 2 for d in files["demos"])
    counts = {name: Counter(r["template"] for r in records) for name, records in files.items()}
    examples = {}
    for r in files["train"]:
        examples.setdefault(r["template"], r)
    rows = "\n".join(
        f"| `{name}` | {examples[name]['steps']} | {counts['train'][name]} / {counts['dev'][name]} / "
        f"{counts['test'][name]} | {examples[name]['question']} | `{examples[name]['answers'][0]}` |"
        for name in TEMPLATES)
    return f"""# Bundled math task (Python tool)

Short word problems whose answers need exact multi-step arithmetic: products of 3-4 digit numbers, sums of
long sequences, fractions with unlike denominators, remainders, 10-20 digit powers. A 135M model cannot do
them in its head; with the Python tool (`<python>code</python>`, answered by `<output>...</output>`) each is a
line or two of code.

Generated by `scripts/make_math_task.py` (stdlib only, fixed seed; running it again gives byte-identical
files, this README included):

    python scripts/make_math_task.py            # writes data/math/
    python scripts/make_math_task.py --out-dir /tmp/math

| file          | records | fields |
|---------------|---------|--------|
| `train.jsonl` | {sizes['train']} | `id`, `question`, `answers`, `template`, `steps` |
| `dev.jsonl`   | {sizes['dev']} | same |
| `test.jsonl`  | {sizes['test']} | same |
| `demos.jsonl` | {sizes['demos']} worked trajectories ({two_block} with two python blocks) | same + `solution` |

- `answers` holds one canonical string: an integer without separators (`"906541"`) or a fraction in lowest
  terms (`"73/72"`). Score with `icrl_lite.rewards.math_equal` (exact rational equality, so `5,963`,
  `5963.0`, `146/144` and `\\frac{{73}}{{72}}` are all accepted where they are equal).
- `steps` is the number of arithmetic operations the intended solution takes (1-3).
- Every problem is unique by (template, numbers) across all four files: train, dev, test and the demos share
  templates but no problem. The templates are taken in turn within each file, so each has an equal share.
- Numbers are written without thousands separators, so they can be copied into Python as they are.
- Demos follow the math-track format: `<think>`, `<python>` code, `<output>` with what Python prints, a final
  `<think>` and `<answer>`. The outputs were produced by executing the demo code in one namespace per demo
  (later blocks reuse variables of earlier ones, like notebook cells), with the trailing newline removed.

| template | steps | train / dev / test | example question (train) | answer |
|----------|-------|--------------------|--------------------------|--------|
{rows}
"""


def generate(out_dir: Path = OUT_DIR, seed: int = SEED) -> dict[str, int]:
    """Write train, dev, test and demos JSONL files and README.md to `out_dir`; return the record counts."""
    rng = random.Random(seed)
    seen: set[tuple] = set()
    demos = [draw(name, rng, seen) for name in DEMO_TEMPLATES]
    problems = {split: draw_split(size, rng, seen) for split, size in SIZES.items()}
    files = {split: [record(p, f"{split}-{i:04d}") for i, p in enumerate(problems[split], 1)]
             for split in ("train", "dev", "test")}
    files["demos"] = [{**record(p, f"demo-{i:02d}"), "solution": solution(p)} for i, p in enumerate(demos, 1)]
    questions = [r["question"] for records in files.values() for r in records]
    if len(set(questions)) != len(questions):
        raise AssertionError("two problems share a question text")

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, records in files.items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
    (out_dir / "README.md").write_text(readme(files), encoding="utf-8")
    return {name: len(records) for name, records in files.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where to write the JSONL files and README")
    args = parser.parse_args(argv)
    sizes = generate(args.out_dir)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{name} {n}" for name, n in sizes.items()))


if __name__ == "__main__":
    main()
