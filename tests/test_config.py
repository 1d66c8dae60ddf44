"""Config loading: YAML then `key=value` overrides, dotted sections, type checks, validation, field docs."""

from __future__ import annotations

import dataclasses

import pytest

from icrl_lite.config import field_docs, load_config, resolve_config_path
from icrl_lite.evaluate import EvalConfig
from icrl_lite.policy import ModelConfig
from icrl_lite.rollout import RolloutConfig
from icrl_lite.trainer import TrainConfig


@pytest.fixture
def yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("prompts_per_step: 3\nlearning_rate: 1.0e-4\nmodel:\n  lora_rank: 4\nrollout:\n  max_turns: 5\n")
    return path


def test_yaml_values_are_applied(yaml_file):
    cfg = load_config(TrainConfig, yaml_file)
    assert (cfg.prompts_per_step, cfg.learning_rate, cfg.model.lora_rank, cfg.rollout.max_turns) == (3, 1e-4, 4, 5)


def test_yaml_leaves_unmentioned_keys_at_their_defaults(yaml_file):
    cfg = load_config(TrainConfig, yaml_file)
    assert cfg.num_generations == TrainConfig().num_generations
    assert cfg.model.lora_alpha == ModelConfig().lora_alpha


def test_overrides_win_over_the_file(yaml_file):
    cfg = load_config(TrainConfig, yaml_file, ["prompts_per_step=5", "model.lora_rank=8"])
    assert cfg.prompts_per_step == 5 and cfg.model.lora_rank == 8


def test_dotted_keys_reach_sections_and_leave_siblings_alone(yaml_file):
    cfg = load_config(TrainConfig, yaml_file, ["model.lora_rank=8", "rollout.temperature=0.5"])
    assert cfg.model.lora_rank == 8 and cfg.rollout.temperature == 0.5
    assert cfg.rollout.max_turns == 5  # set by the file, in the same section: not reset by the override


def test_list_of_mappings_override_parses_as_yaml():
    cfg = load_config(TrainConfig, None, ["stages=[{demos: 1, steps: 2}, {demos: 0, steps: 3}]"])
    assert cfg.stages == [{"demos": 1, "steps": 2}, {"demos": 0, "steps": 3}]


def test_unknown_key_suggests_the_close_match_and_the_config_command():
    with pytest.raises(ValueError, match="unknown config key") as err:
        load_config(TrainConfig, None, ["prompt_per_step=3"])
    assert "Did you mean 'prompts_per_step'" in str(err.value)
    assert "icrl-lite config" in str(err.value)


def test_unknown_key_in_a_section_names_the_dotted_path():
    with pytest.raises(ValueError) as err:
        load_config(TrainConfig, None, ["model.lora_rnk=8"])
    assert "model.lora_rank" in str(err.value)


def test_unknown_key_in_the_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learnin_rate: 1.0e-4\n")
    with pytest.raises(ValueError, match="learning_rate") as err:
        load_config(TrainConfig, path)
    assert str(path) in str(err.value)


def test_wrong_type_names_the_key():
    with pytest.raises(ValueError, match="prompts_per_step") as err:
        load_config(TrainConfig, None, ["prompts_per_step=abc"])
    assert "expected int" in str(err.value)


def test_scalar_given_for_a_section_says_to_use_a_mapping():
    with pytest.raises(ValueError, match="section"):
        load_config(TrainConfig, None, ["model=smollm2-135m"])


def test_ints_are_accepted_for_floats():
    cfg = load_config(TrainConfig, None, ["learning_rate=1", "rollout.temperature=0"])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert isinstance(cfg.rollout.temperature, float)


def test_bool_is_not_accepted_for_an_int():
    with pytest.raises(ValueError, match="top_k"):
        load_config(TrainConfig, None, ["search.top_k=true"])


def test_override_without_equals_sign_shows_the_form():
    with pytest.raises(ValueError, match="key=value"):
        load_config(TrainConfig, None, ["prompts_per_step"])


@pytest.mark.parametrize("override, fix", [
    ("num_generations=1", "num_generations must be >= 2"),
    ("model.dtype=fp8", "use one of auto, bf16, fp16, fp32"),
    ("stages=[{demos: -1, steps: 2}]", "use 0 for zero-shot"),
    ("stages=[{demos: 1, steps: 0}]", "drop the stage"),
    ("demo_layout=sideways", "use chat or user"),
    ("demo_choice=random", "use per_prompt or per_step"),
    ("rollout.top_p=0", "top_p in (0, 1]"),
    ("model.lora_rank=0", "use a rank >= 1"),
])
def test_invalid_values_are_rejected_with_the_fix(override, fix):
    with pytest.raises(ValueError) as err:
        load_config(TrainConfig, None, [override])
    assert fix in str(err.value)


def test_every_field_of_every_config_is_documented():
    for cls in (TrainConfig, EvalConfig, ModelConfig, RolloutConfig):
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name, "").strip(), f"{cls.__name__}.{f.name} has no doc string"


def test_packaged_config_name_resolves_and_loads():
    assert resolve_config_path("smoke").name == "smoke.yaml"
    cfg = load_config(TrainConfig, "smoke")
    assert cfg.output_dir == "runs/smoke"


def test_unknown_config_name_lists_the_packaged_ones():
    with pytest.raises(FileNotFoundError, match="smoke"):
        resolve_config_path("no-such-config")


def test_non_mapping_yaml_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config(TrainConfig, path)


def test_exponent_floats_without_a_dot_are_floats_on_the_command_line_and_in_yaml(tmp_path):
    # PyYAML (YAML 1.1) reads 5e-5 as a string; the README and --help write learning rates that way
    cfg = load_config(TrainConfig, None, ["learning_rate=5e-5", "rollout.top_p=1E-1"])
    assert cfg.learning_rate == 5e-5 and cfg.rollout.top_p == 0.1
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 2e-4\n")
    assert load_config(TrainConfig, str(path), []).learning_rate == 2e-4
    with pytest.raises(ValueError, match="expected float"):
        load_config(TrainConfig, None, ["learning_rate=fast"])


def test_the_paper_config_runs_the_papers_loss_not_the_cpu_default():
    cfg = load_config(TrainConfig, "paper-qwen3b")
    assert [s["demos"] for s in cfg.stages] == [3, 2, 0]
    assert cfg.demo_loss_prompt == "own" and cfg.updates_per_step == 1  # GRPO throughout, one update per batch


@pytest.mark.parametrize("name", ["gpu-16gb", "gpu-24gb", "gpu-80gb", "paper-qwen3b"])
def test_the_packaged_paper_curriculum_configs_use_the_papers_loss(name):
    # they run ICRL's 3 -> 2 -> 0 schedule, so they score each rollout under its own prompt, as the paper does
    from icrl_lite.trainer import TrainConfig

    cfg = load_config(TrainConfig, name)
    assert [s["demos"] for s in cfg.stages] == [3, 2, 0] and cfg.demo_loss_prompt == "own"
