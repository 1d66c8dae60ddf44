"""tool_penalty: the format score's price of never calling the tool, for the qa and math rewards and in training."""

from __future__ import annotations

import pytest

from icrl_lite.evaluate import score
from icrl_lite.rewards import icrl_reward, math_reward
from icrl_lite.rollout import Rollout
from icrl_lite.tasks import get_task
from icrl_lite.trainer import TrainConfig

NO_CALL = {"math": "<think> 6 * 7 </think>\n<answer> 42 </answer>",
           "qa": "<think> I know it. </think>\n<answer> Paris </answer>"}
GOLD = {"math": ["42"], "qa": ["Paris"]}
REWARD = {"math": math_reward, "qa": icrl_reward}


@pytest.mark.parametrize("task", ["math", "qa"])
def test_the_penalty_prices_a_response_without_a_call(task):
    default, _ = REWARD[task](NO_CALL[task], GOLD[task])
    paper, _ = REWARD[task](NO_CALL[task], GOLD[task], tool_penalty=0.1)
    strict, metrics = REWARD[task](NO_CALL[task], GOLD[task], tool_penalty=0.5)
    assert default == paper == pytest.approx(0.8 + 0.2 * 0.9)
    assert strict == pytest.approx(0.8 + 0.2 * 0.5)
    assert metrics["format_valid"] == 0.0  # a missing call is a format violation whatever it costs


def test_a_response_with_a_call_is_not_penalised():
    with_call = "<think> compute </think>\n<python>\nprint(6 * 7)\n</python>\n<output>42</output>\n<answer> 42 </answer>"
    assert math_reward(with_call, ["42"], tool_penalty=0.5)[0] == pytest.approx(1.0)


def test_score_passes_the_penalty_to_the_task_reward_only_when_set():
    rollout = Rollout(prompt_ids=[1], response_ids=[2], loss_mask=[1], policy_text=NO_CALL["math"])
    task = get_task("math")
    assert score(rollout, ["42"], task, [])["reward"] == pytest.approx(0.98)
    assert score(rollout, ["42"], task, [], tool_penalty=0.5)["reward"] == pytest.approx(0.9)


@pytest.mark.parametrize("overrides, message", [
    ({"tool_penalty": 1.5}, "must be in \\[0, 1\\]"),
    ({"tool_penalty": 0.5, "task": "fc"}, "fc's ToolRL reward has no tool-call penalty"),
])
def test_bad_tool_penalty_is_refused_with_the_fix(overrides, message):
    cfg = TrainConfig(**overrides)
    with pytest.raises(ValueError, match=message):
        cfg.validate()
