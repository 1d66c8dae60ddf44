"""Shared fixtures: a tiny random Llama with SmolLM2's real tokenizer, the --runslow switch, and the `gpu` marker's
skip where torch sees no CUDA device (scripts/gpu_check.sh runs those tests on a GPU)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (real model, minutes)")


def pytest_collection_modifyitems(config, items):
    import torch

    skips = {}
    if not config.getoption("--runslow"):
        skips["slow"] = pytest.mark.skip(reason="slow: run with --runslow")
    if not torch.cuda.is_available():
        skips["gpu"] = pytest.mark.skip(reason=f"gpu: no CUDA device visible to torch {torch.__version__} "
                                               "(run on a GPU machine: scripts/gpu_check.sh)")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's real tokenizer (from the embedded model's cached conversion)."""
    from icrl_lite.policy import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A randomly initialised 2-layer Llama with the real tokenizer, saved like a hub checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and a loaded machine's spinning OpenMP workers made two threads
    40x slower here (10 s instead of 0.25 s a step); the numbers do not depend on it. Use it per module with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def varied_rewards(monkeypatch):
    """Score rollouts 0, 1, 0, 1, ...: every group of 2 is informative, so every step updates the adapter.

    Each step scores an even number of rollouts, so the pattern is the same per step in every run.
    """
    import itertools

    from icrl_lite import trainer as trainer_module

    counter = itertools.count()
    real_score = trainer_module.score

    def fake_score(rollout, gold, *args):
        metrics = real_score(rollout, gold, *args)
        metrics["reward"] = float(next(counter) % 2)
        return metrics

    monkeypatch.setattr(trainer_module, "score", fake_score)
