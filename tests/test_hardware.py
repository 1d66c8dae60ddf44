"""hardware: the model and precision chosen for a T4, an Ampere-or-newer GPU and a CPU, and what detect() reads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from icrl_lite.config import load_config
from icrl_lite.hardware import Hardware, detect, recommend
from icrl_lite.trainer import TrainConfig

T4 = Hardware("cuda", "Tesla T4", (7, 5), 15.8)
A100 = Hardware("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), 85.0)
L4 = Hardware("cuda", "NVIDIA L4", (8, 9), 23.7)


def test_a_t4_trains_qwen_in_4bit_with_fp16_compute_because_it_has_no_bf16():
    choice = recommend(T4)
    o = choice.overrides
    assert o["model.name"].startswith("Qwen/Qwen2.5-") and o["model.dtype"] == "fp16" and o["model.load_in_4bit"] is True
    assert "no native bf16" in choice.reason and "loss scaling" in choice.reason
    assert recommend(Hardware("cuda", "small", (7, 5), 8.0)).overrides["model.name"] == "Qwen/Qwen2.5-0.5B-Instruct"


def test_ampere_or_newer_trains_in_bf16_and_a_bigger_model_than_a_t4():
    def billions(choice):
        return float(choice.overrides["model.name"].split("-")[1].rstrip("B"))

    for gpu in (A100, L4):
        choice = recommend(gpu)
        assert choice.overrides["model.dtype"] == "bf16" and "bf16" in choice.reason
        assert billions(choice) > billions(recommend(T4))
    assert recommend(A100).overrides["model.load_in_4bit"] is False  # 80 GB: a full bf16 base
    assert recommend(L4).overrides["model.load_in_4bit"] is True  # 24 GB: as the gpu-24gb config


@pytest.mark.parametrize("hardware, config", [(T4, "gpu-16gb"), (L4, "gpu-24gb"), (A100, "gpu-80gb")])
def test_the_packaged_gpu_configs_train_the_model_and_precision_chosen_for_their_card(hardware, config):
    choice = recommend(hardware).overrides
    cfg = load_config(TrainConfig, config)
    assert (cfg.model.name, cfg.model.load_in_4bit) == (choice["model.name"], choice["model.load_in_4bit"])
    assert cfg.model.dtype in (choice["model.dtype"], "auto")  # auto picks the same on that card


@pytest.mark.parametrize("fast, dtype", [(True, "bf16"), (False, "fp32")])
def test_a_cpu_trains_the_embedded_model_in_the_dtype_measured_faster(fast, dtype):
    choice = recommend(Hardware("cpu", "CPU", cores=2, cpu_fast_bf16=fast))
    assert choice.overrides == {"model.name": "smollm2-135m", "model.dtype": dtype, "model.load_in_4bit": False}
    assert "No CUDA GPU" in choice.reason and dtype in choice.reason


@pytest.mark.parametrize("hardware", [T4, A100, L4, Hardware("cpu", "CPU", cpu_fast_bf16=True)])
def test_every_choice_is_a_valid_train_config(hardware):
    choice = recommend(hardware)
    cfg = load_config(TrainConfig, None, choice.args())  # validated
    assert cfg.model.name == choice.overrides["model.name"] and cfg.model.dtype == choice.overrides["model.dtype"]
    assert hardware.describe() in str(choice)


def test_detect_reads_the_gpu_name_capability_and_memory(monkeypatch):
    props = SimpleNamespace(name="Tesla T4", major=7, minor=5, total_memory=15_828_320_256)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    found = detect()
    assert (found.device, found.name, found.capability, round(found.memory_gb, 1)) == ("cuda", "Tesla T4", (7, 5), 15.8)
    assert recommend(found).overrides["model.dtype"] == "fp16"


def test_detect_on_a_cpu_uses_the_policys_dtype_measurement(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ICRL_LITE_CPU_BF16", "1")  # cpu.cpu_has_fast_bf16's override of its measurement
    from icrl_lite import cpu

    cpu.cpu_has_fast_bf16.cache_clear()
    try:
        found = detect()
    finally:
        cpu.cpu_has_fast_bf16.cache_clear()
    assert found.device == "cpu" and found.cpu_fast_bf16 is True and found.cores >= 1
