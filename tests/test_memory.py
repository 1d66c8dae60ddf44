"""The memory estimate: exact counts, measured CPU peaks of a small model, the startup report, the GPU configs."""

from __future__ import annotations

import functools

import pytest
import torch

from icrl_lite.config import load_config
from icrl_lite.logprobs import response_logprobs
from icrl_lite.memory import GB, estimate_memory, memory_report, slab_capacity
from icrl_lite.policy import ModelConfig, load_policy

SMALL = dict(vocab_size=4096, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, tie_word_embeddings=True)
QWEN_3B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, head_dim=128, tie_word_embeddings=True)  # Qwen2.5-3B-Instruct's config.json
QWEN_1_5B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, head_dim=128, tie_word_embeddings=True)  # Qwen2.5-1.5B-Instruct's
QWEN_0_5B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, head_dim=64, tie_word_embeddings=True)  # Qwen2.5-0.5B-Instruct's
SHAPES = {"Qwen/Qwen2.5-3B-Instruct": QWEN_3B, "Qwen/Qwen2.5-1.5B-Instruct": QWEN_1_5B, "Qwen/Qwen2.5-0.5B-Instruct": QWEN_0_5B}
WITHIN = 1.5  # estimate / measured peak within [1 / WITHIN, WITHIN]; measured 1.27 here (fp32), 1.42 in bf16

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def small_dir(tmp_path_factory, tokenizer):
    """A 4-layer random Llama, big enough for its cache and activations to dominate the allocator's noise."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small-llama")
    LlamaForCausalLM(LlamaConfig(**SMALL, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def small_policy(small_dir):
    return load_policy(ModelConfig(name=str(small_dir), dtype="fp32"))


def peak_allocated(fn, setup=None) -> int:
    """Peak bytes of CPU tensors allocated while `fn` runs, above what was allocated before (torch's profiler
    reports every allocation and free: the counterpart of torch.cuda.max_memory_allocated). With `setup`, `fn(setup())`
    runs and the peak counts what setup's tensors still hold too (the profiler sees only frees of what it saw made)."""
    from torch.profiler import ProfilerActivity, profile

    marker = 7777  # bytes of an allocation that marks where `fn` starts

    def run():
        state = setup() if setup is not None else None
        torch.empty(marker, dtype=torch.uint8)
        fn(state) if setup is not None else fn()

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    live = peak = 0
    started = setup is None
    for event in sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        started = started or event.self_cpu_memory_usage == marker
        live += event.self_cpu_memory_usage
        peak = max(peak, live) if started else peak
    return peak


def test_weights_and_adapter_are_counted_exactly(small_dir):
    model, _ = load_policy(ModelConfig(name=str(small_dir), dtype="fp32", lora_rank=8))
    base = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" not in n)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    estimate = estimate_memory(SMALL, torch.float32, lora_rank=8, target_modules=ModelConfig().lora_target_modules)
    assert estimate.weights == base
    assert estimate.adapter == 16 * lora  # fp32 weight, gradient and AdamW's two moments


@pytest.fixture(scope="module")
def rollout_peak(small_policy):
    """The measured peak of a rollout batch without tools (4 prompts x 4 samples, 200 + 24 tokens) by the engine's
    merge_lora and fast_decode, each measured once."""
    from icrl_lite.rollout import RolloutConfig, RolloutEngine

    model, tok = small_policy

    @functools.cache
    def measure(merge_lora: bool = True, fast_decode: bool = True) -> int:
        generator = torch.Generator().manual_seed(0)
        ids = [torch.randint(3, SMALL["vocab_size"], (200,), generator=generator).tolist() for _ in range(4)]
        cfg = RolloutConfig(max_turns=0, max_turn_tokens=24, max_response_tokens=24, temperature=1.0,
                            merge_lora=merge_lora, fast_decode=fast_decode)
        engine = RolloutEngine(model, tok, [], cfg)
        return peak_allocated(lambda: engine.generate(ids, 4, generator))

    return measure


def small_rollout_estimate(dtype=torch.float32, **knobs):
    return estimate_memory(SMALL, dtype, prompts_per_step=4, num_generations=4, prompt_tokens=200, max_response_tokens=24,
                           max_turns=0, cuda=False, **knobs)


def test_rollout_estimate_matches_the_measured_cpu_peak(rollout_peak):
    measured = rollout_peak()
    estimate = small_rollout_estimate()
    assert 1 / WITHIN < (estimate.rollout_peak - estimate.weights - estimate.adapter) / measured < WITHIN


