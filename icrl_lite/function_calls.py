"""Function calling in ToolRL's format (Qian et al.): parse a response and score it with ToolRL's reward.

A response is ``<think>...</think>``, then ``<tool_call>`` with one JSON object per line,
``{"name": ..., "parameters": {...}}``, then ``</tool_call>``, and/or ``<response>...</response>``.
Reward = format + correctness, in [-3, 4]:

- format in {0, 1}: 1 when the complete blocks are exactly the expected ones, in order, and nothing but
  whitespace lies outside them (``format_reward``; the expected blocks come from ``expected_blocks``).
- correctness in [-3, 3] (``correctness_reward``): 0 when the gold has no call; -3 when the predicted
  tool_call block is missing or unparseable; +3 when the predicted calls equal the gold as multisets
  (order-insensitive); otherwise ``6 * score / S_max - 3`` with
  ``score = J(gold names, predicted names) + sum over gold calls g of [J(params of g, params of m(g))
  + number of parameters of g whose value in m(g) is equal]``, ``S_max = 1 + sum over g of (1 + #params of g)``,
  J the multiset Jaccard |A & B| / |A | B| (1 when both are empty) and m(g) the best unused predicted call
  named like g (none: g adds 0).

Interpretations (where the paper and REFERENCE.md leave room):

- Parsing: complete blocks are read left to right, each closed by the first matching closing tag. An
  opening tag never closed ends parsing: it and everything after it are outside text (so format 0, and an
  unclosed tool_call is a parse error). Repeated blocks are all kept (format 0); their calls are
  concatenated. A tool_call block holds a whitespace-separated sequence of JSON values, each a call object
  or a list of call objects: JSON lines, one object spread over several lines, a JSON list, or several
  of these are all accepted; a blank block is the empty list. A call object has a string ``name`` and a
  dict under exactly one of ``parameters`` / ``arguments`` (the alias), no other key; anything else (a
  comma between objects, an ``arguments`` string, an extra ``id``) makes the whole call list None.
- Values are compared as parsed JSON: numbers by value (1 == 1.0), otherwise type and value
  ("5" != 5, true != 1), lists in order, objects key by key.
- "Best unused" is greedy in gold order: each gold call takes the highest-scoring unused prediction of the
  same name, ties going to the earliest; not an optimal assignment.
- Expected blocks: think+tool_call when the gold has calls, plus response when a gold response text is
  given; think+response when the gold has no call (the prompt asks the model to say so in <response>).
  The format reward checks blocks only; whether the JSON parses is correctness's business.
- Variants: ``coarse`` replaces the graded correctness by +3 on an exact match, else -3 (the paper's
  exact-match-only ablation); ``dynamic`` is our reading of the paper's widening schedule: correctness
  scaled by (1 + 2p) / 3 at training progress p in [0, 1], so its range grows from [-1, 1] to [-3, 3].
  Both keep correctness 0 when the gold has no call.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Call = dict[str, Any]  # {"name": str, "parameters": dict}

BLOCKS = ("think", "tool_call", "response")
FORMATS = (("think",), ("think", "tool_call"), ("think", "response"), ("think", "tool_call", "response"))
VARIANTS = ("fine", "coarse", "dynamic")
MAX_CORRECTNESS = 3.0

_OPEN = re.compile(r"<(think|tool_call|response)>")
_SPACE = re.compile(r"\s*")


@dataclass(frozen=True)
class Parsed:
    blocks: tuple[str, ...]  # complete blocks in order of appearance, repeats included
    calls: list[Call] | None  # calls of all tool_call blocks; None: no block, or one fails to parse
    response: str | None  # contents of the response blocks, stripped, joined by newlines; None: no block
    think: str | None  # likewise for the think blocks
    outside_text: str  # non-whitespace text outside the complete blocks, pieces stripped and joined by newlines
    unclosed: str | None = None  # the block whose opening tag was never closed (parsing stopped there)


def parse_response(text: str) -> Parsed:
    """Split a response into its think / tool_call / response blocks (see the module docstring)."""
    blocks: list[str] = []
    contents: dict[str, list[str]] = {name: [] for name in BLOCKS}
    outside: list[str] = []
    unclosed = None
    pos = 0
    while match := _OPEN.search(text, pos):
        outside.append(text[pos : match.start()])
        name = match.group(1)
        end = text.find(f"</{name}>", match.end())
        if end == -1:
            unclosed, pos = name, match.start()
            break
        blocks.append(name)
        contents[name].append(text[match.end() : end])
        pos = end + len(f"</{name}>")
    outside.append(text[pos:])

    calls: list[Call] | None = None
    if contents["tool_call"]:
        parts = [parse_calls(content) for content in contents["tool_call"]]
        calls = None if any(p is None for p in parts) else [call for p in parts for call in p]

    def joined(name: str) -> str | None:
        return "\n".join(c.strip() for c in contents[name]) if contents[name] else None

    return Parsed(tuple(blocks), calls, joined("response"), joined("think"),
                  "\n".join(s.strip() for s in outside if s.strip()), unclosed)


def parse_calls(content: str) -> list[Call] | None:
    """Calls of one tool_call block: a whitespace-separated sequence of call objects / lists of them; else None."""
    decoder = json.JSONDecoder()
    calls: list[Call] = []
    pos = _SPACE.match(content).end()
    while pos < len(content):
        try:
            value, pos = decoder.raw_decode(content, pos)
        except json.JSONDecodeError:
            return None
        for item in value if isinstance(value, list) else [value]:
            call = as_call(item)
            if call is None:
                return None
            calls.append(call)
        pos = _SPACE.match(content, pos).end()
    return calls


def as_call(item: Any) -> Call | None:
    """``{"name": str, "parameters" | "arguments": dict}`` as ``{"name", "parameters"}``; None if not of that shape."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    keys = set(item) - {"name"}
    if len(keys) != 1 or not keys <= {"parameters", "arguments"}:
        return None
    parameters = item[keys.pop()]
    return {"name": item["name"], "parameters": parameters} if isinstance(parameters, dict) else None


