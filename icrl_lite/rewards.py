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
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

ALPHA = 0.8

# Penalty table of the ICRL paper: name -> amount subtracted from a format score of 1.
FORMAT_PENALTIES: dict[str, float] = {
    "no_answer": 0.5,  # no <answer> tag at all
    "unbalanced_answer": 0.2,  # count of <answer> != count of </answer>
    "no_think": 0.15,  # no <think> tag at all
    "unbalanced_think": 0.1,  # count of <think> != count of </think>
    "no_search": 0.1,  # no <search> tag at all
    "empty_answer": 0.2,  # a complete <answer></answer> block whose content is blank
}

_INFORMATION = re.compile(r"<information>.*?</information>", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, remove punctuation, drop articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


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


def extract_answer(response: str) -> str | None:
    """Content of the last complete ``<answer>...</answer>`` block, stripped; None if there is none.

    ``<information>`` blocks are removed first, so a retrieved document cannot supply the answer.
    "Last complete" pairs the last ``</answer>`` with the nearest ``<answer>`` before it, so
    ``"<answer> a <answer> b </answer>"`` gives ``"b"``.
    """
    text = strip_information(response)
    end = text.rfind("</answer>")
    if end == -1:
        return None
    start = text.rfind("<answer>", 0, end)
    if start == -1:
        return None
    return text[start + len("<answer>") : end].strip()


def icrl_format(response: str) -> tuple[float, dict[str, float]]:
    """Format score of a response: 1 - sum of violated penalties, clipped to [0, 1].

    Tags are counted after removing ``<information>`` blocks (see the module docstring). Returns the
    score and a metrics dict with one 0/1 flag per penalty of ``FORMAT_PENALTIES`` plus ``format``.
    """
    text = strip_information(response)
    answer = extract_answer(response)
    flags = {
        "no_answer": text.count("<answer>") == 0,
        "unbalanced_answer": text.count("<answer>") != text.count("</answer>"),
        "no_think": text.count("<think>") == 0,
        "unbalanced_think": text.count("<think>") != text.count("</think>"),
        "no_search": text.count("<search>") == 0,
        "empty_answer": answer is not None and answer == "",
    }
    penalty = sum(FORMAT_PENALTIES[name] for name, violated in flags.items() if violated)
    score = min(1.0, max(0.0, 1.0 - penalty))
    metrics = {name: float(violated) for name, violated in flags.items()}
    metrics["format"] = score
    return score, metrics


def icrl_reward(response: str, answers: Sequence[str], alpha: float = ALPHA) -> tuple[float, dict[str, float]]:
    """ICRL reward ``alpha * EM + (1 - alpha) * format`` of one response.

    ``response`` must be the policy's response only (with the environment's ``<information>`` blocks
    inside it), never prompt + response: the released ICRL code scores prompt + response, which hides
    format violations behind the demonstrations' tags. EM and F1 compare the last complete ``<answer>``
    with the gold ``answers``; no answer scores 0.

    Metrics: ``reward``, ``em``, ``f1``, ``format``, ``format_valid`` (1.0 when format == 1.0),
    ``has_answer`` (1.0 when a complete answer block exists) and the 0/1 penalty flags of ``icrl_format``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (weight of exact match against format), got {alpha}")
    _check_golds(answers)
    answer = extract_answer(response)
    em = exact_match(answer, answers) if answer is not None else 0.0
    f1 = f1_score(answer, answers) if answer is not None else 0.0
    fmt, fmt_metrics = icrl_format(response)
    reward = alpha * em + (1.0 - alpha) * fmt
    metrics = {
        "reward": reward,
        "em": em,
        "f1": f1,
        "format": fmt,
        "format_valid": float(fmt == 1.0),
        "has_answer": float(answer is not None),
    }
    metrics.update({k: v for k, v in fmt_metrics.items() if k != "format"})
    return reward, metrics
