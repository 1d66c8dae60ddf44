"""The benchmark suite's machinery on a tiny random model: same tokens from both rollout loops, the decode-bound
arithmetic and the pure-decode rate against it, both GRPO systems training on every rollout (0 and 3 demos, on
the same prompt tokens), the step-time sweep and its figure, the loss-memory measurement, and the written report."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from benchmarks.grpo_step import measure_icrl, positional_rewards, run_child, trl_config
from benchmarks.loss_memory import full_logprobs, run_loss_memory
from benchmarks.machine import decode_bound, policy_size
from benchmarks.multiturn import Episode, Protocol, compare, reencode_rollouts, run_multiturn
from benchmarks.run import SIZES, run
from benchmarks.sweep import sweep_points
from icrl_lite.logprobs import token_logprobs
from icrl_lite.policy import ModelConfig, load_policy
from icrl_lite.rollout import Rollout, RolloutConfig, RolloutEngine
from icrl_lite.tools import Tool

pytestmark = pytest.mark.usefixtures("one_thread")
needs_trl = pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL not installed (pip install -e '.[bench]')")


@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir):
    return load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))


def echo_tool() -> Tool:
    """A tool the tiny random model calls: it repeats the last token, so after a prompt (or an observation)
    ending in a newline it writes newlines, and a newline closes a call (the empty open tag is always found)."""
    return Tool("echo", "", "\n", lambda query: f"seen {query[-8:]}")


def test_reencoding_loop_writes_the_engines_tokens_over_several_tool_turns(tiny_policy):
    model, tokenizer = tiny_policy
    prompts = [tokenizer(f"Question {i}: {text}")["input_ids"] for i, text in enumerate(
        ["what is the capital?\n", "who wrote the book about the sea and the old man?\n", "x"])]
    cfg = RolloutConfig(max_turns=3, max_turn_tokens=10, max_response_tokens=400, temperature=0.0)
    ours = RolloutEngine(model, tokenizer, [echo_tool()], cfg).generate(prompts, 1)
    theirs = reencode_rollouts(model, tokenizer, [echo_tool()], cfg, prompts)
    agreement = compare(ours, theirs)
    assert agreement["identical"] == 3 and agreement["mismatched"] == 0
    assert [r.loss_mask for r in ours] == [r.loss_mask for r in theirs]  # same tokens forced at the same places
    assert [r.tool_calls for r in ours] == [r.tool_calls for r in theirs]
    assert [len(r.tool_calls) for r in ours[:2]] == [3, 3]  # the workload really was multi-turn
    assert ours[2].invalid_turns >= 1  # "x" repeats " x": a turn without a call gets the corrective message


def test_compare_counts_rollouts_that_differ_and_where():
    a = [Rollout([1], response_ids=[5, 6, 7]), Rollout([1], response_ids=[5, 6])]
    b = [Rollout([1], response_ids=[5, 6, 7]), Rollout([1], response_ids=[5, 9, 9])]
    assert compare(a, b) == {"rollouts": 2, "identical": 1, "mismatched": 1, "mismatched_rows": [1],
                             "first_divergence_at": [1]}


def test_protocol_ends_a_turn_at_the_tool_tag_forces_the_observation_and_ends_at_the_answer(tokenizer):
    search = Tool("search", "<search>", "</search>", lambda q: f"Doc about {q}")
    cfg = RolloutConfig(max_turns=2, max_turn_tokens=64, max_response_tokens=512)
    protocol = Protocol(tokenizer, [search], cfg, ["</answer>"], {tokenizer.eos_token_id}, "invalid")
    ep = Episode(Rollout(prompt_ids=[1, 2, 3]))
    ids = tokenizer("<think> look it up </think>\n<search> Paris </search>", add_special_tokens=False)["input_ids"]
    ended = [protocol.accept(ep, t) for t in ids]
    assert ended[-1] and not any(ended[:-1])  # the turn ends exactly at the closing tag
    assert ep.call is not None and ep.call[1] == "Paris"
    protocol.run_call(ep)
    forced = ep.rollout.response_ids[len(ids):]
    assert tokenizer.decode(forced) == "\n\n<information>Doc about Paris</information>\n\n"
    assert ep.rollout.loss_mask == [1] * len(ids) + [0] * len(forced)
    for t in tokenizer("<answer> Paris </answer>", add_special_tokens=False)["input_ids"]:
        protocol.accept(ep, t)
    assert ep.done and ep.rollout.finished and ep.rollout.tool_calls[0]["observation"] == "Doc about Paris"


def test_decode_bound_is_the_smaller_of_the_bandwidth_and_compute_bounds():
    # 1 GB of weights, 0.5 G parameters, 100 GB/s, 1 TFLOP/s
    one = decode_bound(weight_bytes=1e9, params=5e8, bandwidth_bps=1e11, flops=1e12, batch=1)
    assert one["bandwidth_bound"] == pytest.approx(100) and one["flops_bound"] == pytest.approx(1000)
    assert one["tokens_per_s"] == pytest.approx(100)  # one sequence: the weights are read once per token
    many = decode_bound(weight_bytes=1e9, params=5e8, bandwidth_bps=1e11, flops=1e12, batch=32)
    assert many["bandwidth_bound"] == pytest.approx(3200)  # one read of the weights serves 32 sequences
    assert many["tokens_per_s"] == pytest.approx(1000)  # then compute caps it


def test_policy_size_counts_tied_embeddings_once_in_the_dtypes_bytes(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    size = policy_size(str(tiny_model_dir), torch.bfloat16)
    assert size["params"] == real and size["weight_bytes"] == 2 * real and size["dtype"] == "bf16"
    assert size["vocab"] == 49152 and size["hidden"] == 64


def test_full_and_chunked_logprobs_agree_so_their_memory_is_comparable():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden, targets = torch.randn(2, 7, 8), torch.randint(50, (2, 7))
    assert torch.allclose(full_logprobs(head, hidden, targets), token_logprobs(head, hidden, targets, chunk=3), atol=1e-6)


def test_full_logits_memory_grows_with_the_length_and_chunked_does_not(tiny_model_dir, tmp_path):
    result = run_loss_memory(str(tiny_model_dir), torch.float32, torch.device("cpu"), [1024], chunk=64, workdir=tmp_path)
    (row,) = result["rows"]
    assert row["fp32_logits_mb"] == 1024 * 49152 * 4 / 2**20  # 192 MiB
    full, chunked = row["full"]["peak_extra_mb"], row["chunked"]["peak_extra_mb"]
    assert full >= row["fp32_logits_mb"]  # the whole T x V logits were alive at once
    assert chunked < full / 3


def test_positional_rewards_give_every_group_a_spread():
    rewards = torch.tensor(positional_rewards(12, 4)).view(3, 4)  # (groups, G)
    assert (rewards.std(dim=1) > 0).all() and rewards[:, 0].eq(0).all() and rewards[:, -1].eq(1).all()


def grpo_spec(model_dir, tmp_path, system: str) -> dict:
    from icrl_lite.data import bundled_qa_path, load_qa

    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": q["question"], "answers": q["answers"]}) + "\n"
                                 for q in load_qa(bundled_qa_path("train"))[:2]))
    return {"system": system, "model": str(model_dir), "dtype": "fp32", "device": "cpu", "questions": str(questions),
            "seed": 0, "prompts": 2, "group": 2, "max_new_tokens": 5, "warmup": 1, "steps": 2, "temperature": 0.8,
            "learning_rate": 1e-5, "epsilon": 0.2, "beta": 0.04, "lora_rank": 4, "lora_alpha": 8,
            "lora_targets": ["q_proj", "v_proj"], "workdir": str(tmp_path / system)}


def test_icrl_lite_step_trains_every_rollout_of_fixed_length(tiny_model_dir, tmp_path):
    from icrl_lite import trainer as trainer_module

    real_score = trainer_module.score
    result = measure_icrl(grpo_spec(tiny_model_dir, tmp_path, "icrl-lite"))
    assert trainer_module.score is real_score  # the positional reward is removed afterwards
    assert result["trained_rollouts_per_step"] == [4, 4, 4]  # every group had a spread, every rollout trained
    assert result["sampled_tokens_per_step"] == 2 * 2 * 5  # EOS off: exactly max_new_tokens per rollout
    assert len(result["step_seconds"]) == 2 and result["peak_memory_mb"] > 0
    assert result["update_batches"] == [2, 2]  # one forward/backward per prompt, for its G rollouts


@needs_trl
def test_trl_step_samples_fixed_length_rollouts_in_its_own_process(tiny_model_dir, tmp_path):
    result = run_child(grpo_spec(tiny_model_dir, tmp_path, "trl"), tmp_path / "trl-run")
    assert "error" not in result, result.get("log")
    assert result["sampled_tokens_per_step"] == 2 * 2 * 5 and len(result["step_seconds"]) == 2
    assert result["trl_version"]
    assert result["update_batches"] == [4]  # no trl_micro_batch: all P x G rows in one forward/backward
    assert result["trl_batching"]["gradient_accumulation_steps"] == 1


@needs_trl
@pytest.mark.parametrize("micro, passes", [(4, 4), (None, 1)])
def test_trl_generates_a_steps_rows_together_and_accumulates_its_micro_batches_into_one_update(micro, passes, tmp_path):
    spec = {"prompts": 4, "group": 4, "max_new_tokens": 8, "warmup": 1, "steps": 2, "seed": 0, "temperature": 0.8,
            "beta": 0.0, "epsilon": 0.2, "learning_rate": 1e-5, "workdir": str(tmp_path), "trl_micro_batch": micro}
    args = trl_config(spec, use_cpu=True)
    assert args.per_device_train_batch_size == 16 // passes and args.gradient_accumulation_steps == passes
    assert args.generation_batch_size == 16 and args.generation_batch_size % args.num_generations == 0  # whole groups
    # TRL generates every steps_per_generation x num_iterations micro-batches: once per optimizer step, on-policy
    assert args.steps_per_generation == passes and args.num_iterations == 1 and args.max_steps == 3


@needs_trl
def test_trl_micro_batch_must_divide_the_steps_rows(tmp_path):
    spec = {"prompts": 3, "group": 2, "trl_micro_batch": 4, "max_new_tokens": 8, "warmup": 0, "steps": 1, "seed": 0,
            "workdir": str(tmp_path)}
    with pytest.raises(ValueError, match="trl_micro_batch=4 must divide the step's prompts x group = 6 rows"):
        trl_config(spec, use_cpu=True)


def test_the_full_3_demo_workload_trains_4_prompts_in_trl_micro_batches_of_2():
    demo = next(w for w in SIZES["full"]["grpo"] if w["demos"] == 3)
    assert (demo["prompts"], demo["group"], demo["max_new_tokens"], demo["trl_micro_batch"]) == (4, 4, 128, 2)  # 4 rows: TRL OOM at 19 GB
    quick = next(w for w in SIZES["quick"]["grpo"] if w["demos"] == 3)
    assert quick["prompts"] * quick["group"] > quick["trl_micro_batch"]  # the quick run accumulates micro-batches too


def test_a_run_writes_the_machine_section_and_reports_missing_trl_as_skipped(tiny_model_dir, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real_find_spec(name, *a))
    results, output = run(only=["grpo"], quick=True, output=tmp_path / "bench", model=str(tiny_model_dir),
                          dtype="fp32", device="cpu", log=lambda line: None)
    saved = json.loads((output / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    machine = saved["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["date"]
    assert {"torch", "transformers", "trl"} <= set(machine["versions"])
    assert set(saved["limits"]["matmul_gflops"]) >= {"fp32", "bf16"} and saved["limits"]["bandwidth_gbs"]["read"] > 0
    assert [b["batch"] for b in saved["limits"]["decode_bounds"]] == [1, 4, 16, 32, 64]
    assert "pip install" in saved["benchmarks"]["grpo"]["skipped"] and list(saved["benchmarks"]) == ["grpo"]
    md = (output / "results.md").read_text()
    assert "## Machine" in md and machine["cpu"] in md and "torch " in md and "## Machine limits" in md
    assert "Skipped: TRL is not installed" in md
    assert f"`python -m benchmarks run --quick --only grpo --output {output}`" in md  # the command that reruns it


def test_unknown_benchmark_names_are_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="rollouts, grpo, sweep, loss_memory"):
        run(only=["speed"], output=tmp_path)


def test_pure_decode_runs_every_row_to_its_length_and_is_read_against_the_bound_at_that_batch(tiny_model_dir):
    result = run_multiturn(str(tiny_model_dir), "fp32", "cpu", [], bound_at=lambda batch: 1000.0 * batch,
                           decode={"batch": 3, "new_tokens": 5})
    decode = result["decode"]
    assert decode["batch"] == 3 and decode["new_tokens"] == 5 and decode["tokens_per_s"] > 0
    assert decode["decode_bound_tokens_per_s"] == 3000.0
    assert decode["fraction_of_bound"] == pytest.approx(decode["tokens_per_s"] / 3000.0)


def test_sweep_points_measure_the_point_both_axes_share_once():
    sizes = {"groups": [2, 4, 8], "group_axis_tokens": 64, "lengths": [32, 64, 128], "length_axis_group": 4}
    points = [(p["group"], p["max_new_tokens"]) for p in sweep_points(sizes)]
    assert points == [(2, 64), (4, 64), (8, 64), (4, 32), (4, 128)]


TINY_SWEEP = {"prompts": 1, "groups": [2, 3], "group_axis_tokens": 2, "lengths": [2, 3], "length_axis_group": 2,
              "warmup": 0, "steps": 1}


@pytest.fixture(scope="module")
def demo_and_sweep_run(tiny_model_dir, tmp_path_factory):
    """`run --only grpo,sweep --quick` on the tiny model, with the quick 3-demo workload alone (2 prompts x 2
    rollouts, TRL in 2 micro-batches of 2, one step) and a smaller sweep, so the four processes take seconds each."""
    demo = [{**next(w for w in SIZES["quick"]["grpo"] if w["demos"] == 3), "max_new_tokens": 2, "warmup": 0,
             "steps": 1}]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(SIZES["quick"], "grpo", demo)
        patch.setitem(SIZES["quick"], "sweep", TINY_SWEEP)
        _, output = run(only=["grpo", "sweep"], quick=True, output=tmp_path_factory.mktemp("bench"),
                        model=str(tiny_model_dir), dtype="fp32", device="cpu", log=lambda line: None)
    return json.loads((output / "results.json").read_text()), output


@needs_trl
def test_the_3_demo_workload_gives_both_systems_the_same_untruncated_prompt_tokens(demo_and_sweep_run):
    results, _ = demo_and_sweep_run
    (variant,) = results["benchmarks"]["grpo"]["variants"]
    assert variant["workload"] == "3 demos" and variant["demos"] == 3
    trl, ours = variant["trl"], variant["icrl-lite"]
    assert "error" not in trl, trl.get("log")
    assert "error" not in ours, ours.get("log")
    assert trl["prompt_tokens"] == ours["prompt_tokens"] and variant["same_prompt_ids"]
    assert variant["prompt_tokens_per_prompt"] > 1000  # the 3 demonstrations are in the prompt, whole
    assert set(variant["ratio"]) == {"step_time", "time_per_sampled_token", "peak_memory"}
    assert trl["sampled_tokens_per_step"] == ours["sampled_tokens_per_step"] == 2 * 2 * 2


@needs_trl
def test_the_3_demo_workload_runs_trl_in_accumulated_micro_batches_after_one_generation(demo_and_sweep_run):
    results, _ = demo_and_sweep_run
    (variant,) = results["benchmarks"]["grpo"]["variants"]
    trl = variant["trl"]
    assert "error" not in trl, trl.get("log")  # the child raises unless each step ran one generation and one update
    assert variant["trl_micro_batch"] == 2 and trl["update_batches"] == [2, 2]
    assert trl["trl_batching"] == {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                                   "steps_per_generation": 2, "generation_batch_size": 4, "num_iterations": 1}
    assert variant["icrl-lite"]["update_batches"] == [2, 2]


@needs_trl
def test_the_sweep_measures_every_point_of_both_systems_and_draws_them(demo_and_sweep_run):
    results, output = demo_and_sweep_run
    sweep = results["benchmarks"]["sweep"]
    assert not sweep["errors"], sweep["errors"]
    measured = {(p["system"], p["group"], p["max_new_tokens"]) for p in sweep["points"]}
    assert measured == {(system, g, n) for system in ("trl", "icrl-lite") for g, n in [(2, 2), (3, 2), (2, 3)]}
    assert all(p["median_step_s"] > 0 and p["sampled_tokens_per_step"] == p["group"] * p["max_new_tokens"]
               for p in sweep["points"])
    assert sweep["figure"] == "sweep.png" and (output / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@needs_trl
def test_results_md_has_a_row_per_workload_and_beta_and_embeds_the_sweep(demo_and_sweep_run):
    _, output = demo_and_sweep_run
    md = (output / "results.md").read_text()
    assert "| 3 demos: 2 x 2 x 2 | 0.0 | trl 1.16" in md and "| 3 demos: 2 x 2 x 2 | 0.0 | icrl-lite |" in md
    assert "| 3 demos: 2 x 2 x 2 | 0.0 | " in md.split("icrl-lite / TRL (below 1")[1]  # its ratio row
    assert "| 2 x 2 (per_device_train_batch_size 2, gradient_accumulation_steps 2, generation_batch_size 4) |" in md
    assert "## GRPO step time vs group size and response length" in md and "![" in md and "(sweep.png)" in md


def test_a_childs_peak_memory_is_its_own_not_its_parents():
    # getrusage's ru_maxrss survives exec: a child of a 1.5 GB parent would report >= 1.5 GB
    import subprocess
    import sys

    ballast = bytearray(1536 * 2**20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = "import torch; from benchmarks.grpo_step import peak_memory_mb; print(peak_memory_mb(torch.device('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    del ballast
    assert 50 < float(out.split()[-1]) < 1200


def test_the_grpo_benchmark_can_be_cut_to_named_workloads_and_betas():
    from benchmarks.run import SIZES, grpo_workloads

    full = SIZES["full"]["grpo"]
    cut = grpo_workloads(full, ["0 demos"], [0.0])
    assert [(w["name"], w["betas"]) for w in cut] == [("0 demos", [0.0])]
    assert grpo_workloads(full, None, None) == full
    with pytest.raises(ValueError, match="0 demos, 3 demos"):
        grpo_workloads(full, ["1 demo"], None)
    with pytest.raises(ValueError, match="no workload runs at beta"):
        grpo_workloads(full, ["3 demos"], [0.04])
