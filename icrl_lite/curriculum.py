"""Demonstration curriculum: how many few-shot tool-use demos the rollout prompt carries at each step.

ICRL trains in stages whose number of in-context demonstrations shrinks until the model works zero-shot;
the paper's schedule is 3 -> 2 -> 0 demos, 100 steps per stage (a 4-stage 3 -> 2 -> 1 -> 0 schedule
collapsed in its ablation). ``choose_demos`` picks which demos of a pool a prompt gets, reproducibly from
(seed, step, prompt index); the paper does not say how its demos are picked.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: ``demos`` demonstrations in the prompt for ``steps`` training steps.

    ``zero_shot`` of each group's rollouts are sampled from the prompt WITHOUT demos (mixed groups; our
    departure from the paper, whose stages put the same k demos in every rollout). ``gold`` stages sample
    nothing: each step fine-tunes on `prompts_per_step` of the pool's worked solutions under the 0-demo prompt
    (supervised, a baseline for what RL adds; not part of ICRL). With ``demos: 0`` every
    rollout is zero-shot anyway. A sequence of stages with falling ``demos`` and rising ``zero_shot`` is a
    demo-probability schedule that keeps zero-shot rollouts in every step.
    """

    demos: int
    steps: int
    zero_shot: int = 0
    gold: bool = False  # supervised fine-tuning on the pool's worked solutions instead of rollouts (a baseline)

    def __post_init__(self) -> None:
        if isinstance(self.demos, bool) or not isinstance(self.demos, int) or self.demos < 0:
            raise ValueError(f"Stage.demos must be an integer >= 0 (use 0 for zero-shot), got {self.demos!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(
                f"Stage.steps must be an integer >= 1, got {self.steps!r}; drop the stage instead of giving it 0 steps"
            )
        if isinstance(self.zero_shot, bool) or not isinstance(self.zero_shot, int) or self.zero_shot < 0:
            raise ValueError(f"Stage.zero_shot (rollouts per group without demos) must be an integer >= 0, got {self.zero_shot!r}")
        if not isinstance(self.gold, bool):
            raise ValueError(f"Stage.gold must be true or false, got {self.gold!r}")
        if self.gold and (self.demos or self.zero_shot):
            raise ValueError("a gold stage fine-tunes on the demo pool's solutions under the 0-demo prompt and samples "
                             "nothing: give it demos: 0 and no zero_shot, e.g. {demos: 0, steps: 5, gold: true}")


def default_stages(steps_per_stage: int) -> list[Stage]:
    """The paper's schedule 3 -> 2 -> 0 demos, each for ``steps_per_stage`` steps."""
    return [Stage(3, steps_per_stage), Stage(2, steps_per_stage), Stage(0, steps_per_stage)]


def _as_stage(stage: Stage | Mapping[str, int]) -> Stage:
    if isinstance(stage, Stage):
        return stage
    if isinstance(stage, Mapping):
        unknown = set(stage) - {"demos", "steps", "zero_shot", "gold"}
        missing = {"demos", "steps"} - set(stage)
        if unknown or missing:
            raise ValueError(
                f"a stage needs the keys 'demos' and 'steps' (and optionally 'zero_shot' or 'gold'), e.g. "
                f"{{'demos': 3, 'steps': 100}}; got {dict(stage)!r}"
            )
        return Stage(demos=stage["demos"], steps=stage["steps"], zero_shot=stage.get("zero_shot", 0),
                     gold=stage.get("gold", False))
    raise TypeError(f"a stage must be a Stage or a dict like {{'demos': 3, 'steps': 100}}, got {stage!r}")


class Curriculum:
    """A sequence of stages; step ``s`` (0-based) falls in the first stage whose cumulative steps exceed it.

    Steps past the end stay in the last stage.
    """

    def __init__(self, stages: Sequence[Stage | Mapping[str, int]]) -> None:
        if isinstance(stages, (Stage, Mapping)) or len(stages) == 0:
            raise ValueError(
                "a curriculum needs a non-empty list of stages, e.g. [{'demos': 3, 'steps': 100}, "
                "{'demos': 0, 'steps': 100}] or default_stages(100)"
            )
        self.stages: tuple[Stage, ...] = tuple(_as_stage(s) for s in stages)
        ends, total = [], 0
        for stage in self.stages:
            total += stage.steps
            ends.append(total)
        self._ends = ends  # exclusive end step of each stage

    @property
    def total_steps(self) -> int:
        return self._ends[-1]

    def stage_at(self, step: int) -> int:
        """Index of the stage that contains ``step`` (0-based); the last stage past the end."""
        if step < 0:
            raise ValueError(f"step must be >= 0 (steps are 0-based), got {step}")
        for i, end in enumerate(self._ends):
            if step < end:
                return i
        return len(self.stages) - 1

    def demos_at(self, step: int) -> int:
        """Number of demonstrations in the prompts of ``step``."""
        return self.stages[self.stage_at(step)].demos

    def gold_at(self, step: int) -> bool:
        """Whether ``step`` fine-tunes on the demo pool's worked solutions instead of sampling rollouts."""
        return self.stages[self.stage_at(step)].gold

    def zero_shot_at(self, step: int, group_size: int) -> int:
        """Rollouts of a group at ``step`` sampled without demos (all of them in a 0-demo stage)."""
        stage = self.stages[self.stage_at(step)]
        return group_size if stage.demos == 0 else min(stage.zero_shot, group_size)

    def describe(self) -> str:
        """E.g. ``"3 demos x 100 steps -> 2 x 100 -> 0 x 100"``."""
        first, *rest = self.stages
        mixed = lambda s: f" (+{s.zero_shot} zero-shot)" if s.zero_shot and s.demos else " (gold SFT)" if s.gold else ""  # noqa: E731
        parts = [f"{first.demos} demos x {first.steps} steps{mixed(first)}"]
        parts += [f"{s.demos} x {s.steps}{mixed(s)}" for s in rest]
        return " -> ".join(parts)

    def __repr__(self) -> str:
        return f"Curriculum({self.describe()})"


def _stable_seed(*parts: int) -> int:
    """An integer derived from ``parts`` that is the same in every process (unlike the salted ``hash``)."""
    digest = hashlib.sha256(repr(tuple(int(p) for p in parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


DEMO_CHOICES = ("per_prompt", "per_step")  # a question's own demos | one set for every question of a step


def choose_demos(pool_size: int, k: int, seed: int, step: int, index: int) -> list[int]:
    """``k`` distinct demo indices in ``range(pool_size)``, a deterministic function of (seed, step, index).

    ``index`` is the prompt's position in the batch, so prompts of one step get different demos while a
    rerun with the same seed sees the same ones.
    """
    if k < 0:
        raise ValueError(f"k (number of demos) must be >= 0, got {k}")
    if k > pool_size:
        raise ValueError(
            f"cannot choose {k} distinct demos from a pool of {pool_size}; add demos to the pool or lower the "
            "curriculum's demos"
        )
    rng = random.Random(_stable_seed(seed, step, index))
    return rng.sample(range(pool_size), k)
