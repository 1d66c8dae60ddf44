"""results.json (everything measured) and results.md (the machine and one table per benchmark)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks import grpo_step, loss_memory, multiturn, sweep

BENCHMARKS = ("rollouts", "grpo", "sweep", "loss_memory")  # in the order they run and are reported


def write_results(results: dict, output: Path) -> None:
    """Write results.json and results.md into `output` (each replaced atomically)."""
    for name, text in (("results.json", json.dumps(results, indent=1)), ("results.md", markdown(results))):
        tmp = output / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, output / name)


def markdown(results: dict) -> str:
    cmd = results["command"]
    only = cmd.get("only") or []
    flags = (" --quick" if cmd["quick"] else "") + (
        f" --only {','.join(only)}" if only and set(only) != set(BENCHMARKS) else "") + (
        f" --workloads \"{','.join(cmd['workloads'])}\"" if cmd.get("workloads") else "") + (
        f" --betas {','.join(f'{b:g}' for b in cmd['betas'])}" if cmd.get("betas") else "") + f" --output {cmd['output']}"
    lines = [f"# Benchmarks, {results['machine']['date']}", "",
             f"`python -m benchmarks run{flags}` (model {cmd['model']}, {cmd['dtype']}, {cmd['device']}"
             f"{', quick sizes' if cmd['quick'] else ''}). Ratios measured side by side in this run are the figures "
             "to compare; absolute times depend on the machine and its load.", ""]
    lines += machine_section(results["machine"])
    if "limits" in results:
        lines += limits_section(results["limits"])
    sections = {"rollouts": rollouts_section, "grpo": grpo_section, "sweep": sweep_section,
                "loss_memory": loss_memory_section}
    for name, result in results["benchmarks"].items():
        title = {"rollouts": "Multi-turn rollouts: KV reuse vs re-encoding", "grpo": "A GRPO step: icrl-lite vs TRL",
                 "sweep": "GRPO step time vs group size and response length: icrl-lite vs TRL",
                 "loss_memory": "Loss memory vs sequence length"}[name]
        lines += [f"## {title}", ""]
        if "skipped" in result:
            lines += [f"Skipped: {result['skipped']}", ""]
        elif "error" in result:
            lines += ["Failed:", "", "```", result["error"].rstrip(), "```", ""]
        else:
            lines += sections[name](result) + [f"({result['seconds']:.0f} s)", ""]
    return "\n".join(lines)


def about(module) -> list[str]:
    """A benchmark module's docstring after its title: what is measured, in the report."""
    body = module.__doc__.strip().split("\n\n", 1)[1]
    return [line for paragraph in body.split("\n\n") for line in (" ".join(paragraph.split()), "")]


def table(header: list[str], rows: list[list]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""])


def machine_section(m: dict) -> list[str]:
    hardware = (f"{m['gpu']['name']} (compute {m['gpu']['capability']}, {m['gpu']['memory_gb']} GB, "
                f"CUDA {m['gpu']['cuda']}); host CPU {m['cpu']}") if "gpu" in m else m["cpu"]
    versions = ", ".join(f"{k} {v}" if v else f"{k} not installed" for k, v in m["versions"].items())
    rows = [["device", m["device"]], ["hardware", hardware],
            ["CPU flags (matmul-relevant)", " ".join(m["cpu_flags"]) or "none of " + "/".join(("avx2", "avx512", "amx"))],
            ["cores / torch threads", f"{m['cores']} / {m['torch_threads']}"], ["memory", f"{m['memory_gb']} GB"],
            ["load average at start (1, 5, 15 min)", ", ".join(map(str, m["load_average"]))],
            ["versions", f"Python {m['python']}, {versions}"], ["platform", m["platform"]], ["date", m["date"]]]
    return ["## Machine", ""] + table(["", ""], rows)


def limits_section(limits: dict) -> list[str]:
    p = limits["policy"]
    gflops = ", ".join(f"{k} {v:,.0f}" for k, v in limits["matmul_gflops"].items())
    bw = limits["bandwidth_gbs"]
    lines = ["## Machine limits", "",
             f"- matmul ({limits['matmul_size']}^3, best of several): {gflops} GFLOP/s",
             f"- memory bandwidth ({limits['bandwidth_mbytes']} MiB fp32 tensor): copy {bw['copy']:.1f} GB/s, "
             f"read (sum) {bw['read']:.1f} GB/s",
             f"- policy: {p['params'] / 1e6:.1f} M parameters, {p['weight_bytes'] / 2**20:.0f} MiB of weights in {p['dtype']}",
             "", "Decode bound (tokens/s) = min(B x read bandwidth / weight bytes, FLOP/s / (2 x parameters)); it "
             "ignores KV-cache reads and attention, so it is an upper bound.", ""]
    rows = [[b["batch"], f"{b['bandwidth_bound']:,.0f}", f"{b['flops_bound']:,.0f}", f"{b['tokens_per_s']:,.0f}"]
            for b in limits["decode_bounds"]]
    return lines + table(["batch B", "bandwidth bound", "compute bound", "decode bound"], rows)


