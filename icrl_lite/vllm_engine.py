"""Rollouts sampled by vLLM (`rollout.backend=vllm`) under `RolloutEngine`'s contract, and `make_engine`, which
picks the engine a config names.

Optional, and not yet run on a GPU: vLLM needs CUDA (`pip install 'icrl-lite[vllm]'`), this project's CI has no
GPU, and tests/test_vllm_engine.py checks this module against a stand-in `vllm` package, not vLLM itself.

Colocated: one `vllm.LLM` per process (and base model) runs in the trainer's process on its GPU, taking
`rollout.vllm_gpu_memory_utilization` of the GPU's memory for its own copy of the base weights and its KV cache; the
step's rollouts and the evaluations share it. The LoRA adapter is never merged into a copy of the weights: when its
weights have changed since the last call, peft's `save_pretrained` writes it to a temporary folder and vLLM gets it
as a new `LoRARequest` (vLLM caches adapters by their int id, so each version gets a fresh id); a switched-off
adapter (`reference_mode`: the untrained side of the final evaluation) samples the base model.

The tool loop goes a turn at a time: each live row's context (prompt + response so far) is one request, generated
until a stop string (a tool's closing tag while tools are on, a final stop such as `</answer>`), an EOS token or the
turn's budget; in the first turn a prompt's G samples are one request (`n=G`). The returned tokens are fed one by
one through `RolloutEngine`'s own per-token logic (`_accept`: stops, budgets, the corrective message, tool calls)
and its `_run_tools` (observations cut to `max_obs_tokens`, forced with loss-mask 0), so the turn rules and the loss
mask are the built-in engine's by construction; only where the sampled tokens come from differs. Unlike the
built-in engine, vLLM reads each row's context again every turn, from its prefix cache.

`Rollout.logprobs` are vLLM's `processed_logprobs` (after temperature and top-p, the distribution sampled from, as
the built-in engine records them): the trainer takes its PPO ratio against them, so vLLM must be >= 0.10.2, which
has `logprobs_mode`. They come from vLLM's kernels, not the trainer's forward, so the ratio of the first update is
not exactly 1; the clip bounds it as it bounds the built-in engine's merged-adapter difference.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field, replace
from itertools import accumulate, count
from typing import Any, Sequence

import torch

from .prompts import INVALID_ACTION
from .rollout import RolloutConfig, RolloutEngine, _Row
from .tools import Tool

INSTALL = "pip install 'icrl-lite[vllm]'"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank
UNTESTED = ("[icrl-lite] rollout.backend=vllm has not run on a GPU in icrl-lite's CI (its contract is tested with a "
            "stand-in); compare a few steps with rollout.backend=auto before relying on it")


def make_engine(model, tokenizer, tools: Sequence[Tool], config: RolloutConfig, **options) -> RolloutEngine:
    """The rollout engine `config.backend` names: icrl-lite's own (auto) or vLLM (vllm). `options` are the engines'
    shared keyword arguments (final_stops, max_wait, invalid_message)."""
    engine = VllmEngine if config.backend == "vllm" else RolloutEngine
    return engine(model, tokenizer, tools, config, **options)


def require_vllm():
    """The `vllm` package, once this process can run it; else an error that says what to do."""
    if not torch.cuda.is_available():
        raise RuntimeError("rollout.backend=vllm needs a CUDA GPU and torch sees none: set rollout.backend=auto "
                           "(icrl-lite's own engine, on CPUs and GPUs)")
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise ImportError(f"rollout.backend=vllm needs vLLM (>= 0.10.2) and a CUDA GPU: {INSTALL}; "
                          f"or set rollout.backend=auto ({e})") from e
    return vllm, LoRARequest


@dataclass
class _Sampler:
    """One vLLM engine per process and base model, shared by every VllmEngine (the step's and the evaluations')."""

    llm: Any
    max_model_len: int
    folder: tempfile.TemporaryDirectory  # the synced adapter's files
    fingerprint: list[float] | None = None  # the adapter's weights at the last sync
    request: Any = None  # its LoRARequest
    lora_ids: count = field(default_factory=lambda: count(1))


_SAMPLERS: dict[str, _Sampler] = {}


class VllmEngine(RolloutEngine):
    """`RolloutEngine.generate`'s contract (rows, Rollout fields, loss mask, sampler log-probs), sampled by vLLM."""

    def __init__(self, model, tokenizer, tools: Sequence[Tool], config: RolloutConfig,
                 final_stops: Sequence[str] = ("</answer>",), max_wait: int = 8, invalid_message: str = INVALID_ACTION):
        # merging the adapter and the CPU fast decoder act on the trained model's own forward, which vLLM replaces
        super().__init__(model, tokenizer, tools, replace(config, merge_lora=False, fast_decode=False), final_stops,
                         max_wait, invalid_message)
        self.vllm, self.lora_request_type = require_vllm()
        self.sampler = self._sampler()

    def _sampler(self) -> _Sampler:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        path, cfg = base.config.name_or_path, self.cfg
        sampler = _SAMPLERS.get(path)
        if sampler is not None:
            if cfg.max_context_tokens > sampler.max_model_len:
                raise ValueError(f"rollout.max_context_tokens={cfg.max_context_tokens} is more than the "
                                 f"{sampler.max_model_len} this process's vLLM engine was started with: use the "
                                 "training run's value")
            return sampler
        print(UNTESTED)
        adapter = getattr(self.model, "peft_config", {}).get(getattr(self.model, "active_adapter", "default"))
        lora = {"enable_lora": True, "max_loras": 1,
                "max_lora_rank": next((r for r in LORA_RANKS if r >= adapter.r), adapter.r)} if adapter else {}
        launcher_env()
        llm = self.vllm.LLM(
            model=path, dtype=str(self.model.get_input_embeddings().weight.dtype).removeprefix("torch."),
            quantization="bitsandbytes" if getattr(base, "is_loaded_in_4bit", False) else None,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, max_model_len=cfg.max_context_tokens,
            enable_prefix_caching=True, logprobs_mode="processed_logprobs",
            distributed_executor_backend="external_launcher", tensor_parallel_size=1, seed=0, **lora)
        sampler = _SAMPLERS[path] = _Sampler(llm, cfg.max_context_tokens,
                                             tempfile.TemporaryDirectory(prefix="icrl-lite-vllm-lora-"))
        return sampler

    # ---- the adapter ------------------------------------------------------------------------------------
    def adapter_request(self):
        """The LoRARequest of the adapter as it is now, synced to vLLM if its weights changed since the last call;
        None when there is no adapter or it is switched off (the base model samples)."""
        layers = [m for m in self.model.modules() if hasattr(m, "lora_A") and hasattr(m, "merge")]
        if not layers or any(getattr(m, "disable_adapters", False) for m in layers):
            return None
        params = [p.detach() for name, p in self.model.named_parameters() if "lora_" in name]
        sums = [(p.sum(dtype=torch.float64), torch.linalg.vector_norm(p, dtype=torch.float64)) for p in params]
        fingerprint = torch.stack([s for pair in sums for s in pair]).tolist()  # one device-to-host copy per call
        s = self.sampler
        if fingerprint != s.fingerprint:
            lora_id = next(s.lora_ids)
            path = os.path.join(s.folder.name, f"adapter-{lora_id}")
            self.model.save_pretrained(path)  # the adapter's files only: vLLM applies it to its own base weights
            if s.request is not None:  # vLLM loaded it from disk when first asked; a new id never asks again
                shutil.rmtree(os.path.join(s.folder.name, f"adapter-{s.request.lora_int_id}"), ignore_errors=True)
            s.request = self.lora_request_type(f"icrl-lite-{lora_id}", lora_id, path)
            s.fingerprint = fingerprint
        return s.request

    # ---- the tool loop ----------------------------------------------------------------------------------
    def _run(self, rows: list[_Row], prompts, counts: list[int], generator) -> None:
        """Sample `rows` (prompt-major: `counts[i]` rows for prompt i) to the end, in place, a turn at a time."""
        lora = self.adapter_request()
        groups = [rows[end - n:end] for n, end in zip(counts, accumulate(counts))]
        requests = [(list(prompt), group) for prompt, group in zip(prompts, groups)]  # first turn: n = G per prompt
        while requests:
            seeds = draw_seeds(generator, len(requests))
            outputs = self.sampler.llm.generate(
                [{"prompt_token_ids": ids} for ids, _ in requests],
                [self.sampling_params(group[0], len(group), seed) for (_, group), seed in zip(requests, seeds)],
                lora_request=lora, use_tqdm=False)
            calls = []
            for (_, group), output in zip(requests, outputs, strict=True):
                for row, completion in zip(group, output.outputs, strict=True):
                    call = self._take(row, completion)
                    if call is not None:
                        calls.append(call)
            self._run_tools(calls)  # the built-in engine's: observations cut, wrapped and forced (mask 0)
            requests = [(row.rollout.prompt_ids + row.rollout.response_ids, [row]) for row in rows if not row.done]

    def sampling_params(self, row: _Row, n: int, seed: int | None):
        """One request's sampling: the row's stops while its turn lasts, and at most the tokens its budgets leave."""
        r, cfg = row.rollout, self.cfg
        tools_on = bool(self.tools) and row.turns_used < cfg.max_turns
        used = len(r.response_ids)
        budget = min(cfg.max_turn_tokens - (used - row.turn_start), cfg.max_response_tokens - used,
                     cfg.max_context_tokens - len(r.prompt_ids) - used)
        stops = self.final_stops + ([t.close_tag for t in self.tools] if tools_on else [])
        return self.vllm.SamplingParams(
            n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=max(1, budget), seed=seed,
            stop=list(dict.fromkeys(s for s in stops if s)), stop_token_ids=sorted(self.eos_ids),
            include_stop_str_in_output=True, logprobs=0)  # logprobs=0: the sampled token's own only

    def _take(self, row: _Row, completion) -> tuple | None:
        """Feed a completion's tokens to the built-in per-token logic until the turn ends; returns the turn's tool
        call (row, tool, query) or None. Tokens past the end (where vLLM's stop check and ours disagree) are
        dropped; a completion that stops early leaves the turn open, and the row's next request continues it."""
        if not completion.token_ids:
            raise RuntimeError(f"vLLM returned no token (finish_reason={completion.finish_reason!r})")
        for token, step in zip(completion.token_ids, completion.logprobs, strict=True):
            start = row.turn_start
            call = self._accept(row, token, step[token].logprob)
            if call is not None or row.done or row.turn_start != start:
                return call
        return None


def draw_seeds(generator: torch.Generator | None, n: int) -> list[int | None]:
    """One vLLM seed per request from the caller's generator (runs seeded alike draw alike), or none."""
    if generator is None:
        return [None] * n
    return torch.randint(0, 2**31 - 1, (n,), generator=generator, device=generator.device).tolist()


def launcher_env() -> None:
    """vLLM's `external_launcher` backend, which keeps its engine in this process (as TRL's colocate mode does),
    reads torchrun's variables; a process started without torchrun is rank 0 of 1."""
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