def test_the_merged_adapter_stash_is_the_measured_cost_of_merging(rollout_peak):
    stash = rollout_peak(fast_decode=False) - rollout_peak(merge_lora=False)  # unmerged: no fast decoder either
    assert small_rollout_estimate(merge_lora=False).merge_stash == 0
    assert 0.9 < small_rollout_estimate(fast_decode=False).merge_stash / stash < 1.1  # measured 1.00


def test_the_fast_decoder_weight_copy_is_its_measured_cost(rollout_peak):
    from icrl_lite.cpu.decode import can_pack

    if not can_pack(torch.float32, torch.device("cpu")):  # unpacked, single weights are not copied: the estimate bounds it
        pytest.skip("this torch build does not reorder weights for oneDNN")
    copy = rollout_peak() - rollout_peak(fast_decode=False)
    assert small_rollout_estimate(fast_decode=False).decode_weights == 0
    assert 0.9 < small_rollout_estimate().decode_weights / copy < 1.1  # measured 0.98


@pytest.mark.parametrize("idle_rows", [0, 1, 8])
def test_a_forced_chunk_fed_by_some_rows_costs_their_cache_copy_as_estimated(small_policy, idle_rows):
    """RolloutEngine._forward_rows runs a forced chunk (tool output) on a copy of the fed rows' cache: the peak of
    that moment is the cache, its copy, one layer regrown and the chunk's activations."""
    from transformers import DynamicCache

    from icrl_lite.policy import generation_mode
    from icrl_lite.rollout import RolloutConfig, RolloutEngine, SlabLayer

    model, tok = small_policy
    rows, prompt_tokens, width = 16, 200, 40
    engine = RolloutEngine(model, tok, [], RolloutConfig(max_turns=1))
    generator = torch.Generator().manual_seed(0)

    def setup():
        cache = DynamicCache()
        cache.layer_class_to_replicate = SlabLayer
        ids = torch.randint(3, SMALL["vocab_size"], (rows, prompt_tokens), generator=generator)  # (B, P)
        _, pos = engine._forward(ids, torch.ones_like(ids), torch.zeros(rows, dtype=torch.long), cache, None)
        return cache, pos, torch.ones_like(ids)

    def chunk(state):
        cache, pos, attn = state
        step = torch.randint(3, SMALL["vocab_size"], (rows, width), generator=generator)  # (B, W)
        mask = torch.ones_like(step)
        mask[:idle_rows] = 0
        if idle_rows:
            engine._forward_rows(torch.arange(idle_rows, rows), step, mask, pos, cache, attn)
        else:
            engine._forward(step, mask, pos, cache, attn)

    with torch.no_grad(), generation_mode(model):
        measured = peak_allocated(chunk, setup)
    estimate = estimate_memory(SMALL, torch.float32, prompts_per_step=rows, num_generations=1, prompt_tokens=prompt_tokens,
                               max_response_tokens=width, max_turns=1, max_obs_tokens=width, cuda=False)
    fed = rows - idle_rows
    assert estimate.kv_rows_copy == (rows - 1) * (prompt_tokens + width) * 2 * 4 * 128 * 4  # at worst all rows but one
    copy = estimate.kv_rows_copy * fed // (rows - 1) if idle_rows else 0
    work = fed * width * (4 * 128 + 3 * 512) * 4  # the chunk's one-layer activations, as estimate_memory counts them
    moment = estimate.kv_cache + estimate.kv_regrow + copy + work
    assert 1 / 1.25 < moment / measured < 1.25  # measured 1.05-1.18 (fp32 and bf16)


@pytest.mark.parametrize("checkpointing, chunk", [(False, 8), (True, 8), (False, 64)])
def test_update_estimate_matches_the_measured_cpu_peak(small_policy, checkpointing, chunk):
    model = small_policy[0]
    if checkpointing:
        model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    prompt_tokens, response_tokens, micro_batch = 200, 100, 4
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, SMALL["vocab_size"], (prompt_tokens,), generator=generator).tolist()
    responses = [torch.randint(3, SMALL["vocab_size"], (response_tokens,), generator=generator).tolist() for _ in range(micro_batch)]
    model.train()

    def step():
        response_logprobs(model, prompt, responses, chunk).sum().backward()

    try:
        step()  # the gradients' buffers exist from the first step on, as in training
        measured = peak_allocated(step)
    finally:
        model.base_model.model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)
    estimate = estimate_memory(SMALL, torch.float32, prompts_per_step=1, num_generations=micro_batch,
                               prompt_tokens=prompt_tokens, max_response_tokens=response_tokens, logprob_chunk=chunk,
                               micro_batch_size=micro_batch, gradient_checkpointing=checkpointing, cuda=False)
    assert 1 / WITHIN < (estimate.activations + estimate.logprob_chunk) / measured < WITHIN


def config(name: str):
    from icrl_lite.config import CONFIG_DIR
    from icrl_lite.trainer import TrainConfig

    return load_config(TrainConfig, CONFIG_DIR / f"{name}.yaml")


