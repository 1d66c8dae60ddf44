"""ICRL rewards: SQuAD exact match / F1, answer extraction and the tag-format score.

The reward follows ICRL (Ye et al.): ``r = alpha * EM + (1 - alpha) * format`` with alpha = 0.8 and the
format score ``1 - sum(penalties)`` clipped to [0, 1].

Departures from the released ICRL code:

- Only the policy's response is scored. The released code scores prompt + response, so the tags of the
  few-shot demonstrations in the prompt hide most format violations (a response with no ``<think>`` still
  "has" one). Callers pass the response text only.
- ``<information>...</information>`` blocks are removed before tags are counted and before the answer is
  extracted. They are written by the environment, not the policy, and the retrieved documents may contain
  tag-like text (``<answer>``, ``<think>``) that must not change the score. Blocks are matched
  non-greedily, so a document that itself contains the literal text ``</information>`` ends its block early;
  the search tool is expected to keep that string out of its observations.

Math track (``math_reward``): the same shape with a Python tool. ``<output>...</output>`` blocks (the
sandbox's observations) are removed like ``<information>`` blocks, ``no_search`` becomes ``no_tool`` (no
``<python>`` call at all) and exact match becomes ``math_equal``: exact rational equality when both sides
are plain numbers, math-verify (``pip install math-verify``) for anything else.
"""

from __future__ import annotations

import re
import string
import threading
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

ALPHA = 0.8
ANSWER_CREDITS = ("em", "f1")  # what the accuracy term of the QA reward pays for

# Penalty table of the ICRL paper: name -> amount subtracted from a format score of 1.
FORMAT_PENALTIES: dict[str, float] = {
    "no_answer": 0.5,  # no <answer> tag at all
    "unbalanced_answer": 0.2,  # count of <answer> != count of </answer>
    "no_think": 0.15,  # no <think> tag at all
    "unbalanced_think": 0.1,  # count of <think> != count of </think>
    "no_search": 0.1,  # no <search> tag at all
    "empty_answer": 0.2,  # a complete <answer></answer> block whose content is blank
}

# Math track: the same table with "no <python> call at all" in place of "no <search> at all".
MATH_FORMAT_PENALTIES: dict[str, float] = {
    "no_answer": 0.5,
    "unbalanced_answer": 0.2,
    "no_think": 0.15,
    "unbalanced_think": 0.1,
    "no_tool": 0.1,  # no <python> (or other tool_tag) tag at all
    "empty_answer": 0.2,
}

_INFORMATION = re.compile(r"<information>.*?</information>", re.DOTALL)
_OBSERVATIONS = re.compile(r"<(information|output)>.*?</\1>", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, remove punctuation, drop articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def answer_in_text(answers: Sequence[str], text: str) -> bool:
    """Whether a gold answer appears in ``text`` as whole words after SQuAD normalisation (e.g. a retrieved
    passage that holds the answer; an answer right without one was guessed or remembered)."""
    haystack = f" {normalize_answer(text)} "
    return any(f" {gold} " in haystack for gold in map(normalize_answer, answers) if gold)


def _check_golds(golds: Sequence[str]) -> None:
    if isinstance(golds, str):
        raise TypeError(f"golds must be a list of answers, got the string {golds!r}; wrap it: [{golds!r}]")


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    _check_golds(golds)
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gold) for gold in golds))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        # SQuAD v2 convention: two empty answers agree, an empty and a non-empty one do not.
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD token-level F1 between normalised prediction and gold, maximised over the gold answers."""
    _check_golds(golds)
    pred_tokens = normalize_answer(prediction).split()
    return max((_token_f1(pred_tokens, normalize_answer(g).split()) for g in golds), default=0.0)


def strip_information(response: str) -> str:
    """Remove the environment's ``<information>...</information>`` blocks from a response."""
    return _INFORMATION.sub(" ", response)


def strip_observations(response: str) -> str:
    """Remove the environment's ``<information>...</information>`` and ``<output>...</output>`` blocks."""
    return _OBSERVATIONS.sub(" ", response)


def extract_answer(response: str) -> str | None:
    """Content of the last complete ``<answer>...</answer>`` block, stripped; None if there is none.

    ``<information>`` and ``<output>`` blocks are removed first, so neither a retrieved document nor a
    program's output can supply the answer. "Last complete" pairs the last ``</answer>`` with the nearest
    ``<answer>`` before it, so ``"<answer> a <answer> b </answer>"`` gives ``"b"``.
    """
    text = strip_observations(response)
    end = text.rfind("</answer>")
    if end == -1:
        return None
    start = text.rfind("<answer>", 0, end)
    if start == -1:
        return None
    return text[start + len("<answer>") : end].strip()


def icrl_format(response: str, tool_penalty: float | None = None) -> tuple[float, dict[str, float]]:
    """Format score of a response: 1 - sum of violated penalties, clipped to [0, 1].

    ``tool_penalty`` replaces the table's ``no_search`` amount (None: the paper's 0.1).

    Tags are counted after removing ``<information>`` blocks (see the module docstring). Returns the
    score and a metrics dict with one 0/1 flag per penalty of ``FORMAT_PENALTIES`` plus ``format``.
    """
    text = strip_information(response)
    return _format_score(text, extract_answer(response), "no_search", "search",
                         with_tool_penalty(FORMAT_PENALTIES, "no_search", tool_penalty))


