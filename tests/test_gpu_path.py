"""The GPU path of the policy (policy.py, attention.py, logprobs.py), tested with CPU stand-ins: gradient checkpointing on the tiny model, mocked CUDA
capabilities for the dtype choice, fp16 on the CPU for loss scaling, a 16-bit stand-in for the 4-bit base."""

from __future__ import annotations

import importlib.machinery
import types

import pytest
import torch

from icrl_lite import attention as attention_module
from icrl_lite import policy as policy_module
from icrl_lite.cpu import bf16 as cpu_bf16
from icrl_lite.cpu import cpu_has_fast_bf16
from icrl_lite.logprobs import response_logprobs
from icrl_lite.policy import (LossScaler, ModelConfig, decoder, generation_mode, load_policy, lora_targets,
                              prepare_base, resolve_dtype, run_decoder)

CUDA = torch.device("cuda", 0)
PROJECTIONS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def randomize_lora_b(model, std: float = 0.1) -> None:
    """A non-zero adapter (a fresh one has B = 0 and changes nothing)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)


def lora_grads(model, logp: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    lora = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad((logp * mask).sum(), lora))

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def checkpointed(tiny_model_dir, tokenizer):
    """The tiny policy with gradient checkpointing on, a random adapter, a prompt and two responses."""
    torch.manual_seed(0)  # LoRA's A matrices come from the global generator: the same whatever ran before
    model, _ = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32", gradient_checkpointing=True))
    randomize_lora_b(model)
    prompt = tokenizer("Question: where is the lighthouse of Tavoustead?")["input_ids"]
    responses = [tokenizer(" It is in Treslow, by the river.")["input_ids"], tokenizer(" Unknown")["input_ids"]]
    mask = torch.zeros((2, max(map(len, responses))))  # (G, R) 1 = a real response token
    for g, r in enumerate(responses):
        mask[g, : len(r)] = 1
    return model, prompt, responses, mask


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_checkpointed_logprobs_keep_the_prompt(checkpointed, temperature):
    model, prompt, responses, mask = checkpointed
    model.train()
    policy = response_logprobs(model, prompt, responses, chunk=3, temperature=temperature)  # (G, R) checkpointed layers
    assert policy.requires_grad
    model.eval()
    with torch.no_grad():
        reference = response_logprobs(model, prompt, responses, chunk=3, temperature=temperature)  # (G, R) shared cache
    real = mask.bool()
    assert torch.allclose(policy[real], reference[real], rtol=1e-5, atol=1e-5)


def test_checkpointed_gradients_equal_the_uncheckpointed_ones(checkpointed):
    model, prompt, responses, mask = checkpointed
    model.train()
    with_checkpointing = lora_grads(model, response_logprobs(model, prompt, responses, chunk=3), mask)
    model.base_model.model.gradient_checkpointing_disable()
    try:
        without = lora_grads(model, response_logprobs(model, prompt, responses, chunk=3), mask)
    finally:
        model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for a, b in zip(with_checkpointing, without):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * b.abs().max().item())


# ---- dtype=auto -----------------------------------------------------------------------------------------
@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA device of a given compute capability that, like a real T4, claims bf16 (emulated)."""
    def with_capability(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or major >= 8)
    return with_capability


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_dtype_on_a_gpu_is_bf16_only_where_it_is_native(gpu, capability, dtype):
    gpu(*capability)  # 7.5 = T4
    assert resolve_dtype("auto", CUDA) is dtype


def test_bf16_on_a_t4_is_refused_with_the_fix(gpu):
    gpu(7, 5)
    with pytest.raises(ValueError, match="use model.dtype=fp16 or auto"):
        resolve_dtype("bf16", CUDA)


@pytest.fixture
def cpu_timings(monkeypatch):
    """Mock the matmul timer: seconds per dtype; the cached answer is cleared around the test."""
    calls = []

    def set_timings(seconds: dict) -> list:
        monkeypatch.setattr(cpu_bf16, "matmul_seconds", lambda dtype, **kw: calls.append(dtype) or seconds[dtype])
        return calls

    monkeypatch.delenv("ICRL_LITE_CPU_BF16", raising=False)
    cpu_has_fast_bf16.cache_clear()
    yield set_timings
    cpu_has_fast_bf16.cache_clear()