def _gold(gold_calls: Sequence[Call]) -> list[Call]:
    calls = [as_call(call) for call in gold_calls]
    if any(call is None for call in calls):
        raise ValueError(f"gold calls must be dicts {{'name': str, 'parameters': dict}}, got {list(gold_calls)!r}")
    return calls


def values_equal(a: Any, b: Any) -> bool:
    """Equality of parsed JSON values: numbers by value (1 == 1.0), everything else by type and value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def calls_equal(pred: Sequence[Call], gold: Sequence[Call]) -> bool:
    """Whether two call lists are equal as multisets (same names and equal parameter dicts, any order)."""
    unused = list(pred)
    for g in gold:
        i = next((i for i, p in enumerate(unused) if p["name"] == g["name"]
                  and values_equal(p["parameters"], g["parameters"])), None)
        if i is None:
            return False
        unused.pop(i)
    return not unused


def _jaccard(a: Counter, b: Counter) -> float:
    union = sum((a | b).values())
    return sum((a & b).values()) / union if union else 1.0


def _pair_score(gold: Call, pred: Call) -> float:
    g, p = gold["parameters"], pred["parameters"]
    return _jaccard(Counter(g.keys()), Counter(p.keys())) + sum(k in p and values_equal(g[k], p[k]) for k in g)


def match_score(pred: Sequence[Call], gold: Sequence[Call]) -> tuple[float, float, float]:
    """(name Jaccard, summed parameter score of the greedy best-unused matches, S_max)."""
    names = _jaccard(Counter(c["name"] for c in pred), Counter(c["name"] for c in gold))
    used: set[int] = set()
    params = 0.0
    for g in gold:
        best, best_i = -1.0, None
        for i, p in enumerate(pred):
            if i not in used and p["name"] == g["name"] and (s := _pair_score(g, p)) > best:
                best, best_i = s, i
        if best_i is not None:
            used.add(best_i)
            params += best
    return names, params, 1.0 + sum(1 + len(g["parameters"]) for g in gold)


def correctness_reward(pred_calls: Sequence[Call] | None, gold_calls: Sequence[Call]) -> float:
    """ToolRL correctness in [-3, 3] of predicted calls (None: block missing or unparseable) against the gold."""
    gold = _gold(gold_calls)
    if not gold:
        return 0.0
    if pred_calls is None:
        return -MAX_CORRECTNESS
    if calls_equal(pred_calls, gold):
        return MAX_CORRECTNESS
    names, params, s_max = match_score(pred_calls, gold)
    return 2 * MAX_CORRECTNESS * (names + params) / s_max - MAX_CORRECTNESS


def expected_blocks(gold_calls: Sequence[Call], gold_response: str | None = None) -> tuple[str, ...]:
    """The blocks a response to this gold must have: think, then tool_call if it has calls, then response
    if a non-blank gold response is given or it has no call."""
    if not gold_calls:
        return ("think", "response")
    has_response = bool(gold_response and gold_response.strip())
    return ("think", "tool_call", "response") if has_response else ("think", "tool_call")


def format_reward(parsed: Parsed, expected: tuple[str, ...]) -> float:
    """1.0 when the response's blocks are exactly ``expected`` in order with nothing outside them, else 0.0."""
    if tuple(expected) not in FORMATS:
        raise ValueError(f"expected blocks {expected!r}: use one of {FORMATS} (see expected_blocks)")
    return float(parsed.blocks == tuple(expected) and not parsed.outside_text)


