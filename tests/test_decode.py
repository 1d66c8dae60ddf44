"""The lean decode step (icrl_lite.cpu.decode.FastDecoder) against transformers' own forward."""

from dataclasses import replace

import pytest
import torch

from icrl_lite import rollout
from icrl_lite.cpu import decode
from icrl_lite.cpu.decode import FastDecoder, Linear, can_pack
from icrl_lite.policy import ModelConfig, load_policy, merged_adapter, run_decoder
from icrl_lite.rollout import RolloutConfig, RolloutEngine, SlabLayer, chosen_logprobs

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(kind: str, vocab: int, dtype=torch.float32):
    """A random 2-layer model of a supported family, with grouped KV heads (and biases / q-k norms where the
    family has them)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(kind, vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                                  tie_word_embeddings=kind == "llama")
    model = AutoModelForCausalLM.from_config(config).to(dtype).eval()
    for p in model.parameters():  # random biases and norm weights too, so that leaving one out shows
        p.data.add_(0.1 * torch.randn_like(p))
    return model


def count_calls(monkeypatch, cls, name: str) -> list:
    """Patch method `name` of `cls` to record each call (and still run it); returns the record."""
    calls, original = [], getattr(cls, name)

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


def reference_step(model, ids, attention_mask, positions, cache):
    return run_decoder(model, cache, input_ids=ids[:, None], attention_mask=attention_mask,
                       position_ids=positions[:, None]).logits[:, -1].float()


def prefilled(model, rows: int, length: int, holes: bool):
    """A slab cache holding `length` random tokens per row (with masked holes in some rows), and its mask."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layer_class_to_replicate = SlabLayer
    ids = torch.randint(0, model.config.vocab_size, (rows, length))
    mask = torch.ones(rows, length, dtype=torch.long)
    if holes:
        mask[0, :3] = 0  # left padding
        mask[1, 5:9] = 0  # a hole in the middle
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        run_decoder(model, cache, input_ids=ids, attention_mask=mask, position_ids=positions)
    return cache, mask, positions[:, -1] + 1


@pytest.mark.parametrize("packed", [True, False])  # oneDNN's prepacked weights, or F.linear where a build lacks them
@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_decode_steps_equal_transformers_forward(kind, packed, monkeypatch):
    if packed and not can_pack(torch.float32, torch.device("cpu")):
        pytest.skip("no oneDNN in this torch build")
    if not packed:
        monkeypatch.setattr(decode, "can_pack", lambda dtype, device: False)
    model = tiny(kind, vocab=300)
    fast = FastDecoder.build(model)
    assert fast is not None
    assert all(layer.qkv.packed == packed for layer in fast.layers)
    rows = 3
    torch.manual_seed(1)
    ours, mask, pos = prefilled(model, rows, 12, holes=True)
    torch.manual_seed(1)
    theirs, _, _ = prefilled(model, rows, 12, holes=True)  # the same seed: the same tokens
    for step in range(40):  # past a slab growth (the slab grows in steps of SlabLayer.GROW)
        ids = torch.randint(0, 300, (rows,))
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=torch.long)], dim=1)
        with torch.no_grad():
            expected = reference_step(model, ids, mask, pos, theirs)
            got = fast(ids, mask, pos, ours)
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (step, (got - expected).abs().max())
        pos = pos + 1
    for a, b in zip(ours.layers, theirs.layers):
        assert torch.allclose(a.keys, b.keys, atol=1e-5) and torch.allclose(a.values, b.values, atol=1e-5)


def test_bf16_decode_stays_within_bf16_rounding_of_transformers():
    model = tiny("llama", vocab=300, dtype=torch.bfloat16)
    fast = FastDecoder.build(model)
    torch.manual_seed(1)
    ours, mask, pos = prefilled(model, 4, 20, holes=True)
    torch.manual_seed(1)
    theirs, _, _ = prefilled(model, 4, 20, holes=True)
    ids = torch.randint(0, 300, (4,))
    mask = torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], dim=1)
    with torch.no_grad():
        expected, got = reference_step(model, ids, mask, pos, theirs), fast(ids, mask, pos, ours)
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 0.05 * scale  # bf16 keeps ~3 significant digits; a wrong op is off by O(1)


def test_unmerged_lora_and_unknown_architectures_fall_back(tiny_model_dir):
    model, _ = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    assert FastDecoder.build(model) is None  # an active adapter outside merged_adapter: two matmuls per layer
    with merged_adapter(model):
        assert FastDecoder.build(model) is not None
    with model.disable_adapter():
        assert FastDecoder.build(model) is not None  # the base alone
    gpt2 = tiny("llama", vocab=100)
    gpt2.config.model_type = "gpt2"
    assert FastDecoder.build(gpt2) is None
    gated = tiny("llama", vocab=100)
    gated.config.hidden_act = "gelu"
    assert FastDecoder.build(gated) is None


def test_no_copy_of_the_weights_when_memory_is_short(monkeypatch):
    import icrl_lite.cpu.decode as decode

    model = tiny("llama", vocab=300)
    weights = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear))
    monkeypatch.setattr(decode, "available_memory", lambda: weights)  # the copy would take over half of it
    assert FastDecoder.build(model) is None
    monkeypatch.setattr(decode, "available_memory", lambda: 100 * weights)
    assert FastDecoder.build(model) is not None