@pytest.mark.parametrize("bf16_seconds, fast", [
    (0.25, True),  # avx512_bf16 / AMX: 4x faster
    (80.0, False),  # AVX2 only: emulated, 80x slower, although the flags may list bf16
    (0.8, False),  # 1.25x is within noise and not worth bf16's precision
])
def test_cpu_bf16_is_chosen_by_measured_speed(cpu_timings, bf16_seconds, fast):
    cpu_timings({torch.float32: 1.0, torch.bfloat16: bf16_seconds})
    assert cpu_has_fast_bf16() is fast
    assert resolve_dtype("auto", torch.device("cpu")) is (torch.bfloat16 if fast else torch.float32)


def test_cpu_bf16_is_measured_once_per_process(cpu_timings):
    calls = cpu_timings({torch.float32: 1.0, torch.bfloat16: 0.25})
    assert cpu_has_fast_bf16() and cpu_has_fast_bf16()
    assert len(calls) == 2  # one fp32 and one bf16 measurement, then the cached answer


@pytest.mark.parametrize("value, fast", [("1", True), ("0", False)])
def test_cpu_bf16_env_override_skips_the_measurement(cpu_timings, monkeypatch, value, fast):
    calls = cpu_timings({})
    monkeypatch.setenv("ICRL_LITE_CPU_BF16", value)
    assert cpu_has_fast_bf16() is fast and not calls


# ---- fp16 loss scaling ---------------------------------------------------------------------------------
def small_policy(dtype: torch.dtype):
    """A 2-layer Llama with a 256-token vocabulary (fp16 matmuls are emulated, slow, on most CPUs) and a
    random LoRA adapter, kept in fp32 as `load_policy`'s is; the same weights for every dtype."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    base = LlamaForCausalLM(config).to(dtype)
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                  "up_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape) * 0.1)
    return model


def grpo_like_gradients(dtype: torch.dtype, scaler_enabled: bool) -> torch.Tensor:
    """Adapter gradients of a policy-gradient loss averaged over 100k tokens (a step of 128 rollouts x ~800
    tokens), through `LossScaler`."""
    model = small_policy(dtype)
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(256, (12,), generator=generator).tolist()
    responses = [torch.randint(256, (n,), generator=generator).tolist() for n in (10, 6)]
    mask = torch.zeros((2, 10))  # (G, R)
    for g, r in enumerate(responses):
        mask[g, : len(r)] = 1
    advantages = torch.tensor([1.0, -1.0])  # (G,)
    model.train()
    logp = response_logprobs(model, prompt, responses)  # (G, R)
    loss = -(advantages[:, None] * logp * mask).sum() / 100_000
    scaler = LossScaler(enabled=scaler_enabled)
    scaler.scale(loss).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    scaler.unscale_and_clip(params, max_norm=1e9)
    assert scaler.step(torch.optim.SGD(params, lr=0.0))
    return torch.cat([p.grad.flatten() for p in params])


@pytest.mark.parametrize("scaled", [True, False])
def test_fp16_gradients_match_fp32_only_with_loss_scaling(scaled):
    fp32 = grpo_like_gradients(torch.float32, scaler_enabled=False)
    fp16 = grpo_like_gradients(torch.float16, scaler_enabled=scaled)
    error = ((fp16 - fp32).norm() / fp32.norm()).item()
    if scaled:
        assert error < 0.01  # what fp16 rounding of weights and activations leaves
    else:
        assert error > 0.05  # the per-token gradients fall below fp16's normal range


@pytest.mark.parametrize("dtype, enabled", [(torch.float16, True), (torch.float32, False), (torch.bfloat16, False)])
def test_loss_scaler_is_enabled_for_fp16_models_only(dtype, enabled):
    class Model(torch.nn.Module):  # what `for_model` reads: the input embeddings (unquantized under a 4-bit base)
        def get_input_embeddings(self):
            return torch.nn.Embedding(4, 2, dtype=dtype)

    assert LossScaler.for_model(Model()).enabled is enabled


def one_param_step(scaler: LossScaler, grad: float) -> tuple[bool, float]:
    """A step on one parameter (value 1) whose scaled gradient is `grad`: (stepped, new value)."""
    param = torch.nn.Parameter(torch.ones(1))
    param.grad = torch.full((1,), grad)
    scaler.unscale_and_clip([param], max_norm=1e9)
    stepped = scaler.step(torch.optim.SGD([param], lr=1.0))
    return stepped, param.item()


def test_an_overflow_skips_the_step_and_halves_the_scale():
    scaler = LossScaler(enabled=True, init_scale=1024.0)
    assert one_param_step(scaler, float("inf")) == (False, 1.0)
    assert scaler.scale_factor == 512.0 and scaler.skipped_steps == 1
    assert one_param_step(scaler, 512.0) == (True, 0.0)  # unscaled gradient 1, lr 1


def test_the_scale_doubles_after_growth_interval_good_steps():
    scaler = LossScaler(enabled=True, init_scale=8.0, growth_interval=3)
    for _ in range(3):
        one_param_step(scaler, 1.0)
    assert scaler.scale_factor == 16.0


def test_loss_scaling_that_cannot_help_says_what_to_do():
    scaler = LossScaler(enabled=True, init_scale=1.0)
    with pytest.raises(FloatingPointError, match="model.dtype=bf16"):
        one_param_step(scaler, float("nan"))


def test_disabled_loss_scaler_changes_nothing():
    scaler = LossScaler(enabled=False)
    loss = torch.tensor(3.0)
    assert scaler.scale(loss) is loss
    assert one_param_step(scaler, 0.5) == (True, 0.5)


def test_loss_scaler_state_round_trips():
    scaler = LossScaler(enabled=True, init_scale=64.0)
    one_param_step(scaler, float("inf"))
    one_param_step(scaler, 1.0)
    restored = LossScaler(enabled=True)
    restored.load_state_dict(scaler.state_dict())
    assert restored.state_dict() == {"scale": 32.0, "good_steps": 1, "skipped_steps": 1}


# ---- 4-bit: the compute dtype all the way -------------------------------------------------------------
def rollout_cache_dtypes(model) -> tuple[torch.dtype, torch.dtype]:
    """(KV-cache dtype, hidden-state dtype) of a prefill as the rollout engine runs it."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        hidden = run_decoder(decoder(model), cache, input_ids=torch.tensor([[1, 2, 3, 4]])).last_hidden_state
    return cache.layers[0].keys.dtype, hidden.dtype