def rollouts_section(result: dict) -> list[str]:
    rows = []
    for w in result["workloads"]:
        agree = w["agreement"]
        turns = ", ".join(f"{k}: {v}" for k, v in w["turns"]["turns_histogram"].items())
        bound = w.get("decode_bound_tokens_per_s")
        share = (lambda s: f"{s['fraction_of_bound']:.1%}") if bound else (lambda s: "-")
        rows.append([w["name"], w["prompts"], f"{w['prompt_tokens_mean']:.0f}", f"{w['turns']['tool_calls_mean']:.2f}",
                     f"{w['turns']['corrective_turns_mean']:.2f}", turns,
                     f"{w['engine']['tokens_per_s']:.1f}", f"{w['reencode']['tokens_per_s']:.1f}", f"{w['speedup']:.2f}x",
                     f"{bound:,.0f}" if bound else "-", f"{share(w['engine'])} / {share(w['reencode'])}",
                     f"{agree['identical']}/{agree['rollouts']}"])
    header = ["workload", "rollouts", "prompt tokens", "searches / rollout", "corrective turns / rollout",
              "rollouts by turns used", "engine tok/s", "re-encoding tok/s", "engine / re-encoding", "decode bound at B",
              "fraction of bound (engine / re-enc.)", "same tokens"]
    lines = about(multiturn) + table(header, rows)
    if "decode" in result:
        d = result["decode"]
        bound = d.get("decode_bound_tokens_per_s")
        lines += [f"Pure decode, engine, batch {d['batch']} ({d['prompt_tokens_mean']:.0f}-token prompts, {d['new_tokens']} "
                  f"greedy tokens per row): {d['tokens_per_s']:.1f} tok/s"
                  + (f", {d['fraction_of_bound']:.1%} of the decode bound at batch {d['batch']} ({bound:,.0f} tok/s)."
                     if bound else "."), ""]
    for w in result["workloads"]:
        if w["agreement"]["mismatched"]:
            lines += [f"{w['name']}: {w['agreement']['mismatched']} rollouts differ, first at response tokens "
                      f"{w['agreement']['first_divergence_at']} (a near-tie argmax flipped; {result['dtype']})", ""]
    return lines


def grpo_section(result: dict) -> list[str]:
    s = result["settings"]
    lines = about(grpo_step) + [
        f"LoRA r{s['lora_rank']} alpha {s['lora_alpha']} on {', '.join(s['lora_targets'])}, temperature "
        f"{s['temperature']}, lr {s['learning_rate']}, epsilon {s['epsilon']}. Each workload: P prompts x G rollouts x "
        "N new tokens, its warm-up step(s), then the median of its measured steps.", ""]
    rows, ratios = [], []
    for v in result["variants"]:
        w = {k: v.get(k, s.get(k)) for k in grpo_step.WORKLOAD_KEYS}  # results before workloads kept them in settings
        name = f"{v.get('workload', '0 demos')}: {w['prompts']} x {w['group']} x {w['max_new_tokens']}"
        for system in grpo_step.SYSTEMS:
            r = v[system]
            if "error" in r:
                rows.append([name, v["beta"], system, "failed", "", "", "", "", "", ""])
                continue
            trained = r.get("trained_rollouts_per_step")
            trained = "all (TRL keeps every rollout)" if trained is None else (
                f"all {trained[0]}" if len(set(trained)) == 1 and trained[0] == w["prompts"] * w["group"] else str(trained))
            prompt = f"{r['prompt_tokens_mean']:.0f}" if "prompt_tokens_mean" in r else "-"
            rows.append([name, v["beta"], system + (f" {r['trl_version']}" if "trl_version" in r else ""), prompt,
                         f"{r['median_step_s']:.2f}", f"{r['sampled_tokens_per_step']:.0f}",
                         f"{r['sampled_tokens_per_s']:.1f}", f"{r['peak_memory_mb']:.0f}", trained, update_batches(r)])
        if "ratio" in v:
            same = {True: "yes", False: "NO", None: "-"}[v.get("same_prompt_ids")]
            ratios.append([name, v["beta"], f"{v['ratio']['step_time']:.3f}", f"{v['ratio']['time_per_sampled_token']:.3f}",
                           f"{v['ratio']['peak_memory']:.2f}", same])
    lines += table(["workload: P x G x N", "beta", "system", "prompt tokens (mean)", "median s / step",
                    "sampled tokens / step", "sampled tok/s of step", "peak memory MiB", "trained rollouts per step",
                    "update: forward/backward passes x rollouts"], rows)
    if ratios:
        lines += ["icrl-lite / TRL (below 1: icrl-lite takes less):", ""]
        lines += table(["workload: P x G x N", "beta", "step time", "time per sampled token", "peak memory",
                        "same prompt token ids"], ratios)
    for v in result["variants"]:
        for system in grpo_step.SYSTEMS:
            if "error" in v[system]:
                lines += [f"{system}, {v.get('workload', '0 demos')}, beta {v['beta']} failed ({v[system]['error']}):",
                          "", "```", v[system]["log"].rstrip(), "```", ""]
    return lines


