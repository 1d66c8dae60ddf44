"""Step time against group size and against response length, TRL's GRPOTrainer vs icrl-lite's Trainer.

The 0-demo single-turn workload of the GRPO step benchmark (`grpo_step.py`: same model, LoRA, prompts,
sampling, optimizer, positional reward, exactly N sampled tokens per rollout, beta 0), P prompts per step, at
several group sizes G with N fixed and at several response lengths N with G fixed; the point both axes share
is measured once. Each system runs all its points in one process, one after another, each with a fresh trainer
(and model) and its own warm-up step; step time = the median of the measured steps. Sampled tokens/s = P x G x
N / step time: the whole step (sampling and update) per sampled token. Peak memory is left out (one process
holds every point: see the GRPO step benchmark for it). `sweep.png` draws both against each axis.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.grpo_step import INSTALL_TRL, SYSTEMS, base_spec, run_child, trl_available, write_questions


def sweep_points(sizes: dict) -> list[dict]:
    """The distinct (group, max_new_tokens) points of both axes, group axis first."""
    points = [{"group": g, "max_new_tokens": sizes["group_axis_tokens"]} for g in sizes["groups"]]
    points += [{"group": sizes["length_axis_group"], "max_new_tokens": n} for n in sizes["lengths"]]
    return [p for i, p in enumerate(points) if p not in points[:i]]


def run_sweep(model: str, dtype: str, device: str, sizes: dict, workdir: Path, figure: Path, log=print) -> dict:
    """Both systems at every point of `sizes` ({prompts, groups, group_axis_tokens, lengths, length_axis_group,
    warmup, steps}); writes the figure to `figure`. Skipped when TRL is not installed."""
    if not trl_available():
        return {"skipped": f"TRL is not installed: {INSTALL_TRL}"}
    base = base_spec(model, dtype, device, write_questions(workdir / "questions.jsonl", sizes["prompts"]))
    spec = {**base, "demos": 0, "beta": 0.0, "prompts": sizes["prompts"], "warmup": sizes["warmup"],
            "steps": sizes["steps"], "points": sweep_points(sizes)}
    result = {"settings": dict(sizes), "points": [], "errors": {}}
    for system in SYSTEMS:
        measured = run_child({**spec, "system": system, "workdir": str(workdir / system)}, workdir / system)
        if "error" in measured:
            result["errors"][system] = measured
            log(f"  sweep {system}: failed")
            continue
        result["points"] += [{"system": system, **p} for p in measured["points"]]
        log(f"  sweep {system}: " + ", ".join(f"G{p['group']} N{p['max_new_tokens']} {p['median_step_s']:.1f} s"
                                             for p in measured["points"]))
    if result["points"]:
        draw(result, figure)
        result["figure"] = figure.name
    return result


def axis(result: dict, system: str, name: str) -> list[dict]:
    """The points of one system along one axis ("group" or "length"), in the axis's order."""
    s = result["settings"]
    wanted = ([(g, s["group_axis_tokens"]) for g in s["groups"]] if name == "group"
              else [(s["length_axis_group"], n) for n in s["lengths"]])
    found = {(p["group"], p["max_new_tokens"]): p for p in result["points"] if p["system"] == system}
    return [found[w] for w in wanted if w in found]


def draw(result: dict, path: Path) -> None:
    """Two columns (against group size, against response length), two rows (step seconds, sampled tokens/s),
    one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["settings"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex="col")
    columns = (("group", "group size G", f"response length {s['group_axis_tokens']} tokens"),
               ("length", "response length N (tokens)", f"group size {s['length_axis_group']}"))
    for col, (name, label, fixed) in enumerate(columns):
        for system, marker in zip(SYSTEMS, ("o", "s")):
            points = axis(result, system, name)
            x = [p["group"] if name == "group" else p["max_new_tokens"] for p in points]
            axes[0, col].plot(x, [p["median_step_s"] for p in points], marker=marker, label=system)
            axes[1, col].plot(x, [p["sampled_tokens_per_s"] for p in points], marker=marker, label=system)
        axes[0, col].set_title(f"{s['prompts']} prompts per step, {fixed}")
        axes[0, col].set_ylabel("median seconds per step")
        axes[1, col].set_ylabel("sampled tokens / s of the step")
        axes[1, col].set_xlabel(label)
        axes[1, col].set_xticks(s["groups"] if name == "group" else s["lengths"])
        for row in range(2):
            axes[row, col].set_ylim(bottom=0)
            axes[row, col].grid(alpha=0.3)
            axes[row, col].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
