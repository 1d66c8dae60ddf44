"""`icrl-lite plan`: a config's memory and wall time on GPUs from arithmetic; the recipes fit the GPUs they name."""

from __future__ import annotations

import pytest

from icrl_lite import plan
from icrl_lite.cli import main
from icrl_lite.config import CONFIG_DIR, load_config
from icrl_lite.memory import ModelShape
from icrl_lite.plan import GPUS, Gpu, format_plan, plan_run, recipe_gpus, step_time
from icrl_lite.trainer import TrainConfig

TINY = ModelShape(vocab=100, hidden=10, intermediate=20, layers=2, heads=2, kv_heads=1, head_dim=5, tied=True)
ROUND = Gpu("round", memory_gb=10, tflops=1, bandwidth_gbs=1)
RECIPES = sorted(path.stem for path in CONFIG_DIR.glob("*.yaml") if recipe_gpus(path))


def step(**overrides):
    settings = dict(prompts=2, generations=3, prompt_tokens=40, response_tokens=20, updates=1, checkpointing=False,
                    reference=False, four_bit=False)
    return step_time(TINY, ROUND, **{**settings, **overrides})


def test_the_step_is_the_arithmetic_of_the_module_docstring():
    n = 2 * (10 * 10 + 10 * 5 + 10 * 5 + 10 * 10 + 10 * 20 * 2 + 20 * 10) + 100 * 10  # layers' linears + LM head
    assert plan.matmul_weights(TINY) == n == 2800
    t = step()
    attention, mean = 4 * 2 * 2 * 5, 40 + 20 / 2
    peak = 1e12 * plan.MATMUL_EFFICIENCY
    read = (n * 2 + 6 * mean * TINY.kv_bytes_per_token(2)) / (1e9 * plan.BANDWIDTH_EFFICIENCY)
    compute = 6 * (2 * n + attention * mean) / peak
    assert t.decode == pytest.approx(20 * (max(read, compute) + 2 * plan.LAUNCH_SECONDS_PER_LAYER))
    assert t.decode_bound == "bandwidth"
    assert t.update == pytest.approx(2 * (2 * 40 + 6 * 20) * (2 * n + attention * mean) / peak)
    assert t.sampled_tokens == 120


def test_what_each_knob_costs():
    base = step()
    assert step(checkpointing=True).update == pytest.approx(1.5 * base.update)  # the forward once more
    assert step(reference=True).update == pytest.approx(1.5 * base.update)  # a reference forward
    assert step(updates=4).update == pytest.approx(4 * base.update)
    assert step(four_bit=True).update == pytest.approx(plan.FOUR_BIT_SLOWDOWN * base.update)
    assert step(four_bit=True).decode > base.decode  # dequantized on every decode step
    assert step(generations=6).sampled_tokens == 2 * base.sampled_tokens


def test_a_recipe_that_does_not_fit_says_what_to_turn():
    cfg = load_config(TrainConfig, "paper-qwen3b")
    t4, a100 = plan_run(cfg, ["T4", "A100-80GB"])
    assert not t4.fits and t4.knobs and "prompts_per_step" in t4.knobs[0]
    assert a100.fits and a100.hours > 0
    text = format_plan(cfg, [t4, a100])
    assert "T4 (16 GB" in text and "does NOT fit" in text and "turn: " in text and "A100-80GB" in text
    assert "not measurements" in text


def test_a_faster_card_plans_a_shorter_run():
    cfg = load_config(TrainConfig, "toolrl-qwen1.5b")
    l4, h100 = plan_run(cfg, ["L4", "H100"])
    assert h100.hours < l4.hours


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_fits_the_gpus_it_names(name):
    cfg = load_config(TrainConfig, name)
    gpus = recipe_gpus(CONFIG_DIR / f"{name}.yaml")
    assert gpus and set(gpus) <= GPUS.keys()
    assert [p.gpu.name for p in plan_run(cfg, gpus) if not p.fits] == []


def test_the_recipes_include_the_papers():
    assert {"paper-qwen3b", "toolrl-qwen1.5b"} <= set(RECIPES)


def test_the_command_prints_the_plan_of_the_named_gpus(capsys):
    assert main(["plan", "--config", "toolrl-qwen1.5b"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{gpu} (" in out for gpu in recipe_gpus(CONFIG_DIR / "toolrl-qwen1.5b.yaml"))
    assert main(["plan", "--config", "toolrl-qwen1.5b", "--gpu", "V100"]) == 2
    assert "unknown GPU(s) V100" in capsys.readouterr().err


def test_a_model_with_no_known_shape_offline_is_named(monkeypatch):
    cfg = load_config(TrainConfig, "toolrl-qwen1.5b", ["model.name=someone/not-a-model"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="no shape for model 'someone/not-a-model'"):
        plan_run(cfg, ["L4"])
