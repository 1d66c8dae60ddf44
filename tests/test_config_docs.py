"""docs/configuration.md is what scripts/make_config_docs.py writes from the config field docstrings (so it cannot go
stale), and it documents every key of every entry point."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generator():
    spec = importlib.util.spec_from_file_location("make_config_docs", ROOT / "scripts" / "make_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_configuration_reference_is_up_to_date():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == generator().render(), "docs/configuration.md is stale: run python scripts/make_config_docs.py"


def test_every_key_is_documented_with_its_docstring():
    from icrl_lite.config import field_docs
    from icrl_lite.trainer import TrainConfig

    gen = generator()
    page = gen.render()
    for section in ("", "model.", "rollout.", "search.", "python."):
        instance = getattr(TrainConfig(), section[:-1]) if section else TrainConfig()
        docs = field_docs(type(instance))
        for f in dataclasses.fields(instance):
            if not dataclasses.is_dataclass(getattr(instance, f.name)):
                assert f"**`{section}{f.name}`**" in page and gen.text(docs[f.name])[:40] in page
    assert "**`model.dtype`** (default `auto`): auto | bf16 | fp16 | fp32." in page
    assert "**`arms[].eval_demos`**" in page and "**`budget.rollouts`**" in page and "**`eval.resamples`**" in page
    assert "**`demos`** (default `0`)" in page  # EvalConfig
    assert "`rollout.temperature` (`1.0`)" in page  # eval's own default, where it differs from training's


def test_defaults_are_written_as_yaml_that_reads_back_to_the_same_value():
    import yaml

    show = generator().show
    for value in (True, 0.0003, 1e-06, 16, "", "runs/icrl-qa", [{"demos": 3, "steps": 5}], {}):
        assert yaml.safe_load(show(value)) == value
