"""The C++ CPU kernels (icrl_lite/cpu/csrc/cpu_kernels.cpp): each kernel against the torch ops it replaces, a whole
decode step against transformers' forward, the engine and the LM head's log-probs through them, and the fallbacks.

Every branch runs on every kind of CPU: the kernel tests take both builds (`native`: -march=native, vectorised where
the CPU has AVX-512 BF16; `portable`: built without it), and the tests through a model force the kernels on with
ICRL_LITE_KERNELS=always (the vectorised body where the CPU has it, the portable loops elsewhere)."""

import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from icrl_lite.cpu import kernels
from icrl_lite.cpu.decode import FastDecoder
from icrl_lite.rollout import RolloutConfig, RolloutEngine

from test_decode import count_calls, prefilled, reference_step, tiny

pytestmark = pytest.mark.usefixtures("one_thread")
BF16 = torch.bfloat16


def has_avx512_bf16() -> bool:
    return "avx512_bf16" in kernels.cpu_flags()


def needs_compiler():
    """Where a compiler and ninja are here the kernels must build: a broken build fails, not skips. CI installs ninja
    (the test extras) and has a compiler, so there a missing one fails too: no kernel branch goes untested quietly."""
    if shutil.which("c++") is None or shutil.which("ninja") is None:
        if os.environ.get("CI"):
            pytest.fail("CI has no C++ compiler or ninja: the kernels' tests would be skipped (pip install ninja)")
        pytest.skip("no C++ compiler or ninja: the kernels cannot be built here (decode uses torch ops)")


@pytest.fixture(scope="module", params=["native", "portable"])
def ext(request):
    """Each build of the kernels: native (vectorised exactly where the CPU has AVX-512 BF16) and portable."""
    needs_compiler()
    if request.param == "native":
        module = kernels.build()
        assert module.vectorized() == has_avx512_bf16()
    else:
        module = kernels.build(kernels.portable_flags())
        assert not module.vectorized()
    return module


