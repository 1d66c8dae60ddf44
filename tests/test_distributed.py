"""Data-parallel training on CPU with 2 gloo processes (icrl_lite/distributed.py): the update is the single process's,
a killed run resumes exactly (with 2 processes or with 1), and a rank without an informative group does not stall
the others. Processes are spawned with the environment torchrun gives them; one test runs torchrun itself."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from icrl_lite import distributed
from icrl_lite import trainer as trainer_module
from icrl_lite.policy import ModelConfig
from icrl_lite.rollout import RolloutConfig, RolloutEngine
from icrl_lite.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

DEMOS = [
    {"question": "Where is Tavoustead?", "answers": ["Louktuk"],
     "solution": "<search> Tavoustead </search>\n<information>Doc 1(Title: Tavoustead) in Louktuk.</information>\n"
                 "<answer> Louktuk </answer>"},
    {"question": "When was Skorvilow founded?", "answers": ["1600"], "solution": "<answer> 1600 </answer>"},
]
UPDATE = ("loss", "kl", "grad_norm", "clip_fraction", "trained_rollouts")
SCORES = ("reward", "reward_std", "informative_groups", "pushed_up_correct", "response_tokens", "em")


@pytest.fixture(scope="module")
def make_config(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    pool = root / "demos.jsonl"
    pool.write_text("".join(json.dumps(d) + "\n" for d in DEMOS))

    def make(name: str, **overrides) -> TrainConfig:
        cfg = TrainConfig(
            output_dir=str(root / name), demo_pool=str(pool), stages=[{"demos": 1, "steps": 1}, {"demos": 0, "steps": 1}],
            prompts_per_step=4, num_generations=2, micro_batch_size=1, eval_every=0, save_every=1, progress=False,
            probe_demos=0, final_eval="", check_demo_budgets=False, beta=0.1,
            model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"),
            rollout=RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=24, temperature=1.0),
        )
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return cfg

    return make


# ---- what every process runs ----------------------------------------------------------------------------
def scripted_score(flat_ranks: tuple[int, ...] = ()):
    """The trainer's score with a reward that depends on the rollout alone: 1.x for the 2nd of each pair of rollouts
    in scoring order (each rank scores whole groups of an even size, so in 1 process and in 2 a rollout gets the same
    reward), plus a tenth of a digit of its tokens; a constant 0.5 on the ranks in `flat_ranks` (no spread)."""
    real, counter = trainer_module.score, itertools.count()

    def score(rollout, gold, *args):
        metrics = real(rollout, gold, *args)
        reward = next(counter) % 2 + sum(rollout.response_ids) % 3 / 10
        metrics["reward"] = 0.5 if distributed.rank() in flat_ranks else reward
        metrics["em"] = float(metrics["reward"] >= 1)
        return metrics

    return score


def each_prompt_alone(real):
    """RolloutEngine.generate sampling each prompt's group alone, seeded by the prompt's tokens: a group's rollouts
    are the same whichever process samples it, and beside whichever other groups."""
    def generate(self, prompts, counts, generator=None):
        counts = [counts] * len(prompts) if isinstance(counts, int) else counts
        out = []
        for prompt, count in zip(prompts, counts):
            seed = zlib.crc32(json.dumps(list(prompt)).encode())
            out += real(self, [prompt], [count], torch.Generator(device=self.model.device).manual_seed(seed))
        return out

    return generate


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def worker(rank: int, world: int, port: int, runs: list[dict], flat_ranks: tuple[int, ...], alone: bool) -> None:
    """One process of a run as torchrun starts it (its environment), training each of `runs` in turn; each writes
    <result>-rank<r>.pt (adapter and metrics). A run with `kill_at` SIGKILLs rank 0 as that step starts."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer_module.score = scripted_score(flat_ranks)
    if alone:
        RolloutEngine.generate = each_prompt_alone(RolloutEngine.generate)
    real_step = Trainer.step
    for run in runs:
        def step(self, kill_at=run.get("kill_at")):
            if self.step_index == kill_at and rank == 0:
                os.kill(os.getpid(), signal.SIGKILL)  # after the previous step's checkpoint was written
            return real_step(self)

        Trainer.step = step
        trainer = Trainer(run["config"], resume=run.get("resume", False))
        history = trainer.train()
        torch.save({"lora": lora_state(trainer.model), "history": history}, f"{run['result']}-rank{rank}.pt")
    distributed.teardown()


