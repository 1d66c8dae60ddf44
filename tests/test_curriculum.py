"""Tests for icrl_lite.curriculum: stage boundaries, past-the-end, demo choice and validation messages."""

from __future__ import annotations

import pytest

from icrl_lite.curriculum import Curriculum, Stage, choose_demos, default_stages


def test_stage_boundaries_are_zero_based():
    # 3 demos for steps 0..99, 2 for 100..199, 0 for 200..299
    cur = Curriculum(default_stages(100))
    assert [cur.demos_at(s) for s in (0, 99, 100, 199, 200, 299)] == [3, 3, 2, 2, 0, 0]
    assert [cur.stage_at(s) for s in (0, 99, 100, 199, 200, 299)] == [0, 0, 1, 1, 2, 2]


def test_past_the_end_stays_in_last_stage():
    cur = Curriculum([Stage(3, 10), Stage(1, 5)])
    assert cur.total_steps == 15
    assert cur.stage_at(15) == 1 and cur.demos_at(15) == 1
    assert cur.demos_at(10_000) == 1


def test_dict_stages_and_describe():
    cur = Curriculum([{"demos": 3, "steps": 100}, {"demos": 2, "steps": 100}, {"demos": 0, "steps": 100}])
    assert cur.stages == tuple(default_stages(100))
    assert cur.total_steps == 300
    assert cur.describe() == "3 demos x 100 steps -> 2 x 100 -> 0 x 100"


def test_single_stage_describe():
    assert Curriculum([Stage(0, 7)]).describe() == "0 demos x 7 steps"


def test_negative_step_raises():
    with pytest.raises(ValueError, match="0-based"):
        Curriculum(default_stages(1)).demos_at(-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(demos=-1, steps=10), "demos must be an integer >= 0"),
        (dict(demos=2, steps=0), "drop the stage"),
        (dict(demos=2.5, steps=10), "demos must be an integer"),
    ],
)
def test_bad_stage_messages_say_how_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Stage(**kwargs)


def test_bad_curriculum_messages():
    with pytest.raises(ValueError, match="non-empty list of stages"):
        Curriculum([])
    with pytest.raises(ValueError, match="needs the keys 'demos' and 'steps'"):
        Curriculum([{"demos": 3, "step": 100}])


def test_choose_demos_is_deterministic_distinct_and_in_range():
    a = choose_demos(pool_size=10, k=3, seed=0, step=5, index=2)
    assert a == choose_demos(pool_size=10, k=3, seed=0, step=5, index=2)
    assert len(set(a)) == 3 and all(0 <= i < 10 for i in a)


def test_choose_demos_varies_with_seed_step_and_index():
    # C(20, 3) = 1140 possible sets: 30 draws would all coincide with probability ~0
    picks = {tuple(choose_demos(20, 3, seed=0, step=s, index=i)) for s in range(5) for i in range(6)}
    assert len(picks) > 1
    base = choose_demos(20, 3, seed=0, step=0, index=0)
    assert any(choose_demos(20, 3, seed=s, step=0, index=0) != base for s in range(1, 5))


def test_choose_demos_is_stable_across_processes():
    # seeded from a sha256 of (seed, step, index), not the salted hash(): a fresh interpreter agrees
    import subprocess
    import sys

    code = "from icrl_lite.curriculum import choose_demos; print(choose_demos(50, 4, 1, 2, 3))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == str(choose_demos(50, 4, 1, 2, 3))


def test_choose_demos_k_larger_than_pool_raises():
    with pytest.raises(ValueError, match="cannot choose 4 distinct demos from a pool of 3"):
        choose_demos(pool_size=3, k=4, seed=0, step=0, index=0)
    assert choose_demos(pool_size=3, k=0, seed=0, step=0, index=0) == []


def test_zero_shot_rollouts_per_stage():
    c = Curriculum([{"demos": 3, "steps": 2, "zero_shot": 2}, {"demos": 2, "steps": 1}, {"demos": 0, "steps": 1}])
    assert [c.zero_shot_at(s, 8) for s in range(4)] == [2, 2, 0, 8]  # a 0-demo stage is all zero-shot
    assert c.zero_shot_at(0, 1) == 1  # capped at the group size
    assert "(+2 zero-shot)" in c.describe()


def test_zero_shot_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match="zero_shot"):
        Curriculum([{"demos": 3, "steps": 2, "zero_shot": -1}])
    with pytest.raises(ValueError, match="optionally 'zero_shot'"):
        Curriculum([{"demos": 3, "steps": 2, "zero_shots": 1}])


def test_a_gold_stage_is_marked_and_described():
    curriculum = Curriculum([{"demos": 0, "steps": 2, "gold": True}, {"demos": 0, "steps": 1}])
    assert [curriculum.gold_at(s) for s in range(3)] == [True, True, False]
    assert curriculum.describe() == "0 demos x 2 steps (gold SFT) -> 0 x 1"


@pytest.mark.parametrize("stage", [{"demos": 3, "steps": 2, "gold": True}, {"demos": 0, "steps": 2, "gold": "yes"}])
def test_a_gold_stage_with_demos_or_a_non_boolean_flag_is_refused(stage):
    with pytest.raises(ValueError, match="gold"):
        Curriculum([stage])