@pytest.fixture
def forced(monkeypatch):
    """The kernels on whatever this CPU is (ICRL_LITE_KERNELS=always): the code paths that use them run here too."""
    needs_compiler()
    monkeypatch.setenv("ICRL_LITE_KERNELS", "always")
    kernels.cpu_kernels.cache_clear()
    assert kernels.cpu_kernels() is not None
    yield kernels.cpu_kernels()
    kernels.cpu_kernels.cache_clear()


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in bf16 steps between two bf16 tensors of the same signs."""
    return (a.view(torch.int16).int() - b.view(torch.int16).int()).abs()


def test_add_rms_norm_adds_in_place_and_normalises_as_transformers(ext):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    norm = LlamaRMSNorm(200, eps=1e-5).to(BF16)
    norm.weight.data = (1 + 0.3 * torch.randn(200)).to(BF16)
    h, delta = torch.randn(7, 200).to(BF16), torch.randn(7, 200).to(BF16)
    expected_h = h + delta  # bf16 add: fp32 sum rounded once
    with torch.no_grad():
        expected = norm(expected_h)
    got = ext.add_rms_norm(h, delta, norm.weight.data, 1e-5)
    assert torch.equal(h, expected_h)  # updated in place, bit for bit
    assert ulps(got, expected).max() <= 1  # summation order of the mean square only
    assert (got == expected).float().mean() > 0.95
    again = ext.add_rms_norm(h, None, norm.weight.data, 1e-5)  # no residual: h untouched
    assert torch.equal(h, expected_h) and torch.equal(again, got)


def test_silu_mul_is_silu_of_gate_times_up(ext):
    torch.manual_seed(0)
    gate_up = (3 * torch.randn(5, 2 * 100)).to(BF16)  # 100: a 16-lane body and a tail
    gate, up = gate_up.chunk(2, dim=-1)
    got = ext.silu_mul(gate_up)
    assert got.shape == (5, 100)
    assert ulps(got, F.silu(gate) * up).max() <= 1
    assert (got == F.silu(gate) * up).float().mean() > 0.95


@pytest.mark.parametrize("dim", [64, 48])  # 64: the AVX-512 loops; 48: the portable ones
def test_attention_writes_rotated_keys_and_attends_like_float64(ext, dim):
    torch.manual_seed(0)
    rows, heads, kv_heads, length, capacity = 3, 6, 2, 37, 50
    group = heads // kv_heads
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim).to(BF16)
    angle = torch.randn(rows, dim // 2).repeat(1, 2)
    cos, sin = angle.cos().to(BF16), angle.sin().to(BF16)
    sin_signed = torch.cat([-sin[:, : dim // 2], sin[:, dim // 2:]], dim=-1)
    slab_k = torch.randn(rows, kv_heads, capacity, dim).to(BF16)
    slab_v = torch.randn(rows, kv_heads, capacity, dim).to(BF16)
    before_k, before_v = slab_k.clone(), slab_v.clone()
    mask = torch.zeros(rows, length + 1)
    mask[0, :5] = float("-inf")  # left padding
    mask[1, 10:20] = float("-inf")  # a hole
    mask[2, length] = float("-inf")  # this step's own token not attended
    scale = dim ** -0.5
    out = ext.attention(qkv, cos, sin_signed, slab_k, slab_v, length, mask, heads, kv_heads, scale)

    def rotary(x):  # transformers' apply_rotary_pos_emb in bf16, op by op
        rotated = torch.cat([-x[..., dim // 2:], x[..., : dim // 2]], dim=-1)
        return x * cos[:, None] + rotated * sin[:, None]

    q = rotary(qkv[:, : heads * dim].view(rows, heads, dim))
    k = rotary(qkv[:, heads * dim:(heads + kv_heads) * dim].view(rows, kv_heads, dim))
    v = qkv[:, (heads + kv_heads) * dim:].view(rows, kv_heads, dim)
    assert torch.equal(slab_k[:, :, length], k) and torch.equal(slab_v[:, :, length], v)
    assert torch.equal(slab_k[:, :, :length], before_k[:, :, :length])  # nothing else written
    assert torch.equal(slab_k[:, :, length + 1:], before_k[:, :, length + 1:])
    assert torch.equal(slab_v[:, :, length + 1:], before_v[:, :, length + 1:])
    keys = slab_k[:, :, : length + 1].double().repeat_interleave(group, dim=1)  # (B, H, K, d)
    values = slab_v[:, :, : length + 1].double().repeat_interleave(group, dim=1)
    scores = torch.einsum("bhd,bhkd->bhk", q.double(), keys) * scale + mask.double()[:, None]
    expected = torch.einsum("bhk,bhkd->bhd", scores.softmax(-1), values).reshape(rows, heads * dim)
    assert out.dtype == BF16 and out.shape == (rows, heads * dim)
    assert (out.double() - expected).abs().max() <= 0.01 * expected.abs().max()  # bf16 output: ~3 digits


def test_a_fully_masked_row_attends_to_nothing(ext):
    dim, rows, heads, kv_heads, length = 64, 2, 2, 1, 8
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim).to(BF16)
    ones = torch.ones(rows, dim).to(BF16)
    slab = [torch.randn(rows, kv_heads, 16, dim).to(BF16) for _ in range(2)]
    mask = torch.zeros(rows, length + 1)
    mask[1] = float("-inf")
    out = ext.attention(qkv, ones, torch.zeros_like(ones), *slab, length, mask, heads, kv_heads, 0.125)
    assert torch.isfinite(out.float()).all() and torch.equal(out[1], torch.zeros_like(out[1]))


def test_attention_refuses_a_slab_without_room(ext):
    dim = 64
    qkv = torch.randn(1, 3 * dim).to(BF16)
    cos = torch.ones(1, dim).to(BF16)
    slab = [torch.zeros(1, 1, 8, dim).to(BF16) for _ in range(2)]
    with pytest.raises(RuntimeError, match="no room"):
        ext.attention(qkv, cos, cos, *slab, 8, torch.zeros(1, 9), 1, 1, 0.125)


def test_a_kernel_decode_step_stays_within_bf16_rounding_of_transformers(forced):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)  # head_dim 64 and 3 query heads per KV head, as SmolLM2
    config = AutoConfig.for_model("llama", vocab_size=300, hidden_size=384, intermediate_size=256, num_hidden_layers=2,
                                  num_attention_heads=6, num_key_value_heads=2, head_dim=64,
                                  max_position_embeddings=512, tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(config).to(BF16).eval()
    fast = FastDecoder.build(model)
    assert fast.kernels is not None
    calls = []
    step = fast.kernel_step
    fast.kernel_step = lambda *a: calls.append(1) or step(*a)
    torch.manual_seed(1)
    ours, mask, pos = prefilled(model, 4, 20, holes=True)
    torch.manual_seed(1)
    theirs, _, _ = prefilled(model, 4, 20, holes=True)
    for _ in range(40):  # past a slab growth
        ids = torch.randint(0, 300, (4,))
        mask = torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], dim=1)
        with torch.no_grad():
            expected, got = reference_step(model, ids, mask, pos, theirs), fast(ids, mask, pos, ours)
        assert (got - expected).abs().max() <= 0.05 * expected.abs().max()
        pos = pos + 1
    assert len(calls) == 40
    for a, b in zip(ours.layers, theirs.layers):  # the same cache, up to bf16 rounding of what fed it
        assert a.keys.shape == b.keys.shape
        assert (a.keys.float() - b.keys.float()).abs().max() <= 0.05 * b.keys.float().abs().max()


def test_the_engine_samples_through_the_kernels_and_scores_what_it_samples(forced, tiny_model_dir, monkeypatch):
    from icrl_lite.logprobs import response_logprobs
    from icrl_lite.policy import ModelConfig, load_policy

    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="bf16", device="cpu"))  # the CPU kernels' path
    prompts = [tok("Question: where is the lighthouse?")["input_ids"], tok("A river and its towns?")["input_ids"]]
    cfg = RolloutConfig(temperature=1.0, max_turns=0, max_turn_tokens=60, max_response_tokens=61)
    calls = count_calls(monkeypatch, FastDecoder, "kernel_step")
    rollouts = RolloutEngine(model, tok, [], cfg, final_stops=[]).generate(prompts, 2, torch.Generator().manual_seed(0))
    assert len(calls) > 50
    for r in rollouts:
        with torch.no_grad():
            scored = response_logprobs(model, r.prompt_ids, [r.response_ids])[0, : len(r.logprobs)]
        assert (scored - torch.tensor(r.logprobs)).abs().mean() < 0.05  # sampler vs loss log-probs: bf16 noise


def test_kernels_off_by_environment(monkeypatch):
    monkeypatch.setenv("ICRL_LITE_KERNELS", "0")
    kernels.cpu_kernels.cache_clear()
    try:
        assert kernels.cpu_kernels() is None
        model = tiny("llama", vocab=100, dtype=BF16)
        assert FastDecoder.build(model).kernels is None  # the torch ops
    finally:
        kernels.cpu_kernels.cache_clear()


def test_a_failed_build_falls_back_to_torch_ops_and_says_why(monkeypatch, capsys):
    def broken(flags=None):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(kernels, "build", broken)
    kernels.cpu_kernels.cache_clear()
    try:
        assert kernels.cpu_kernels() is None
        err = capsys.readouterr().err
        assert "Ninja is required" in err and "ICRL_LITE_KERNELS=0" in err
    finally:
        kernels.cpu_kernels.cache_clear()



def test_a_lock_left_by_a_killed_build_is_cleared_and_a_live_one_waited_for(tmp_path, capsys):
    lock = tmp_path / "lock"
    lock.touch()
    os.utime(lock, (0, 0))  # created long ago: its build was killed (torch would wait on it forever)
    kernels.wait_for_build_lock(tmp_path, stale_s=600)
    assert not lock.exists() and "interrupted" in capsys.readouterr().err

    lock.touch()  # fresh: another process is building; it is waited for, then cleared once stale
    kernels.wait_for_build_lock(tmp_path, stale_s=1.5)
    err = capsys.readouterr().err
    assert not lock.exists() and "waiting for another process's build" in err and "interrupted" in err

    kernels.wait_for_build_lock(tmp_path / "never-built")  # no lock, no folder: nothing to wait for

@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_head_lse_is_logsumexp_and_target_logit_of_the_scaled_logits(ext, temperature):
    torch.manual_seed(0)
    logits = (4 * torch.randn(6, 1000)).to(BF16)  # 1000: a 16-lane body and a tail
    targets = torch.randint(0, 1000, (6,))
    stats = ext.head_lse(logits, targets, 1 / temperature)
    scaled = logits.double() / temperature
    assert torch.allclose(stats[:, 0].double(), torch.logsumexp(scaled, -1), atol=1e-4)
    assert torch.allclose(stats[:, 1].double(), scaled.gather(-1, targets[:, None])[:, 0], atol=1e-5)


def test_head_grad_is_g_times_onehot_minus_softmax_even_for_confident_targets(ext):
    torch.manual_seed(0)
    logits = torch.randn(5, 700)
    targets = torch.tensor([3, 10, 200, 699, 0])
    logits[torch.arange(5), targets] = torch.tensor([2.0, 9.0, 12.0, 14.0, 16.0])  # p_t from ~0.2 to ~0.99999
    logits = logits.to(BF16)
    grad = torch.randn(5)
    lse = torch.logsumexp(logits.double(), -1)
    out = ext.head_grad(logits.clone(), lse.float(), targets, grad, 1.0)
    p = torch.softmax(logits.double(), -1)
    expected = -grad.double()[:, None] * p
    expected[torch.arange(5), targets] += grad.double()
    assert (out.double() - expected).abs().max() <= 0.01 * expected.abs().max()
    # the target's entry g (1 - p_t) to bf16 precision, where forming 1 - p_t in bf16 would give 0
    target = out[torch.arange(5), targets].double()
    want = expected[torch.arange(5), targets]
    assert ((target - want).abs() <= 0.01 * want.abs()).all(), (target, want)
    with pytest.raises(RuntimeError, match="outside the vocabulary"):
        ext.head_lse(logits, torch.tensor([0, 1, 2, 3, 700]), 1.0)


def test_head_logprobs_through_the_kernels_equal_the_torch_path(forced, monkeypatch):
    from icrl_lite import logprobs as logprobs_module

    torch.manual_seed(0)
    weight = (0.05 * torch.randn(3000, 96)).to(BF16)
    hidden = torch.randn(150, 96).to(BF16)  # 150: blocks of 64 and a remainder
    targets = torch.randint(0, 3000, (150,))
    grad = torch.randn(150)
    used = []
    real = logprobs_module.head_kernels
    results = {}
    for mode in ("kernels", "torch"):
        monkeypatch.setattr(logprobs_module, "head_kernels",
                            (lambda h, w: used.append(1) or real(h, w)) if mode == "kernels" else (lambda h, w: None))
        h = hidden.clone().requires_grad_()
        logp = logprobs_module.HeadLogprobs.apply(h, weight, targets, 1 / 0.8, 64, False)
        logp.backward(grad)
        results[mode] = (logp.detach(), h.grad.float())
    assert len(used) == 2  # forward and backward
    (logp, dh), (ref_logp, ref_dh) = results["kernels"], results["torch"]
    assert torch.allclose(logp, ref_logp, atol=1e-4)
    assert (dh - ref_dh).abs().max() <= 0.01 * ref_dh.abs().max()


def test_rms_norm_function_matches_transformers_forward_and_float64_gradients(ext):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from icrl_lite.cpu.fused import RMSNormFunction

    torch.manual_seed(0)
    norm = LlamaRMSNorm(100, eps=1e-5).to(BF16)
    norm.weight.data = (1 + 0.3 * torch.randn(100)).to(BF16)
    x = torch.randn(3, 7, 100).to(BF16).requires_grad_()
    grad = torch.randn(3, 7, 100).to(BF16)
    y = RMSNormFunction.apply(x, norm.weight, 1e-5, ext)
    with torch.no_grad():
        expected = norm(x)
    assert ulps(y.detach(), expected).max() <= 1 and (y.detach() == expected).float().mean() > 0.95
    y.backward(grad)
    x64 = x.detach().double().requires_grad_()
    (norm.weight.double() * x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5)).backward(grad.double())
    assert (x.grad.double() - x64.grad).abs().max() <= 0.01 * x64.grad.abs().max()


def test_silu_mul_function_matches_float64_forward_and_gradients(ext):
    from icrl_lite.cpu.fused import SiluMulFunction

    torch.manual_seed(0)
    gate = (3 * torch.randn(4, 5, 70)).to(BF16).requires_grad_()
    up = torch.randn(4, 5, 70).to(BF16).requires_grad_()
    grad = torch.randn(4, 5, 70).to(BF16)
    out = SiluMulFunction.apply(gate, up, ext)
    assert ulps(out.detach(), F.silu(gate.detach()) * up.detach()).max() <= 1
    out.backward(grad)
    g64, u64 = gate.detach().double().requires_grad_(), up.detach().double().requires_grad_()
    (F.silu(g64) * u64).backward(grad.double())
    for got, want in ((gate.grad, g64.grad), (up.grad, u64.grad)):
        assert (got.double() - want).abs().max() <= 0.01 * want.abs().max()


def test_a_model_through_the_fused_ops_trains_like_transformers_own(forced, monkeypatch):
    from transformers import AutoConfig, AutoModelForCausalLM

    from icrl_lite.cpu import fused as fused_module
    from icrl_lite.cpu.fused import use_fused_ops

    used = []
    for function in (fused_module.RMSNormFunction, fused_module.SiluMulFunction):
        real = function.apply
        monkeypatch.setattr(function, "apply", staticmethod(lambda *a, real=real: used.append(1) or real(*a)))

    def model():
        torch.manual_seed(0)
        config = AutoConfig.for_model("llama", vocab_size=200, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
        m = AutoModelForCausalLM.from_config(config).to(BF16)
        for p in m.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
        for name, p in m.named_parameters():
            p.requires_grad_("norm" not in name)  # norms frozen, as under LoRA
        return m

    ids = torch.randint(0, 200, (2, 12))
    plain, fused = model(), model()
    assert use_fused_ops(fused) == 2 * 2 + 1 + 2  # two norms per layer, the final norm, one MLP per layer
    for m in (plain, fused):
        m(input_ids=ids).logits.float().pow(2).mean().backward()
    assert len(used) == 2 * 2 + 1 + 2  # the fused model's norms and MLPs ran through the kernels
    (a, b) = [torch.cat([p.grad.float().flatten() for p in m.parameters() if p.grad is not None]) for m in (plain, fused)]
    assert (a - b).norm() <= 0.05 * a.norm()  # bf16 rounding in different places, nothing more
    fp32 = model().float()
    use_fused_ops(fp32)
    before = fp32(input_ids=ids).logits
    assert torch.equal(before, model().float()(input_ids=ids).logits)  # fp32: transformers' own forward


class FakeBuild:
    def __init__(self, vectorized: bool):
        self.is_vectorized = vectorized

    def vectorized(self) -> bool:
        return self.is_vectorized


@pytest.mark.parametrize("vectorized", [True, False])
@pytest.mark.parametrize("setting, used", [("auto", "if vectorized"), ("1", "if vectorized"), ("always", "yes"),
                                           ("portable", "yes"), ("off", "no")])
def test_the_mode_decides_which_build_is_used(monkeypatch, vectorized, setting, used):
    builds = []
    monkeypatch.setattr(kernels, "build", lambda flags=None: builds.append(flags) or FakeBuild(vectorized))
    monkeypatch.setattr(kernels, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setenv("ICRL_LITE_KERNELS", setting)
    kernels.cpu_kernels.cache_clear()
    try:
        module = kernels.cpu_kernels()
    finally:
        kernels.cpu_kernels.cache_clear()
    expected = {"yes": True, "no": False, "if vectorized": vectorized}[used]
    assert (module is not None) == expected
    if setting == "off":
        assert builds == []
    else:  # portable compiles the scalar body even on a CPU with AVX-512 BF16
        assert ("-DICRL_LITE_PORTABLE" in builds[0]) == (setting == "portable")


def test_portable_flags_are_the_native_ones_where_the_cpu_lacks_avx512_bf16(monkeypatch):
    monkeypatch.setattr(kernels, "cpu_flags", lambda: {"avx2", "fma"})
    assert kernels.portable_flags() == kernels.FLAGS  # one build serves both modes there
    monkeypatch.setattr(kernels, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert "-DICRL_LITE_PORTABLE" in kernels.portable_flags()
    assert kernels.build_name(kernels.portable_flags()) != kernels.build_name(kernels.FLAGS)


def test_an_unknown_mode_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("ICRL_LITE_KERNELS", "fast")
    kernels.cpu_kernels.cache_clear()
    try:
        with pytest.raises(ValueError, match="always, portable"):
            kernels.cpu_kernels()
    finally:
        kernels.cpu_kernels.cache_clear()