def launch(runs: list[dict], world: int = 2, flat_ranks: tuple[int, ...] = (), alone: bool = False) -> None:
    """`world` processes training `runs`, joined (an error or a kill in one ends them all, as under torchrun)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(world, port, runs, flat_ranks, alone), nprocs=world, join=True)


def result(path: Path, rank: int = 0) -> dict:
    return torch.load(f"{path}-rank{rank}.pt", weights_only=False)


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# ---- the tests ------------------------------------------------------------------------------------------
def test_alone_every_collective_is_the_identity():
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.share(5) == range(5) and distributed.rank_seed(-3) == -3
    assert distributed.gather({"a": 1}) == [{"a": 1}] and distributed.sum_over_ranks(3, 0.5) == (3, 0.5)
    assert distributed.decided_by_main(lambda: "found") == "found"
    assert distributed.init("cuda:1") == "cuda:1"  # no launcher: model.device as given


def test_shares_cover_the_groups_once_in_order_and_differ_by_at_most_one(monkeypatch):
    for world in (1, 2, 3, 4):
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        shares = []
        for rank in range(world):
            monkeypatch.setattr(distributed, "rank", lambda: rank)
            shares.append(distributed.share(7))
        assert [i for share in shares for i in share] == list(range(7))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        seeds = set()
        for rank in range(world):
            monkeypatch.setattr(distributed, "rank", lambda: rank)
            seeds.add(distributed.rank_seed(1_000_003))
        assert len(seeds) == world and 1_000_003 in seeds  # rank 0 keeps the one-process seed


@pytest.mark.integration
def test_two_processes_take_the_single_process_update_on_the_same_groups(make_config, monkeypatch, tmp_path):
    # one step of each loss path: demo-sampled rollouts scored without the demos (off-policy, shared prefix), then
    # on-policy GRPO with the KL term, then a gold step (a solution per rank); micro-batches of 1 accumulate, the
    # advantages are scaled by the whole step's reward std, and each step makes 2 optimizer updates
    overrides = dict(stages=[{"demos": 1, "steps": 1}, {"demos": 0, "steps": 1}, {"demos": 0, "steps": 1, "gold": True}],
                     scale_rewards="batch", updates_per_step=2, save_every=0)
    launch([{"config": make_config("two", **overrides), "result": tmp_path / "two"}], alone=True)
    monkeypatch.setattr(trainer_module, "score", scripted_score())
    monkeypatch.setattr(RolloutEngine, "generate", each_prompt_alone(RolloutEngine.generate))
    one = Trainer(make_config("one", **overrides))
    history = one.train()

    ranks = [result(tmp_path / "two", r) for r in (0, 1)]
    for name, weight in ranks[0]["lora"].items():
        assert torch.equal(weight, ranks[1]["lora"][name]), name  # the ranks hold one adapter
        torch.testing.assert_close(weight, lora_state(one.model)[name], rtol=1e-5, atol=1e-6)
    assert all(m["grad_norm"] > 0 for m in history) and history[0]["groups"] == 4
    for single, pair in zip(history, ranks[0]["history"]):
        for key in UPDATE + (SCORES if single["step"] < 3 else ()):  # (the gold step's scores count rollouts scored)
            assert pair[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), (single["step"], key)
    assert [m["step"] for m in read_metrics(make_config("two").output_dir)] == [1, 2, 3]  # logged once, by rank 0


@pytest.fixture(scope="module")
def killed_run(make_config, tmp_path_factory):
    """A 2-process run trained without a break, and the same run killed as step 2 starts (after checkpoint-1)."""
    results = tmp_path_factory.mktemp("results")
    straight, killed = make_config("straight"), make_config("killed")
    with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
        launch([{"config": straight, "result": results / "straight"},
                {"config": killed, "result": results / "killed", "kill_at": 1}])
    return straight, killed, results


@pytest.mark.integration
def test_a_killed_two_process_run_resumes_exactly(killed_run, tmp_path):
    straight, killed, results = killed_run
    run = replace_dir(killed, tmp_path / "resumed")
    assert [m["step"] for m in read_metrics(run.output_dir)] == [1] and not (Path(run.output_dir) / "checkpoint-2").exists()
    launch([{"config": run, "result": tmp_path / "resumed", "resume": True}])
    a, b = result(results / "straight")["lora"], result(tmp_path / "resumed")["lora"]
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-7), name
    assert result(tmp_path / "resumed")["history"][0]["grad_norm"] > 0  # step 2 trained something
    assert [m["step"] for m in read_metrics(run.output_dir)] == [1, 2]


@pytest.mark.integration
def test_a_two_process_run_resumes_in_one_process(killed_run, tmp_path, monkeypatch):
    straight, killed, results = killed_run
    run = replace_dir(killed, tmp_path / "one")
    monkeypatch.setattr(trainer_module, "score", scripted_score())
    trainer = Trainer(run, resume=True)
    assert trainer.step_index == 1
    at_step_one = torch.load(Path(straight.output_dir) / "checkpoint-1" / "trainer_state.pt", weights_only=False)
    for i, state in trainer.optimizer.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], at_step_one["optimizer"]["state"][i]["exp_avg"])  # the run's state
    before = lora_state(trainer.model)
    trainer.train()
    assert trainer.step_index == 2 and [m["step"] for m in read_metrics(run.output_dir)] == [1, 2]
    assert any(not torch.equal(before[n], p) for n, p in lora_state(trainer.model).items())


def replace_dir(cfg: TrainConfig, path: Path) -> TrainConfig:
    """`cfg` run in a copy of its run directory at `path`."""
    shutil.copytree(cfg.output_dir, path)
    return replace(cfg, output_dir=str(path))


PLUGIN = """
import itertools
from icrl_lite import distributed, trainer