def update_batches(r: dict) -> str:
    """How a system batched its update: passes x rollouts per pass, with TRL's options (its P x G rows are
    generated together once per step, then trained in accumulated micro-batches)."""
    sizes = r.get("update_batches")
    if not sizes:
        return "-"  # results from before it was recorded
    cell = f"{len(sizes)} x {sizes[0]}" if len(set(sizes)) == 1 else " + ".join(map(str, sizes))
    if "trl_batching" in r:
        b = r["trl_batching"]
        return (f"{cell} (per_device_train_batch_size {b['per_device_train_batch_size']}, gradient_accumulation_steps "
                f"{b['gradient_accumulation_steps']}, generation_batch_size {b['generation_batch_size']})")
    return f"{cell} (one prompt's rollouts per pass)"


def sweep_section(result: dict) -> list[str]:
    s = result["settings"]
    lines = about(sweep) + [
        f"{s['prompts']} prompts per step; group sizes {', '.join(map(str, s['groups']))} at {s['group_axis_tokens']} "
        f"new tokens, response lengths {', '.join(map(str, s['lengths']))} at group {s['length_axis_group']}; "
        f"{s['warmup']} warm-up step(s), then the median of {s['steps']}.", ""]
    by_point: dict[tuple, dict] = {}
    for p in result["points"]:
        by_point.setdefault((p["group"], p["max_new_tokens"]), {})[p["system"]] = p
    rows = []
    for (group, tokens), systems in by_point.items():
        cells = [group, tokens]
        for system in sweep.SYSTEMS:
            p = systems.get(system)
            cells += [f"{p['median_step_s']:.2f}", f"{p['sampled_tokens_per_s']:.1f}"] if p else ["failed", ""]
        both = len(systems) == len(sweep.SYSTEMS)
        cells.append(f"{systems['icrl-lite']['median_step_s'] / systems['trl']['median_step_s']:.3f}" if both else "-")
        rows.append(cells)
    lines += table(["group G", "new tokens N", "TRL s / step", "TRL sampled tok/s", "icrl-lite s / step",
                    "icrl-lite sampled tok/s", "icrl-lite / TRL step time"], rows)
    if "figure" in result:
        lines += [f"![step time vs group size and response length]({result['figure']})", ""]
    for system, failure in result["errors"].items():
        lines += [f"{system} failed ({failure['error']}):", "", "```", failure["log"].rstrip(), "```", ""]
    return lines


def loss_memory_section(result: dict) -> list[str]:
    def cell(measured: dict) -> str:
        return f"{measured['peak_extra_mb']:.0f}" if "peak_extra_mb" in measured else "failed"

    rows = [[r["length"], f"{r['fp32_logits_mb']:.0f}", cell(r["chunked"]), cell(r["full"])] for r in result["rows"]]
    lines = about(loss_memory) + [
        f"LM head {result['hidden']} x {result['vocab']} in {result['dtype']}, chunk {result['chunk']} positions (one "
        f"chunk's fp32 logits: {result['chunk_fp32_logits_mb']:.0f} MiB, also the most the softmax kept for the "
        f"backward may take with `KEEP_SOFTMAX`; a frozen head on a CPU runs in blocks of 64 positions instead, "
        f"`HeadLogprobs`).", ""]
    lines += table(["positions T", "fp32 T x V logits MiB", "chunked (icrl-lite) peak MiB", "full log_softmax peak MiB"], rows)
    for r in result["rows"]:
        for method in loss_memory.METHODS:
            if "error" in r[method]:
                lines += [f"{method} at {r['length']} failed:", "", "```", r[method]["error"].rstrip(), "```", ""]
    return lines