def test_base_preparation_keeps_every_weight_and_the_cache_in_the_compute_dtype(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)  # a 16-bit stand-in
    prepare_base(base, gradient_checkpointing=True)
    assert {p.dtype for p in base.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in base.parameters())
    assert base.is_gradient_checkpointing
    assert rollout_cache_dtypes(base) == (torch.bfloat16, torch.bfloat16)


def test_4bit_base_with_adapter_keeps_the_cache_in_the_compute_dtype(tiny_model_dir):
    pytest.importorskip("bitsandbytes")  # bitsandbytes >= 0.49 runs 4-bit layers on the CPU (forward only)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantized = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                                   bnb_4bit_use_double_quant=True)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, quantization_config=quantized)
    prepare_base(base, gradient_checkpointing=True)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=lora_targets(base, ["all-linear"])))
    unquantized = {p.dtype for n, p in model.named_parameters() if "lora_" not in n and p.dtype.is_floating_point}
    assert unquantized == {torch.bfloat16}  # embeddings, norms (and head): not upcast to fp32
    assert rollout_cache_dtypes(model) == (torch.bfloat16, torch.bfloat16)


# ---- unsloth: refused, before anything of it is imported -------------------------------------------------
@pytest.fixture
def fake_unsloth(monkeypatch):
    """An installed `unsloth` that records any use of it (the real one needs a GPU, and patches transformers'
    model classes for the whole process as it loads a model)."""
    calls = []

    class FastLanguageModel:
        def __getattr__(self, name):
            calls.append(name)
            raise AssertionError(f"unsloth's FastLanguageModel.{name} was used")

    module = types.ModuleType("unsloth")
    module.__spec__ = importlib.machinery.ModuleSpec("unsloth", None)
    module.FastLanguageModel = FastLanguageModel()
    monkeypatch.setitem(__import__("sys").modules, "unsloth", module)
    return calls