def with_tool_penalty(penalties: dict[str, float], flag: str, amount: float | None) -> dict[str, float]:
    """The penalty table with `flag` (no tool call at all) set to `amount`; the table itself when None."""
    if amount is None:
        return penalties
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"tool_penalty must be in [0, 1] (subtracted from a format score of 1), got {amount}")
    return {**penalties, flag: amount}


def _format_score(text: str, answer: str | None, tool_flag: str, tool_tag: str,
                  penalties: dict[str, float]) -> tuple[float, dict[str, float]]:
    """1 - sum of the violated ``penalties``, clipped to [0, 1], and one 0/1 flag per penalty plus ``format``.

    ``text`` is the response without observation blocks; ``tool_flag`` (``no_search`` / ``no_tool``) is
    raised when it has no ``<tool_tag>``.
    """
    flags = {
        "no_answer": text.count("<answer>") == 0,
        "unbalanced_answer": text.count("<answer>") != text.count("</answer>"),
        "no_think": text.count("<think>") == 0,
        "unbalanced_think": text.count("<think>") != text.count("</think>"),
        tool_flag: text.count(f"<{tool_tag}>") == 0,
        "empty_answer": answer is not None and answer == "",
    }
    penalty = sum(penalties[name] for name, violated in flags.items() if violated)
    score = min(1.0, max(0.0, 1.0 - penalty))
    metrics = {name: float(violated) for name, violated in flags.items()}
    metrics["format"] = score
    return score, metrics