def test_engine_tokens_and_logprobs_do_not_depend_on_the_decode_path(tiny_model_dir, tokenizer, monkeypatch):
    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    prompts = [tok("Question: where is the lighthouse?")["input_ids"], tok("A river and its towns?")["input_ids"]]
    cfg = RolloutConfig(temperature=0.0, max_turns=0, max_turn_tokens=300, max_response_tokens=301)
    calls = count_calls(monkeypatch, FastDecoder, "__call__")
    fast = RolloutEngine(model, tok, [], cfg, final_stops=[]).generate(prompts, 2)
    monkeypatch.undo()
    slow = RolloutEngine(model, tok, [], replace(cfg, fast_decode=False), final_stops=[]).generate(prompts, 2)
    assert len(calls) > 100  # the decode steps went through the lean path
    for a, b in zip(fast, slow):
        assert a.response_ids == b.response_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepacked_weights_compute_the_same_linear(dtype):
    if not can_pack(dtype, torch.device("cpu")):  # e.g. bf16 on a CPU without AVX-512: decode uses F.linear there
        pytest.skip(f"oneDNN does not prepack {dtype} weights on this CPU (the unpacked branch is tested above)")
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 64).to(dtype), torch.randn(96).to(dtype)
    packed = Linear(weight, bias, pack=True)
    assert packed.packed
    for rows in (1, 5, 32, 70):  # the packing's row hint is 32; other row counts must work too
        x = torch.randn(rows, 64).to(dtype)
        expected = torch.nn.functional.linear(x, weight, bias)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        assert torch.allclose(packed(x), expected, atol=tol * expected.abs().max(), rtol=tol)


def test_chosen_logprobs_equal_log_softmax():
    scores = torch.randn(5, 1000) * 4
    tokens = torch.randint(0, 1000, (5,))
    expected = torch.log_softmax(scores, -1).gather(-1, tokens[:, None]).squeeze(-1)
    assert torch.allclose(chosen_logprobs(scores, tokens), expected, atol=1e-5)


def test_the_slab_is_zero_past_the_filled_part():
    layer = SlabLayer()
    keys = torch.randn(2, 3, 5, 4)
    layer.update(keys, keys + 1)
    for _ in range(3):
        layer.update(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4))
    filled = layer.keys.shape[2]
    assert filled == 8 and layer.slab_k.shape[2] == 5 + SlabLayer.GROW  # grown once, at the first update
    assert layer.slab_k[:, :, filled:].abs().sum() == 0 and layer.slab_v[:, :, filled:].abs().sum() == 0
    assert torch.equal(layer.slab_k[:, :, :5], keys)


def test_a_shared_prefix_attended_as_one_block_gives_the_same_logits():
    model = tiny("llama", vocab=300)
    fast = FastDecoder.build(model)
    torch.manual_seed(1)
    rows, shared = 3, 10
    ours, mask, pos = prefilled(model, rows, 16, holes=False)
    for layer in ours.layers:  # every row holds the same first `shared` positions, as after a shared prefill
        layer.keys[:, :, :shared] = layer.keys[:1, :, :shared]
        layer.values[:, :, :shared] = layer.values[:1, :, :shared]
    mask[2, 12:14] = 0  # a hole after the prefix
    prefix = [(layer.keys[:1, :, :shared].clone(), layer.values[:1, :, :shared].clone()) for layer in ours.layers]
    theirs = type(ours)()
    for layer in ours.layers:
        copy = SlabLayer()
        copy.update(layer.keys.clone(), layer.values.clone())
        theirs.layers.append(copy)
    for step in range(5):
        ids = torch.randint(0, 300, (rows,))
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=torch.long)], dim=1)
        got, expected = fast(ids, mask, pos, ours, prefix), fast(ids, mask, pos, theirs)
        assert torch.allclose(got, expected, atol=1e-5), (step, (got - expected).abs().max())
        pos = pos + 1


def test_engine_with_a_long_shared_prompt_prefix_samples_what_transformers_samples(tiny_model_dir, monkeypatch):
    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    head = tok("A long shared instruction, the same for every question. " * 8)["input_ids"]  # past shared_prefix_min
    prompts = [head + tok(q)["input_ids"] for q in ("Where is the lighthouse?", "A river and its towns?")]
    monkeypatch.setattr(rollout, "CASCADE_MIN", 16)
    assert rollout.shared_prefix_length(prompts) >= RolloutConfig.shared_prefix_min
    calls = []
    original = FastDecoder.__call__
    monkeypatch.setattr(FastDecoder, "__call__", lambda self, *a: calls.append(a[-1] is not None) or original(self, *a))
    cfg = RolloutConfig(temperature=0.0, max_turns=0, max_turn_tokens=40, max_response_tokens=41)
    fast = RolloutEngine(model, tok, [], cfg, final_stops=[]).generate(prompts, 2)
    slow = RolloutEngine(model, tok, [], replace(cfg, fast_decode=False), final_stops=[]).generate(prompts, 2)
    assert calls and all(calls)  # every decode step attended the prefix as one block
    for a, b in zip(fast, slow):
        assert a.response_ids == b.response_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4
