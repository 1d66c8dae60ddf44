"""The command line: `config` lists every key; bad input gives exit code 2 and a message on stderr."""

from __future__ import annotations

import dataclasses

import pytest

from icrl_lite.cli import main
from icrl_lite.config import is_config
from icrl_lite.evaluate import EvalConfig
from icrl_lite.trainer import TrainConfig


def flat_keys(cls: type, prefix: str = "") -> list[str]:
    keys, instance = [], cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        keys += flat_keys(type(value), prefix + f.name + ".") if is_config(value) else [prefix + f.name]
    return keys


@pytest.mark.parametrize("which, cls", [([], TrainConfig), (["eval"], EvalConfig)])
def test_config_prints_every_key(capsys, which, cls):
    assert main(["config", *which]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and not line.startswith("      ")}
    assert listed == set(flat_keys(cls))


def test_train_with_an_unknown_key_exits_2_with_the_error_on_stderr(capsys):
    assert main(["train", "bogus_key=1"]) == 2
    captured = capsys.readouterr()
    assert "unknown config key" in captured.err and "bogus_key" in captured.err
    assert captured.out == ""


def test_train_with_an_unknown_config_name_lists_packaged_configs(capsys):
    assert main(["train", "--config", "nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "nonexistent" in err and "smoke" in err


def test_train_with_an_invalid_value_exits_2_with_the_fix(capsys):
    assert main(["train", "num_generations=1"]) == 2
    assert "num_generations must be >= 2" in capsys.readouterr().err


def test_eval_of_a_dir_without_checkpoints_exits_2(capsys, tmp_path):
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    assert "--checkpoint base" in capsys.readouterr().err


def test_eval_with_an_unknown_key_exits_2(capsys):
    assert main(["eval", "bogus_key=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["fly"])
    assert exit_info.value.code == 2