def test_backend_unsloth_is_refused_with_the_reason_and_the_fix(fake_unsloth, monkeypatch, tiny_model_dir):
    monkeypatch.setattr(policy_module, "resolve_device", lambda device: CUDA)
    with pytest.raises(ValueError, match="bypasses the KV cache.*use model.backend=auto.*load_in_4bit=true"):
        load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32", backend="unsloth", load_in_4bit=True),
                    max_seq_length=1536)
    assert fake_unsloth == []


@pytest.mark.parametrize("backend", ["auto", "transformers"])
def test_the_other_backends_load_without_unsloth_even_where_it_is_installed(fake_unsloth, tiny_model_dir, backend):
    model, _ = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32", backend=backend))
    assert fake_unsloth == [] and model.peft_config  # transformers + peft


def test_lora_targets_expand_all_linear_to_the_decoders_linear_layers(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert lora_targets(base, ["all-linear"]) == PROJECTIONS  # the LM head is not among them
    assert lora_targets(base, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]


def test_generation_mode_of_a_plain_model_is_eval_then_back():
    model = torch.nn.Linear(2, 2)
    with generation_mode(model):
        assert not model.training
    assert model.training


def test_a_cuda_run_asks_for_expandable_allocator_segments_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    policy_module.expandable_cuda_segments()
    assert policy_module.os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    policy_module.expandable_cuda_segments()
    assert policy_module.os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"


def test_load_policy_sets_the_allocator_before_loading_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(policy_module, "resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(policy_module, "expandable_cuda_segments", lambda: calls.append("allocator"))

    def stop(*args, **kwargs):  # nothing past the dtype is needed to see the order
        calls.append("dtype")
        raise RuntimeError("stop")

    monkeypatch.setattr(policy_module, "resolve_dtype", stop)
    with pytest.raises(RuntimeError, match="stop"):
        policy_module.load_policy(policy_module.ModelConfig(dtype="fp32"))
    assert calls == ["allocator", "dtype"]


# ---- attention on a GPU: grouped KV heads, never copied per query head in decode steps -------------------
@pytest.fixture
def gpu_attention_path(monkeypatch, tiny_model_dir):
    """The tiny base in fp32 with the policy's attention forced onto its GPU path, and an eager copy (the
    reference); records the KV heads each attention call receives: ("grouped" | "fused", KV heads, queries)."""
    from transformers import AutoModelForCausalLM
    from transformers.integrations import sdpa_attention

    calls = []
    grouped, fused = attention_module.grouped_attention, sdpa_attention.sdpa_attention_forward

    def spy_grouped(query, key, *args, **kwargs):
        calls.append(("grouped", key.shape[1], query.shape[2]))
        return grouped(query, key, *args, **kwargs)

    def spy_fused(module, query, key, *args, **kwargs):
        calls.append(("fused", key.shape[1], query.shape[2]))
        return fused(module, query, key, *args, **kwargs)

    monkeypatch.setattr(attention_module, "attends_on_cpu", lambda query: False)
    monkeypatch.setattr(attention_module, "grouped_attention", spy_grouped)
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", spy_fused)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                                  attn_implementation=attention_module.register_attention())
    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager")
    return policy.eval(), eager.eval(), calls


def prefill_and_decode(model, prompts: list[list[int]], token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, V) after a left-padded prefill of `prompts`, then after one decode step of `token` per row,
    run as the rollout engine runs them (a mask over the cache, per-row positions)."""
    from transformers import DynamicCache

    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # (B, P)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])  # (B, P)
    cache = DynamicCache()
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                      **{policy_module.cache_keyword(type(model)): cache}).logits[:, -1]
        mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=torch.long)], dim=1)  # (B, P + 1)
        step = model(input_ids=torch.full((len(prompts), 1), token), attention_mask=mask,
                     position_ids=torch.tensor([[len(p)] for p in prompts]),
                     **{policy_module.cache_keyword(type(model)): cache}).logits[:, -1]
    return first, step


def test_gpu_path_decodes_on_unrepeated_kv_heads_as_eager_attention_does(gpu_attention_path):
    policy, eager, calls = gpu_attention_path
    prompts = [list(range(5, 17)), list(range(40, 47))]  # 12 and 7 tokens: a padded, masked prefill
    got = prefill_and_decode(policy, prompts, token=99)
    assert [c[0] for c in calls] == ["grouped"] * 4  # 2 layers x (prefill, decode step)
    assert {c[1] for c in calls} == {policy.config.num_key_value_heads} != {policy.config.num_attention_heads}
    expected = prefill_and_decode(eager, prompts, token=99)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_gpu_path_keeps_the_fused_kernel_for_long_queries(gpu_attention_path):
    policy, eager, calls = gpu_attention_path
    prompts = [list(range(5, 5 + attention_module.SHORT_QUERY + 8)), list(range(100, 135))]  # past SHORT_QUERY, padded
    got = prefill_and_decode(policy, prompts, token=7)
    assert [c[0] for c in calls] == ["fused", "fused", "grouped", "grouped"]  # the prefill, then the decode step
    assert all(c[1] == policy.config.num_key_value_heads for c in calls if c[0] == "grouped")
    expected = prefill_and_decode(eager, prompts, token=7)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_gpu_path_scores_with_gradients_through_the_fused_kernel(gpu_attention_path):
    policy, _, calls = gpu_attention_path
    policy.train()
    policy(input_ids=torch.tensor([[5, 6, 7]]), attention_mask=torch.tensor([[0, 1, 1]])).logits.sum().backward()
    assert [c[0] for c in calls] == ["fused", "fused"]  # the update's backward: the kernel's, not two matmuls'


def decode_attention_inputs(scale: float) -> tuple[torch.Tensor, ...]:
    """query (3, 8, 1, 64), key/value (3, 2, 20, 64) with entries of about `scale`, a bool mask (3, 1, 1, 20)."""
    generator = torch.Generator().manual_seed(0)
    query, key = (torch.randn(shape, generator=generator) * scale for shape in [(3, 8, 1, 64), (3, 2, 20, 64)])
    value = torch.randn(3, 2, 20, 64, generator=generator)
    mask = torch.rand(3, 1, 1, 20, generator=generator) > 0.3  # True = attend
    mask[..., 0] = True
    return query, key, value, mask


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_path_decode_attention_in_half_precision_matches_fp32(monkeypatch, dtype):
    monkeypatch.setattr(attention_module, "attends_on_cpu", lambda query: False)
    query, key, value, mask = (t.to(dtype) if t.is_floating_point() else t for t in decode_attention_inputs(1.0))
    with torch.no_grad():
        got, _ = attention_module.sdpa_gqa(types.SimpleNamespace(training=False), query, key, value, mask)  # (B, 1, H, d)
    expected = torch.nn.functional.scaled_dot_product_attention(query.float(), key.float(), value.float(),
                                                                attn_mask=mask, enable_gqa=True).transpose(1, 2)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected, rtol=0.02, atol=0.02)


def test_gpu_path_fp16_scores_do_not_overflow_where_the_unscaled_dot_products_would(monkeypatch):
    monkeypatch.setattr(attention_module, "attends_on_cpu", lambda query: False)
    query, key, value, mask = (t.half() if t.is_floating_point() else t for t in decode_attention_inputs(100.0))
    assert torch.isinf(query @ key.repeat_interleave(4, dim=1).transpose(-1, -2)).any()  # q.k past 65,504
    with torch.no_grad():
        got, _ = attention_module.sdpa_gqa(types.SimpleNamespace(training=False), query, key, value, mask)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("four_bit", [False, True])
def test_a_cuda_base_loads_straight_onto_the_gpu(monkeypatch, tiny_model_dir, four_bit):
    from transformers import AutoModelForCausalLM

    asked = {}
    monkeypatch.setattr(policy_module, "resolve_device", lambda device: torch.device("cuda", 0))
    monkeypatch.setattr(policy_module, "resolve_dtype", lambda dtype, device: torch.bfloat16)
    monkeypatch.setattr(policy_module, "expandable_cuda_segments", lambda: None)

    def from_pretrained(path, **kwargs):  # what transformers is asked for is the point; stop there
        asked.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    find_spec = policy_module.importlib.util.find_spec
    monkeypatch.setattr(policy_module.importlib.util, "find_spec",  # bitsandbytes "installed"
                        lambda name, *args: object() if name == "bitsandbytes" else find_spec(name, *args))
    with pytest.raises(RuntimeError, match="stop"):
        policy_module.load_policy(policy_module.ModelConfig(name=str(tiny_model_dir), load_in_4bit=four_bit))
    assert asked["device_map"] == {"": "cuda:0"}  # not loaded in host memory, then moved
    assert ("quantization_config" in asked) == four_bit