def steps_format_reward(parsed: Parsed, gold_calls: Sequence[Call]) -> float:
    """Format of a multi-step episode (the policy's turns joined, results left out): 1.0 when it is
    (think, tool_call) turns, at least one when the gold has calls, none when it has none, then one final
    (think, response), with nothing outside the blocks; else 0.0."""
    blocks = parsed.blocks
    if len(blocks) < 2 or blocks[-2:] != ("think", "response") or parsed.outside_text:
        return 0.0
    turns = blocks[:-2]
    if len(turns) % 2 or any(turns[i:i + 2] != ("think", "tool_call") for i in range(0, len(turns), 2)):
        return 0.0
    return float(bool(turns) == bool(gold_calls))


def toolrl_reward(response_text: str, gold_calls: Sequence[Call], variant: str = "fine", progress: float = 0.0,
                  gold_response: str | None = None, multi_step: bool = False) -> tuple[float, dict[str, float]]:
    """ToolRL reward of one response (the policy's text only): format + correctness.

    ``variant``: ``fine`` (graded correctness, total in [-3, 4]), ``coarse`` (+3 on exact match, else -3) or
    ``dynamic`` (graded correctness scaled by (1 + 2 * progress) / 3, ``progress`` in [0, 1]).
    ``multi_step``: the text is a whole multi-step episode (several call turns, then a response): format is
    ``steps_format_reward``; correctness compares all its calls, every turn's, with the gold.
    Metrics: ``reward``, ``format``, ``correctness``, ``exact`` (the calls equal the gold; with no gold call:
    no call made), ``name_jaccard`` and ``param_score`` (the summed parameter score over its maximum
    sum(1 + #params); both 0 when no call is expected or the calls do not parse), ``calls_predicted``,
    ``calls_gold``, ``parse_error`` (a tool_call block was opened but its calls do not parse) and
    ``no_call_expected``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: use one of {', '.join(VARIANTS)}")
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress={progress} must be in [0, 1] (the fraction of training done)")
    gold = _gold(gold_calls)
    parsed = parse_response(response_text)
    pred = parsed.calls
    parse_error = pred is None and ("tool_call" in parsed.blocks or parsed.unclosed == "tool_call")
    names = params = 0.0
    if gold and pred is not None:
        names, params, s_max = match_score(pred, gold)
        params /= s_max - 1.0
    exact = calls_equal(pred, gold) if pred is not None else (not gold and not parse_error)

    fmt = steps_format_reward(parsed, gold) if multi_step else format_reward(parsed, expected_blocks(gold, gold_response))
    correctness = correctness_reward(pred, gold)
    if variant == "coarse" and gold:
        correctness = MAX_CORRECTNESS if exact else -MAX_CORRECTNESS
    elif variant == "dynamic":
        correctness *= (1.0 + 2.0 * progress) / MAX_CORRECTNESS
    reward = fmt + correctness
    return reward, {
        "reward": reward,
        "format": fmt,
        "correctness": correctness,
        "exact": float(exact),
        "name_jaccard": names,
        "param_score": params,
        "calls_predicted": float(len(pred) if pred is not None else 0),
        "calls_gold": float(len(gold)),
        "parse_error": float(parse_error),
        "no_call_expected": float(not gold),
    }
