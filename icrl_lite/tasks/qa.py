"""The qa task (ICRL's setting): answer closed-world questions by searching a corpus.

Records: `question` and `answers` (FlashRAG's `golden_answers` too; `data.load_qa`). The bundled task is
data/qa/ (a corpus of invented facts, train / dev / test questions, two-hop search demos; made by
scripts/make_qa_task.py). Tool: `search` (its backend set by the config's `search` section). The instruction and
corrective message are ICRL's (prompts.py, where they are also the prompt builders' defaults). Reward
0.8 * exact match + 0.2 * the ICRL format score (`rewards.icrl_reward`); metrics also log F1 and `searches`.
"""

from __future__ import annotations

from ..data import bundled_qa_path, load_qa
from ..prompts import INVALID_ACTION, SEARCH_INSTRUCTION
from ..rewards import icrl_reward
from .base import Task, answer_reward, register_task

QA = register_task(Task(
    name="qa",
    instruction=SEARCH_INSTRUCTION,
    invalid_message=INVALID_ACTION,
    default_tools=("search",),
    reward=answer_reward(icrl_reward),
    load=load_qa,
    bundled=bundled_qa_path,
))
