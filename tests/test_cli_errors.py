"""Input errors the command line turns into one line on stderr (exit 2) before any model work: an unknown model
offline, a plugin that raises on import, output_dir under a file, a damaged adapter, an unwritable --output, and
text files that are not UTF-8 (a byte-order mark is fine)."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import yaml

from icrl_lite import trainer as trainer_module
from icrl_lite.cli import main
from icrl_lite.config import load_config
from icrl_lite.data import load_qa, read_jsonl
from icrl_lite.trainer import TrainConfig


@pytest.fixture(autouse=True)
def no_model_work(monkeypatch):
    """Every error here must come before a model loads."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(trainer_module, "load_policy", refuse)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("icrl-lite: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---- the model source --------------------------------------------------------------------------------
def test_an_unknown_hub_model_offline_fails_at_once(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: pytest.fail("offline: the hub was asked"))
    assert main(["train", "model.name=nobody/no-such-model", f"output_dir={tmp_path / 'run'}"]) == 2
    err = one_line_error(capsys)
    assert "nobody/no-such-model" in err and "HF_HUB_OFFLINE" in err


def test_an_unreachable_hub_fails_at_once_instead_of_retrying(monkeypatch, capsys, tmp_path):
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    assert main(["eval", "model.name=nobody/no-such-model"]) == 2
    assert "cannot be reached" in one_line_error(capsys) and len(calls) == 1


def test_a_missing_local_model_dir_is_named(capsys, tmp_path):
    missing = tmp_path / "models" / "mine"
    assert main(["train", f"model.name={missing}", f"output_dir={tmp_path / 'run'}"]) == 2
    assert f"model.name={missing}: no such directory" in one_line_error(capsys)


# ---- plugins -----------------------------------------------------------------------------------------
def test_a_plugin_that_raises_on_import_is_named_with_its_line_and_error(capsys, tmp_path):
    plugin = tmp_path / "my_tools.py"
    plugin.write_text("import os\n\nraise RuntimeError('no API key')\n")
    assert main(["train", f"plugins=[{plugin}]", f"output_dir={tmp_path / 'run'}"]) == 2
    err = one_line_error(capsys)
    assert f"{plugin}:3" in err and "RuntimeError: no API key" in err


# ---- output paths ------------------------------------------------------------------------------------
@pytest.mark.parametrize("under", ["file/run", "file"])
def test_output_dir_under_or_at_a_file_is_refused(capsys, tmp_path, under):
    (tmp_path / "file").write_text("not a directory")
    assert main(["train", f"output_dir={tmp_path / under}"]) == 2
    assert "is a file, not a directory" in one_line_error(capsys)


def test_eval_output_that_cannot_be_written_is_refused_before_the_evaluation(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    assert main(["eval", "--output", str(tmp_path / "file" / "records.jsonl"), "--limit", "1"]) == 2
    assert "--output" in one_line_error(capsys)


def test_bfcl_output_that_cannot_be_written_is_refused_before_the_benchmark(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    assert main(["eval", "bfcl", "--output", str(tmp_path / "file" / "out.jsonl"), "--limit", "1"]) == 2
    assert "--output" in one_line_error(capsys)


# ---- adapters ----------------------------------------------------------------------------------------
def test_eval_of_a_checkpoint_with_a_damaged_adapter_names_the_file(capsys, tmp_path):
    adapter = tmp_path / "run" / "checkpoint-1" / "adapter"
    adapter.mkdir(parents=True)
    (adapter.parent / "trainer_state.pt").write_bytes(b"")
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    assert main(["eval", "--checkpoint", str(tmp_path / "run")]) == 2
    assert "adapter_model.safetensors" in one_line_error(capsys)


def test_resume_from_a_damaged_adapter_names_the_file(capsys, tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    adapter = run / "checkpoint-2" / "adapter"
    adapter.mkdir(parents=True)
    (adapter.parent / "trainer_state.pt").write_bytes(b"")
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": str(tiny_model_dir)}, "output_dir": str(run)}))
    assert main(["train", "--resume", f"output_dir={run}"]) == 2
    assert "adapter_config.json" in one_line_error(capsys)


# ---- text files --------------------------------------------------------------------------------------
BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("name, content", [
    ("q.jsonl", b'{"question": "q?", "answers": ["a"]}\n'),
    ("q.json", b'[{"question": "q?", "answers": ["a"]}]'),
])
def test_question_files_with_a_byte_order_mark_load(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(BOM + content)
    assert [q["question"] for q in load_qa(path)] == ["q?"]


def test_a_yaml_config_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(BOM + b"seed: 7\n")
    assert load_config(TrainConfig, path).seed == 7


@pytest.mark.parametrize("name, content, line", [
    ("q.jsonl", b'{"question": "q?", "answers": ["a"]}\n{"question": "caf\xe9?", "answers": ["a"]}\n', 2),
    ("q.json", b'[\n{"question": "q?", "answers": ["a"]},\n{"question": "caf\xe9?", "answers": ["a"]}]', 3),
])
def test_a_byte_that_is_not_utf8_names_the_file_and_line(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path}:{line}: byte 0xe9 at column 18 is not UTF-8"):
        read_jsonl(path) if name.endswith("l") else load_qa(path)


def test_a_yaml_config_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"seed: 7\ninstruction: 'caf\xe9 {question}'\n")
    with pytest.raises(ValueError, match=f"{path}:2"):
        load_config(TrainConfig, path)


def test_train_data_that_is_not_utf8_is_a_one_line_error(capsys, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"question": "q?", "answers": ["a"]}\n{"question": "\xff"}\n')
    assert main(["train", f"train_data={path}", f"output_dir={tmp_path / 'run'}"]) == 2
    assert f"{path}:2" in one_line_error(capsys)