real, counter = trainer.score, itertools.count()

def score(rollout, gold, *args):  # rank 0's groups have no spread; rank 1's are 0, 1 in every group
    metrics = real(rollout, gold, *args)
    metrics["reward"] = 0.5 if distributed.rank() == 0 else float(next(counter) % 2)
    return metrics

trainer.score = score
"""


@pytest.mark.integration
def test_torchrun_trains_when_one_rank_has_no_informative_group(make_config, tmp_path):
    # the real entry point under torchrun: rank 0 has nothing to train on in any step, rank 1 has every group;
    # both take every update (no rank waits forever in a collective the other skipped) and rank 0 alone logs
    plugin = tmp_path / "flat_rank_zero.py"
    plugin.write_text(PLUGIN)
    cfg = make_config("torchrun")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "icrl_lite.cli", "train", f"output_dir={out}", f"plugins=[{plugin}]", "probe_demos=0",
               f"model.name={cfg.model.name}", "model.dtype=fp32", f"demo_pool={cfg.demo_pool}", "final_eval=",
               "stages=[{demos: 1, steps: 1}, {demos: 0, steps: 1}]", "prompts_per_step=4", "num_generations=2",
               "save_every=1", "eval_every=0", "progress=false", "check_demo_budgets=false",
               "rollout.max_turns=1", "rollout.max_turn_tokens=8", "rollout.max_response_tokens=24"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900,  # a deadlock guard, not a speed check
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["groups"] == 4 and r["informative_groups"] == 2 and r["grad_norm"] > 0 for r in rows)
    assert done.stdout.count("done: 2 steps") == 1  # rank 0 alone reports
    assert (out / "checkpoint-2" / "adapter" / "adapter_config.json").is_file()
