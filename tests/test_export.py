"""`icrl-lite export`: a merged model that plain transformers loads (in a process without icrl-lite) and that
computes the trained policy's logits; the adapter in PEFT format; clear errors for bad checkpoints and outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from icrl_lite.cli import main
from icrl_lite.evaluate import load_for_inference
from icrl_lite.policy import ModelConfig
from icrl_lite.rollout import RolloutConfig
from icrl_lite.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "<think> the river </think><search> Tavoustead river </search>"


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    """A one-step run of the tiny model whose adapter is then made non-trivial (LoRA B starts at zero, so an
    untrained adapter would merge into no change at all)."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(output_dir=str(out), stages=[{"demos": 0, "steps": 1}], prompts_per_step=2, num_generations=2,
                      micro_batch_size=2, eval_every=0, progress=False, probe_demos=0,
                      model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"),
                      rollout=RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=24))
    Trainer(cfg).train()
    weights = out / "checkpoint-1" / "adapter" / "adapter_model.safetensors"
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) * 0.1 if "lora_B" in k else v for k, v in load_file(weights).items()}
    save_file(state, weights)
    return out


def trained_logits(run_dir, tokenizer) -> torch.Tensor:
    """The icrl-lite policy (base + adapter, unmerged) on TEXT: (T, V)."""
    model, _, _ = load_for_inference(str(run_dir), ModelConfig())
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def plain_transformers_logits(directory, tmp_path, peft: bool = False) -> torch.Tensor:
    """Load `directory` in a fresh process that imports transformers (and peft) but never icrl_lite."""
    script = f"""
import sys, torch
from transformers import AutoTokenizer, AutoModelForCausalLM
{"from peft import AutoPeftModelForCausalLM as AutoModelForCausalLM" if peft else ""}
torch.set_num_threads(1)
tokenizer = AutoTokenizer.from_pretrained({str(directory)!r})
model = AutoModelForCausalLM.from_pretrained({str(directory)!r})
with torch.no_grad():
    logits = model(input_ids=torch.tensor([tokenizer({TEXT!r})["input_ids"]])).logits[0]
torch.save({{"logits": logits, "dtype": str(next(model.parameters()).dtype)}}, {str(tmp_path / "logits.pt")!r})
assert "icrl_lite" not in sys.modules, "the export needed icrl_lite"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)  # not the repo root: `icrl_lite` is not importable by accident
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(tmp_path / "logits.pt")


def test_a_merged_export_loads_in_plain_transformers_and_computes_the_trained_policy(run_dir, tiny_model_dir, tokenizer,
                                                                                     tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    assert main(["export", "--checkpoint", str(run_dir), "--merge", "--output", str(out)]) == 0
    assert not list(out.glob("adapter_*")) and (out / "config.json").is_file() and (out / "README.md").is_file()
    loaded = plain_transformers_logits(out, tmp_path)
    assert loaded["dtype"] == "torch.float32"
    expected = trained_logits(run_dir, tokenizer)
    torch.testing.assert_close(loaded["logits"], expected, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # the adapter matters: the base model alone computes other logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=torch.tensor([tokenizer(TEXT)["input_ids"]])).logits[0]
    assert (base - expected).abs().max() > 100 * 1e-4


def test_a_bf16_merge_matches_within_bf16_precision(run_dir, tokenizer, tmp_path):
    out = tmp_path / "merged-bf16"
    assert main(["export", "--checkpoint", str(run_dir), "--merge", "--dtype", "bf16", "--output", str(out)]) == 0
    loaded = plain_transformers_logits(out, tmp_path)
    assert loaded["dtype"] == "torch.bfloat16"
    torch.testing.assert_close(loaded["logits"].float(), trained_logits(run_dir, tokenizer), rtol=0.05, atol=0.05)


def test_an_adapter_export_is_a_peft_adapter_with_the_trained_weights(run_dir, tokenizer, tmp_path):
    out = tmp_path / "adapter"
    assert main(["export", "--checkpoint", str(run_dir), "--output", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer_config.json").is_file() and (out / "icrl_lite_config.yaml").is_file()
    loaded = plain_transformers_logits(out, tmp_path, peft=True)
    torch.testing.assert_close(loaded["logits"], trained_logits(run_dir, tokenizer), rtol=1e-5, atol=1e-5)


def test_the_model_card_gives_the_base_model_and_the_trained_prompt(run_dir, tiny_model_dir, tmp_path):
    from icrl_lite.prompts import SEARCH_INSTRUCTION

    assert main(["export", "--checkpoint", str(run_dir), "--output", str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert str(tiny_model_dir) in card and "checkpoint-1" in card
    assert SEARCH_INSTRUCTION.rstrip() in card


def test_a_missing_checkpoint_directory_is_named(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "nope"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nope: no such directory" in err
    assert not (tmp_path / "out").exists()


def test_a_directory_without_checkpoints_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--output", str(tmp_path / "out")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


def test_a_garbage_adapter_is_refused_with_the_file_named(tmp_path, capsys):
    adapter = tmp_path / "checkpoint-3" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{not json")
    assert main(["export", "--checkpoint", str(tmp_path / "checkpoint-3"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "adapter_config.json: not valid JSON" in err and "Traceback" not in err


def test_a_non_empty_output_is_refused_unless_forced(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["export", "--checkpoint", str(run_dir), "--output", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    assert main(["export", "--checkpoint", str(run_dir), "--output", str(out), "--force"]) == 0
    assert not (out / "precious.txt").exists() and (out / "adapter_model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging dir left behind


def test_an_output_holding_the_checkpoint_is_refused_even_with_force(run_dir, capsys):
    assert main(["export", "--checkpoint", str(run_dir / "checkpoint-1"), "--output", str(run_dir), "--force"]) == 2
    assert "would replace it" in capsys.readouterr().err
    assert (run_dir / "checkpoint-1" / "adapter" / "adapter_config.json").is_file()


def test_dtype_is_for_merged_exports_only(run_dir, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(run_dir), "--dtype", "bf16", "--output", str(tmp_path / "out")]) == 2
    assert "--merge" in capsys.readouterr().err