def icrl_reward(response: str, answers: Sequence[str], alpha: float = ALPHA,
                tool_penalty: float | None = None, credit: str = "em") -> tuple[float, dict[str, float]]:
    """ICRL reward ``alpha * EM + (1 - alpha) * format`` of one response (``credit="f1"``: token F1 in place of
    EM, partial credit for a partly right answer; not the paper's).

    ``response`` must be the policy's response only (with the environment's ``<information>`` blocks
    inside it), never prompt + response: the released ICRL code scores prompt + response, which hides
    format violations behind the demonstrations' tags. EM and F1 compare the last complete ``<answer>``
    with the gold ``answers``; no answer scores 0.

    Metrics: ``reward``, ``em``, ``f1``, ``format``, ``format_valid`` (1.0 when format == 1.0),
    ``has_answer`` (1.0 when a complete answer block exists) and the 0/1 penalty flags of ``icrl_format``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (weight of exact match against format), got {alpha}")
    if credit not in ANSWER_CREDITS:
        raise ValueError(f"credit={credit!r}: use em (exact match, the paper's) or f1 (token F1, partial credit)")
    _check_golds(answers)
    answer = extract_answer(response)
    em = exact_match(answer, answers) if answer is not None else 0.0
    f1 = f1_score(answer, answers) if answer is not None else 0.0
    accuracy = {"em": em, "f1": f1} if credit == "em" else {"f1": f1, "em": em}  # the first one is rewarded
    return _combine(alpha, accuracy, icrl_format(response, tool_penalty), answer)


def _combine(alpha: float, accuracy: dict[str, float], fmt: tuple[float, dict[str, float]],
             answer: str | None) -> tuple[float, dict[str, float]]:
    """``alpha * accuracy + (1 - alpha) * format`` (accuracy: the dict's first value) and the metrics dict."""
    score, flags = fmt
    reward = alpha * next(iter(accuracy.values())) + (1.0 - alpha) * score
    metrics = {"reward": reward, **accuracy, "format": score, "format_valid": float(score == 1.0),
               "has_answer": float(answer is not None)}
    metrics.update({k: v for k, v in flags.items() if k != "format"})
    return reward, metrics


# ---------------------------------------------------------------------------------------------- math track
MATH_VERIFY_TIMEOUT_S = 5  # math-verify's own limit per parse / comparison, applied in the main thread only
MAX_MATH_ANSWER_CHARS = 200  # longer predictions are judged wrong without parsing them

# A plain number: an integer (optionally in 3-digit comma groups) or decimal, "a/b", or "\frac{a}{b}".
_DECIMAL = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_SLASH_FRACTION = re.compile(r"([+-]?\d+)\s*/\s*(\d+)")
_LATEX_FRACTION = re.compile(r"([+-]?)\\[dt]?frac\{\s*([+-]?\d+)\s*\}\{\s*(\d+)\s*\}")
_BOXED = re.compile(r"\\boxed\{(.*)\}", re.DOTALL)
# Predictions sympy may spend minutes evaluating: a power inside an exponent (9^{9^9}, 9^9^9, 9**9**9),
# an exponent of 6+ digits, a factorial of a 5+ digit number.
_COSTLY = re.compile(r"\^\s*\{[^{}]*\^|\^\s*[\w.]+\s*\^|\*\*.*\*\*|(?:\^|\*\*)\s*[{(]?\s*[+-]?\d{6,}|\d{5,}\s*!")


def _plain_number(text: str) -> Fraction | None:
    """The exact value of a plain number ("5963", "5,963", "-2.50", "17/24", "\\frac{17}{24}"), else None.

    Surrounding ``$``, a whole-answer ``\\boxed{}`` and a trailing full stop are ignored.
    """
    text = text.strip().replace("\u2212", "-").replace("{,}", ",").strip("$").strip()
    boxed = _BOXED.fullmatch(text)
    if boxed:
        text = boxed.group(1).strip()
    text = text.removesuffix(".").strip()
    if _DECIMAL.fullmatch(text):
        return Fraction(text.replace(",", ""))
    if slash := _SLASH_FRACTION.fullmatch(text):
        numerator, denominator = int(slash.group(1)), int(slash.group(2))
        return Fraction(numerator, denominator) if denominator else None
    if latex := _LATEX_FRACTION.fullmatch(text):
        sign, numerator, denominator = latex.group(1), int(latex.group(2)), int(latex.group(3))
        if not denominator:
            return None
        return Fraction(numerator, denominator) * (-1 if sign == "-" else 1)
    return None


def _math_verify():
    try:
        from math_verify import parse, verify
    except ImportError:
        raise ImportError("math answers are checked with math-verify: pip install math-verify  "
                          "(or pip install 'icrl-lite[math]')") from None
    return parse, verify


def _math_verify_equal(prediction: str, gold: str) -> bool:
    """math-verify's judgement, with both sides read as LaTeX (wrapped in ``$...$`` unless already delimited).

    math-verify's timeouts use ``signal.alarm``, which only works in the main thread; elsewhere they are
    switched off and ``_COSTLY`` / ``MAX_MATH_ANSWER_CHARS`` keep pathological predictions away from sympy.
    """
    if len(prediction) > MAX_MATH_ANSWER_CHARS or _COSTLY.search(prediction):
        return False
    parse, verify = _math_verify()
    timeout = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None

    def latex(text: str) -> str:
        return text if "$" in text or "\\boxed" in text else f"${text}$"

    gold_parsed = parse(latex(gold), parsing_timeout=timeout)
    pred_parsed = parse(latex(prediction), parsing_timeout=timeout)
    return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def math_equal(prediction: str | None, golds: Sequence[str]) -> bool:
    """Whether a predicted answer equals any gold answer mathematically.

    When both are plain numbers (integers, with or without thousands commas, decimals, ``a/b``,
    ``\\frac{a}{b}``) they are compared as exact rationals: ``17/24 == \\frac{17}{24} == 34/48``,
    ``5,963 == 5963 == 5963.0``, but ``0.7083 != 17/24`` (a decimal equals a fraction only when it is exactly
    equal). Anything else ("x = 5963", ``\\sqrt{2}/2``, sets) goes to math-verify, ``verify(parse(gold),
    parse(prediction))``, which also accepts numbers that agree to its float rounding (6 digits). Commas that
    are not thousands groups are left to math-verify ("1,2" reads as the set {1, 2}). Thread-safe: callable
    from worker threads (see ``_math_verify_equal``). Needs math-verify: ``pip install math-verify``.
    """
    _check_golds(golds)
    if prediction is None or not prediction.strip():
        return False
    pred_number = _plain_number(prediction)
    for gold in golds:
        gold_number = _plain_number(gold)
        if gold_number is not None and pred_number is not None:
            if gold_number == pred_number:
                return True
        elif _math_verify_equal(prediction, gold):
            return True
    return False


def math_format(response: str, tool_tag: str = "python", tool_penalty: float | None = None) -> tuple[float, dict[str, float]]:
    """Format score of a math-track response: ``icrl_format`` with ``no_search`` replaced by ``no_tool``.

    ``no_tool`` (0.1) is raised when the response has no ``<tool_tag>`` at all. ``<output>`` and
    ``<information>`` blocks are removed before tags are counted. Penalties: ``MATH_FORMAT_PENALTIES``.
    """
    text = strip_observations(response)
    return _format_score(text, extract_answer(response), "no_tool", tool_tag,
                         with_tool_penalty(MATH_FORMAT_PENALTIES, "no_tool", tool_penalty))


def math_reward(response: str, answers: Sequence[str], alpha: float = ALPHA,
                tool_penalty: float | None = None) -> tuple[float, dict[str, float]]:
    """Math-track reward ``alpha * correct + (1 - alpha) * format`` of one response (the policy's only).

    ``correct`` is ``math_equal`` between the last complete ``<answer>`` (outside ``<output>`` blocks) and the
    gold ``answers``; no answer scores 0. Metrics: ``reward``, ``correct``, ``em`` (= correct, so both tracks
    log the same key), ``format``, ``format_valid``, ``has_answer`` and the 0/1 flags of ``math_format``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (weight of correctness against format), got {alpha}")
    _check_golds(answers)
    answer = extract_answer(response)
    correct = float(answer is not None and math_equal(answer, answers))
    return _combine(alpha, {"correct": correct, "em": correct}, math_format(response, tool_penalty=tool_penalty), answer)