@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA device of a given compute capability (for dtype=auto)."""
    def with_capability(major: int) -> torch.device:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
        return torch.device("cuda", 0)
    return with_capability


@pytest.mark.parametrize("name, capability, card_bytes", [
    ("gpu-16gb", 7, 15.8e9),  # T4
    ("gpu-24gb", 8, 23.6e9),  # A10G / L4, the smallest 24 GB cards
    ("gpu-80gb", 8, 85.0e9),  # A100 / H100 80 GB
    ("paper-qwen3b", 8, 85.0e9),
])
def test_shipped_gpu_configs_fit_their_cards_by_the_estimate(gpu, capsys, name, capability, card_bytes):
    cfg = config(name)
    estimate = memory_report(cfg, model_config=SHAPES[cfg.model.name], device=gpu(capability), available=int(card_bytes))
    assert estimate.peak < 0.9 * card_bytes  # a margin for the allocator and what the estimate leaves out
    assert "memory estimate" in capsys.readouterr().out


@pytest.mark.parametrize("card", [
    ("Tesla T4", (7, 5), 15.8), ("a small pre-Ampere card", (7, 5), 8.0), ("RTX 3060", (8, 6), 12.0),
    ("NVIDIA L4", (8, 9), 23.6), ("A100 40 GB", (8, 0), 42.4), ("A100 80 GB", (8, 0), 85.0),
])
def test_the_hardware_recommendations_fit_their_cards_by_the_estimate(gpu, card):
    from icrl_lite.hardware import Hardware, recommend
    from icrl_lite.memory import estimate_for
    from icrl_lite.trainer import TrainConfig

    name, capability, memory_gb = card
    cfg = load_config(TrainConfig, None, recommend(Hardware("cuda", name, capability, memory_gb)).args())
    estimate = estimate_for(cfg, model_config=SHAPES[cfg.model.name], device=gpu(capability[0]))
    assert estimate.peak < 0.9 * memory_gb * GB


def test_a_gpu_run_that_does_not_fit_is_refused_with_the_knobs_largest_first(gpu):
    with pytest.raises(ValueError) as refused:
        memory_report(config("paper-qwen3b"), model_config=QWEN_3B, device=gpu(8), available=int(24 * GB))
    knobs = str(refused.value).split("\n  - ")[1:]
    assert knobs[0].startswith("rollout KV cache") and "prompts_per_step (16)" in knobs[0]
    assert any("micro_batch_size (4)" in k for k in knobs) and any("logprob_chunk (256)" in k for k in knobs)
    assert not any("merged-adapter stash" in k for k in knobs)  # a 4-bit base is not merged: no knob for it


def test_a_bf16_base_that_does_not_fit_is_told_about_the_merge_stash(gpu):
    with pytest.raises(ValueError) as refused:
        memory_report(config("gpu-80gb"), model_config=QWEN_3B, device=gpu(8), available=int(40 * GB))
    assert "merged-adapter stash 5.5 GB: rollout.merge_lora=false" in str(refused.value)


def test_a_cpu_run_that_does_not_fit_is_only_warned_about(capsys):
    memory_report(config("paper-qwen3b"), model_config=QWEN_3B, device=torch.device("cpu"), available=int(8 * GB))
    assert "warning: the run needs" in capsys.readouterr().out


KV_TOKEN_3B = 2 * 36 * 2 * 128 * 2  # Qwen2.5-3B's K+V bytes a token in bf16: 36 layers x 2 KV heads x 128
ROLLOUTS = dict(prompts_per_step=4, num_generations=8, prompt_tokens=1000, max_response_tokens=1000, max_context_tokens=5000)


def test_the_kv_cache_follows_rollouts_and_context():
    one = estimate_memory(QWEN_3B, **ROLLOUTS)
    assert estimate_memory(QWEN_3B, **dict(ROLLOUTS, prompts_per_step=8)).kv_cache == 2 * one.kv_cache
    assert one.kv_cache == 32 * (2000 + 2000 // 16) * KV_TOKEN_3B  # rows x slab capacity (a sixteenth more) x bytes


@pytest.mark.parametrize("length", [10, 2000])
def test_the_slab_capacity_is_what_the_engines_cache_layer_allocates(length):
    from icrl_lite.rollout import SlabLayer

    layer = SlabLayer()
    layer.update(torch.zeros(1, 1, length, 4), torch.zeros(1, 1, length, 4))  # (B, KV, L, d)
    assert layer.slab_k.shape[-2] == slab_capacity(length)  # a sixteenth more (at least 32 slots), not a doubling


def test_a_regrown_slab_holds_one_layer_twice():
    assert estimate_memory(QWEN_3B, **ROLLOUTS).kv_regrow == 32 * 2000 * KV_TOKEN_3B // 36


def test_the_forced_chunk_copy_is_every_row_but_one_and_only_with_tool_turns():
    tools = estimate_memory(QWEN_3B, **ROLLOUTS)
    no_tools = estimate_memory(QWEN_3B, max_turns=0, **ROLLOUTS)
    assert tools.kv_rows_copy == 31 * 2000 * KV_TOKEN_3B and no_tools.kv_rows_copy == 0
    assert tools.rollout_peak - no_tools.rollout_peak >= tools.kv_rows_copy


def test_the_merge_stash_copies_the_adapted_weights_of_a_16_bit_base_only():
    bf16 = estimate_memory(QWEN_3B)  # LoRA on every projection
    per_layer = 2048 * 2048 + 2 * 2048 * 256 + 2048 * 2048 + 3 * 2048 * 11008  # q, k, v, o, gate, up, down
    assert bf16.merge_stash == 36 * per_layer * 2  # 5.5 GB
    assert estimate_memory(QWEN_3B, target_modules=["q_proj", "v_proj"]).merge_stash == 36 * (2048 * 2048 + 2048 * 256) * 2
    assert estimate_memory(QWEN_3B, load_in_4bit=True).merge_stash == 0  # a 4-bit base is never merged
    assert estimate_memory(QWEN_3B, merge_lora=False).merge_stash == 0
    assert bf16.rollout_peak - estimate_memory(QWEN_3B, merge_lora=False).rollout_peak == bf16.merge_stash
    assert bf16.update_peak == estimate_memory(QWEN_3B, merge_lora=False).update_peak  # restored before the update


@pytest.mark.parametrize("kv_heads", [2, 4, 16])
def test_repeat_kv_is_one_layers_cache_times_the_query_heads_per_kv_head_on_cuda(kv_heads):
    shape = dict(QWEN_3B, num_key_value_heads=kv_heads)
    one_layer = 32 * 2000 * 2 * kv_heads * 128 * 2  # rows x tokens x one layer's K+V in bf16
    expected = (16 // kv_heads) * one_layer if kv_heads < 16 else 0  # as many heads as KV heads: nothing to repeat
    assert estimate_memory(shape, **ROLLOUTS).repeat_kv == expected
    assert estimate_memory(shape, cuda=False, **ROLLOUTS).repeat_kv == 0  # attention.sdpa_gqa: grouped, no copies


def test_the_update_keeps_repeated_kv_on_cuda_only_without_checkpointing():
    plain = estimate_memory(QWEN_3B, micro_batch_size=4, **ROLLOUTS)
    assert plain.update_repeat_kv == 36 * 4 * 2000 * 2 * 16 * 128 * 2  # every layer, b x (prompt + response) keys
    assert estimate_memory(QWEN_3B, gradient_checkpointing=True, **ROLLOUTS).update_repeat_kv == 0  # no mask: grouped
    assert estimate_memory(QWEN_3B, cuda=False, **ROLLOUTS).update_repeat_kv == 0


def test_the_startup_table_names_every_term_the_run_has():
    def names(estimate):
        return {part.rsplit(" ", 1)[0] for part in estimate.table().split(" GB;")[0].split(", ")}

    assert names(estimate_memory(QWEN_3B, **ROLLOUTS)) == {  # CUDA, a bf16 base, tool turns, no checkpointing
        "weights", "adapter", "kv_cache", "kv_regrow", "kv_rows_copy", "repeat_kv", "merge_stash", "rollout_work",
        "activations", "update_repeat_kv", "logprob_chunk", "overhead"}
    assert "decode_weights" in names(estimate_memory(QWEN_3B, cuda=False, **ROLLOUTS))  # the CPU's fast decoder
    quiet = names(estimate_memory(QWEN_3B, load_in_4bit=True, max_turns=0, gradient_checkpointing=True, **ROLLOUTS))
    assert not quiet & {"kv_rows_copy", "merge_stash", "update_repeat_kv", "decode_weights"}


def test_vllm_s_share_of_the_gpu_is_not_the_trainers(gpu, capsys):
    cfg = config("gpu-24gb")
    fits = memory_report(cfg, model_config=QWEN_3B, device=gpu(8), available=int(24 * GB))
    cfg.rollout.backend, cfg.rollout.vllm_gpu_memory_utilization = "vllm", 0.5
    with pytest.raises(ValueError, match="needs ~"):
        memory_report(cfg, model_config=QWEN_3B, device=gpu(8), available=int(24 * GB))
    assert fits.peak > 12 * GB and "50% of 24.0 GB reserved by vLLM" in capsys.readouterr().out
