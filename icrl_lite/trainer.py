"""ICRL training: a LoRA policy trained on tool-use rollouts whose prompts carry a shrinking number of demonstrations.

Reads top-down: the config, setup (`Trainer.__init__`), the loop (`Trainer.train`), one step (`Trainer.step`),
then checkpointing. One step: sample questions -> rollouts with k demos (k from the curriculum) -> rewards ->
group advantages -> `updates_per_step` AdamW updates over micro-batches. Groups whose rewards are all equal
carry no signal: they are logged and left out of the update. Under `torchrun --nproc_per_node N` each process
samples its share of a step's groups and the update is the one process's (`distributed`, docs/multi-gpu.md).

What the default run is (stages 3 demos x 5 steps, then 0 demos x 1 step, demo_loss_prompt=zero_shot,
offpolicy_weight=positive): for 5 of its 6 steps it is advantage-filtered fine-tuning, not RL. Rollouts are sampled
with 3 demos in the prompt; those whose reward is above their group's mean are scored under the prompt *without*
the demos and their tokens' log-likelihood is raised with weight A (ratio fixed at 1, so the PPO clip never acts and
nothing bounds the `updates_per_step` updates on them; no KL term on them, see `beta`). Rewards mix answer and
format, so most of those rollouts rank above the mean on format alone: the demo steps mostly teach the zero-shot
policy the demos' protocol (search, then answer in tags). Only the last step is on-policy GRPO (PPO ratio against
the sampler's log-probs at the same temperature, clip 0.2, k3 KL to the adapter-free model).

Where this departs from ICRL (each a config option; the paper's behaviour is the option's first value):
- `stages[].zero_shot`: mixed groups, some rollouts of a group sampled without demos (the paper: none).
- `demo_loss_prompt=zero_shot`: rollouts sampled with demos are scored, in the loss, under the prompt without
  them, so the demo-free policy is trained on the in-context policy's samples (off-policy: `offpolicy_weight`
  = positive advantages with ratio 1, the PPO-clipped ratio, or LUFFY's shaping). The paper scores every
  rollout under the prompt it was sampled with (`demo_loss_prompt=own`: GRPO throughout).
- `updates_per_step` > 1 and `scale_rewards` other than group (the paper: one update, group std).
docs/results.md shows the study that set the defaults."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed
from .checkpoints import (RunLock, last_logged_step, latest_checkpoint, load_trainer_state, open_run_dir,
                          save_checkpoint)
from .config import changed_keys, save_config, to_dict
from .curriculum import DEMO_CHOICES, Curriculum, choose_demos
from .evaluate import EvalConfig, by_hops, intervals, mean_metrics, run_eval, score
from .grpo import SCALE_REWARDS, group_advantages, group_spread, grpo_loss, shaped_offpolicy_loss
from .logprobs import SharedPrefix, checkpoints_layers, response_logprobs
from .memory import memory_report
from .policy import LossScaler, ModelConfig, load_policy, load_tokenizer, reference_mode
from .preflight import check_model_source, check_output_dir
from .prompts import build_messages, render_prompt
from .rollout import (Rollout, RolloutConfig, demo_budget_problems, shared_prefix_length,
                      solution_rollout)
from .rewards import ANSWER_CREDITS
from .tasks import REWARD_VARIANTS, setup_task, validate_task_fields
from .tools import PythonConfig, SearchConfig
from .tracking import check_report_to, open_tracker
from .vllm_engine import make_engine


@dataclass
class TrainConfig:
    output_dir: str = "runs/icrl-qa"
    """Run directory: checkpoints, metrics.jsonl, config.yaml."""
    seed: int = 0
    """Seed for question order, demo choice and sampling."""
    task: str = "qa"
    """qa (search a corpus, ICRL's setting) | math (compute with the restricted Python tool) | fc (function calling,
    ToolRL's reward) | a task of your own registered by a `plugins` file (`register_task`)."""
    reward_variant: str = "fine"
    """fc only: ToolRL's fine-grained reward | coarse (exact match only) | dynamic (correctness range widens over training)."""
    train_data: str = ""
    """Training questions: JSONL/JSON file or HF dataset name (qa: question + answers or FlashRAG golden_answers, several joined by "+", e.g. Search-R1's mix RUC-NLPIR/FlashRAG_datasets:nq+RUC-NLPIR/FlashRAG_datasets:hotpotqa; math: ours, GSM8K or MATH format; fc: ours, xLAM, ToolACE or ToolRL (rlla, .json or .parquet) format); empty = the task's bundled data."""
    train_split: str = "train"
    """Split used when train_data is an HF dataset name."""
    eval_data: str = ""
    """Held-out questions for periodic zero-shot evaluation; empty = bundled dev split."""
    corpus: str = ""
    """Search corpus JSONL (id, title, text); empty = bundled corpus."""
    tools: list[str] = field(default_factory=list)
    """Tools by name (search, python, or registered through plugins); empty = the task's tools."""
    plugins: list[str] = field(default_factory=list)
    """Python files or modules to import first, e.g. ones that register tools."""
    functions: str = ""
    """fc only: Python implementations of the functions (a .py file or module; its IMPLEMENTATIONS dict or its
    public functions by name). Calls are then executed, their results come back in <obs>, and the episode
    goes on until a <response> (multi-step; turns capped by rollout.max_turns). Empty = one turn."""
    instruction: str = ""
    """Prompt template with {question}; empty = the task's instruction (describe your tools here when you bring your own)."""
    demo_pool: str = ""
    """Demonstrations JSONL: records of the task's format plus `solution` (the full worked trajectory); empty = the task's bundled pool."""
    demo_layout: str = "chat"
    """chat: demos as prior chat turns (best for small models) | user: the paper's layout inside the user message."""
    demo_choice: str = "per_prompt"
    """per_prompt: each question of a step gets its own demos (the study's runs) | per_step: one demo set for all
    questions of a step, so the engine runs the shared demo prefix once (cheaper prefill on slow machines)."""
    stages: list[dict] = field(default_factory=lambda: [{"demos": 3, "steps": 5}, {"demos": 0, "steps": 1}])
    """Curriculum: list of {demos, steps, zero_shot (optional: rollouts per group sampled without demos), gold
    (optional: supervised steps on the demo pool's solutions, a baseline)}; training runs for the sum of steps. The
    paper: 3 -> 2 -> 0 demos. The default (3 demos x 5 steps with demo_loss_prompt=zero_shot: advantage-weighted
    fine-tuning on demo-guided samples; then one zero-shot GRPO step) was chosen by the qa-transfer study in 2026-11,
    on the old test split; the qa-review study re-examines it on dev (docs/results.md)."""
    prompts_per_step: int = 4
    """Questions per step (the paper: 64)."""
    num_generations: int = 4
    """Rollouts per question, the GRPO group size (the paper: 8)."""
    micro_batch_size: int = 4
    """Sequences per forward/backward; gradients accumulate over the step."""
    learning_rate: float = 3e-4
    """Peak AdamW learning rate (LoRA; the paper's 1e-6 is for full fine-tuning)."""
    warmup_ratio: float = 0.1
    """Fraction of steps of linear warmup; cosine decay to 10% after it."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping."""
    beta: float = 0.001
    """KL coefficient (k3 estimator) to the adapter-free reference, on on-policy rollouts only (k3 needs tokens the
    scored policy sampled: off-policy ones, demo_loss_prompt=zero_shot, get no KL term); 0 skips the reference pass."""
    epsilon: float = 0.2
    """PPO clip range."""
    epsilon_high: float | None = None
    """Upper clip range (DAPO's clip-higher, e.g. 0.28: a helpful unlikely token may gain more per step); None = epsilon."""
    alpha: float = 0.8
    """Reward = alpha * exact match + (1 - alpha) * format."""
    alpha_final: float | None = None
    """Anneal alpha linearly from `alpha` at the first step to this at the last (e.g. 1.0: format stops paying as
    training goes on, so the reward's spread comes from answers; not ICRL's); None = alpha throughout."""
    answer_credit: str = "em"
    """qa: what the reward's accuracy term pays for: em (exact match, the paper's) | f1 (token F1 of the answer:
    partial credit for a partly right one)."""
    multi_hop_share: float = 0.0
    """Share of each step's questions drawn from those that need two or more hops (the data's `hops` field), the
    rest from the others; 0 = uniform over the training set."""
    tool_penalty: float | None = None
    """qa / math: what the format score loses when a response never calls its tool (no <search> / <python>);
    None = ICRL's table (0.1, i.e. 0.02 of the reward at alpha 0.8). Training only: evaluation's metrics do not
    depend on it. Raise it (e.g. 0.5) when no rollout reaches a right answer, so format is the only signal and
    0.1 does not separate calling from answering without a call (the math track, docs/results.md)."""
    updates_per_step: int = 4
    """Optimizer steps on each step's rollouts (GRPO's mu). Sampling dominates a CPU step (~90%), so reusing its
    rollouts is cheap; on on-policy rollouts the PPO ratio against the sampler and its clip keep later updates near
    the sampler. Off-policy rollouts under offpolicy_weight=positive have ratio 1 in every update: nothing bounds
    them but the learning rate."""
    scale_rewards: str = "group"
    """Advantage scale: group (GRPO: divide by the group's reward std) | batch (the step's std) | none (Dr. GRPO).
    The default stays group (GRPO's and TRL's): the qa-transfer study did not vary it. With the demo-free loss the
    trained rollouts are those with A > 0, so the scale sets the step size, not which tokens are pushed up."""
    demo_loss_prompt: str = "zero_shot"
    """Which prompt scores rollouts sampled with demos in the loss: own (ICRL: the prompt they were sampled with)
    | zero_shot (the same question without demos: the tokens are off-policy, weighted by offpolicy_weight)."""
    offpolicy_weight: str = "positive"
    """With demo_loss_prompt=zero_shot, how demo-sampled tokens train the demo-free policy: positive (rollouts
    with advantage > 0 only, ratio 1: advantage-weighted fine-tuning on the model's own above-average samples, right
    or wrong) | correct (rollouts whose answer is right only, weight 1, ratio 1, whatever their group: rejection-
    sampling fine-tuning) | ratio
    (PPO-clipped ratio to the demo-prompted sampler) | shaped (LUFFY: -A * p / (p + shaping_gamma), no clip)."""
    shaping_gamma: float = 0.1
    """offpolicy_weight=shaped: LUFFY's gamma."""
    check_demo_budgets: bool = True
    """Refuse rollout budgets that would truncate a demo of the pool (its calls, turn lengths, total tokens);
    false only for quick smoke runs with deliberately tiny budgets."""
    probe_demos: int = 4
    """Diagnostics: each step, log-prob of the first tool tag of this many pool demos' solutions under the
    0-demo prompt (`probe/tool_logp`); 0 = off."""
    eval_every: int = 10
    """Zero-shot evaluation on eval_data every N steps (0 = never; always at the end when > 0)."""
    eval_size: int = 32
    """Questions of eval_data used by periodic evaluation."""
    final_eval: str = "test"
    """After training, the untrained model (adapter off) and the trained one are evaluated zero-shot and greedy on
    this bundled split (train | dev | test) or question file, and printed side by side with 95% intervals
    (final_eval.json in the run dir); empty = skip."""
    final_eval_size: int = 0
    """Questions of final_eval (0 = all)."""
    final_eval_demos: int = 3
    """final_eval also evaluates the untrained model with this many demos in its prompt (greedy, the same
    questions; at most the pool's size; one demo set per batch of questions, so their prefix is computed once): the
    in-context skill the zero-shot trained model is measured against; 0 = skip."""
    save_every: int = 4
    """Checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (oldest deleted)."""
    logprob_chunk: int = 1024
    """Positions per LM-head chunk when computing log-probs (bounds fp32 logit memory). On a CPU a frozen head
    (the default: LoRA leaves it alone) runs in cache-sized blocks of 64 positions whatever this says."""
    progress: bool = True
    """Show a progress bar."""
    report_to: str = "none"
    """Also log each step's metrics to none | tensorboard (<output_dir>/tensorboard) | wandb | trackio (project:
    WANDB_PROJECT / TRACKIO_PROJECT or icrl-lite; run: the output_dir's name). metrics.jsonl is always written."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Policy model and LoRA."""
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(temperature=0.8))
    """Rollout budgets and sampling."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """The search tool."""
    python: PythonConfig = field(default_factory=PythonConfig)
    """The Python tool's limits."""

    def validate(self) -> None:
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: GRPO compares rollouts within a group")
        for name in ("prompts_per_step", "micro_batch_size", "eval_size", "keep_checkpoints", "logprob_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.final_eval_demos < 0:
            raise ValueError(f"final_eval_demos={self.final_eval_demos} must be >= 0 (0 = skip the evaluation with demos)")
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("learning_rate must be > 0 and warmup_ratio in [0, 1)")
        if self.beta < 0 or self.epsilon < 0 or not 0 <= self.alpha <= 1:
            raise ValueError("beta and epsilon must be >= 0 and alpha in [0, 1]")
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ValueError(f"epsilon_high={self.epsilon_high} must be >= epsilon={self.epsilon} (clip-higher), or null")
        if self.alpha_final is not None and not 0 <= self.alpha_final <= 1:
            raise ValueError(f"alpha_final={self.alpha_final} must be in [0, 1], or null for a constant alpha")
        if self.answer_credit not in ANSWER_CREDITS:
            raise ValueError(f"answer_credit={self.answer_credit!r}: use one of {', '.join(ANSWER_CREDITS)}")
        if self.answer_credit != "em" and self.task != "qa":
            raise ValueError(f"answer_credit={self.answer_credit} is the qa reward's (it scores answers by token F1); "
                             f"task={self.task} has its own accuracy: leave answer_credit=em")
        if not 0 <= self.multi_hop_share <= 1:
            raise ValueError(f"multi_hop_share={self.multi_hop_share} must be in [0, 1] (0 = uniform sampling)")
        if self.demo_layout not in ("chat", "user"):
            raise ValueError(f"demo_layout={self.demo_layout!r}: use chat or user")
        if self.demo_choice not in DEMO_CHOICES:
            raise ValueError(f"demo_choice={self.demo_choice!r}: use per_prompt or per_step")
        if self.updates_per_step < 1:
            raise ValueError(f"updates_per_step={self.updates_per_step} must be >= 1 (GRPO's mu; 1 = one update per batch)")
        if self.eval_every < 0 or self.save_every < 0 or self.probe_demos < 0:
            raise ValueError("eval_every, save_every and probe_demos must be >= 0")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"scale_rewards={self.scale_rewards!r}: use one of {', '.join(SCALE_REWARDS)}")
        if self.demo_loss_prompt not in ("own", "zero_shot"):
            raise ValueError(f"demo_loss_prompt={self.demo_loss_prompt!r}: use own (ICRL) or zero_shot")
        if self.offpolicy_weight not in OFFPOLICY_WEIGHTS:
            raise ValueError(f"offpolicy_weight={self.offpolicy_weight!r}: use one of {', '.join(OFFPOLICY_WEIGHTS)}")
        if self.shaping_gamma <= 0:
            raise ValueError(f"shaping_gamma={self.shaping_gamma} must be > 0 (LUFFY: 0.1)")
        Curriculum(self.stages)
        validate_task_fields(self)
        if self.tool_penalty is not None and not 0.0 <= self.tool_penalty <= 1.0:
            raise ValueError(f"tool_penalty={self.tool_penalty} must be in [0, 1] (subtracted from a format score of 1), "
                             "or null for the task's own")
        if self.tool_penalty is not None and self.task == "fc":
            raise ValueError("tool_penalty applies to the qa and math rewards; fc's ToolRL reward has no tool-call "
                             "penalty: leave it unset (null)")
        if self.reward_variant not in REWARD_VARIANTS:
            raise ValueError(f"reward_variant={self.reward_variant!r}: use one of {', '.join(REWARD_VARIANTS)}")
        check_report_to(self.report_to)  # the tracker's package is installed (not imported)
        self.model.validate()
        self.rollout.validate()


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False):
        cfg.validate()
        self.cfg = cfg
        self.out = check_output_dir(cfg.output_dir)
        check_model_source(cfg.model.name)  # fails in seconds, not after a minute of hub retries
        self.curriculum = Curriculum(cfg.stages)
        self.task, self.tools, self.instruction = setup_task(cfg)  # clear errors before loading a model
        task = self.task
        self.train_set = task.load(cfg.train_data, split=cfg.train_split) if cfg.train_data else task.load(task.bundled("train"))
        self.by_hops = split_by_hops(self.train_set, cfg.prompts_per_step, cfg.multi_hop_share)
        self.eval_set = (task.load(cfg.eval_data) if cfg.eval_data else task.load(task.bundled("dev")))[: cfg.eval_size]
        self.demo_pool = task.load_demos(cfg.demo_pool or task.bundled("demos"))
        uses_demos = any(stage.demos for stage in self.curriculum.stages)
        misfits = demo_budget_problems(self.demo_pool, load_tokenizer(cfg.model.name), self.tools, cfg.rollout) \
            if cfg.check_demo_budgets and uses_demos else []
        if misfits:  # the budgets would cut what the demos teach: refuse before any model work
            raise ValueError(
                f"{len(misfits)} of {len(self.demo_pool)} demos do not fit the rollout budgets, so the trajectories "
                "they teach would be truncated (and score below a guess). Raise the named budgets or shorten the "
                "demos (or set check_demo_budgets=false for a deliberately tiny smoke run):\n  " + "\n  ".join(misfits))
        if any(stage.gold for stage in self.curriculum.stages) and not self.demo_pool:
            raise ValueError("a gold stage fine-tunes on the demo pool's worked solutions, but the pool is empty: set "
                             "demo_pool to a JSONL of records with a `solution`, or drop `gold` from the stages")
        max_demos = max(s.demos for s in self.curriculum.stages)
        if max_demos > len(self.demo_pool):
            raise ValueError(f"the curriculum asks for {max_demos} demos but the pool has {len(self.demo_pool)}; add demos or lower stages")

        device = distributed.init(cfg.model.device)  # under torchrun: the process group, and this rank's device
        if cfg.prompts_per_step < distributed.world_size():
            raise ValueError(f"prompts_per_step={cfg.prompts_per_step} gives some of the {distributed.world_size()} "
                             f"processes no group to sample: raise prompts_per_step or launch fewer processes")
        self.lock = None  # rank 0 alone locks, repairs and writes the run directory; the others read its checkpoints
        checkpoint = distributed.decided_by_main(lambda: self.open_run(resume))
        torch.manual_seed(cfg.seed)
        if distributed.is_main():  # on a GPU, refuses a run that does not fit, naming the knobs
            memory_report(replace(cfg, prompts_per_step=-(-cfg.prompts_per_step // distributed.world_size())))  # a rank's rollouts
        model_cfg = cfg.model if distributed.world_size() == 1 else replace(cfg.model, device=device)
        self.model, self.tokenizer = load_policy(model_cfg, adapter=checkpoint / "adapter" if checkpoint else None,
                                                 max_seq_length=cfg.rollout.max_context_tokens)
        params = [p for p in self.model.parameters() if p.requires_grad]
        distributed.broadcast_params(params)  # every rank starts from rank 0's adapter
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scaler = LossScaler.for_model(self.model)  # fp16 only: dynamic loss scaling
        self.engine = make_engine(self.model, self.tokenizer, self.tools, cfg.rollout, final_stops=task.final_stops,
                                  invalid_message=task.invalid_message)
        self.step_index = 0
        if checkpoint is not None:
            self.load_state(checkpoint)  # on every rank: the state is the run's, not a rank's
        if distributed.is_main():
            changes = changed_keys(self.out / "config.yaml", cfg)
            if changes:
                print(f"[icrl-lite] warning: {self.out}/config.yaml is replaced by this run's config, which differs in: "
                      f"{'; '.join(changes)} (each checkpoint keeps the config it was saved with)", file=sys.stderr)
            save_config(cfg, self.out / "config.yaml")

    def open_run(self, resume: bool) -> Path | None:
        """Lock the run directory (one run per output_dir: a second process is refused), repair a crash's leftovers,
        trim metrics.jsonl; the checkpoint to continue from (None: step 0)."""
        self.lock = RunLock(self.out).acquire(take_over=True)
        try:
            return open_run_dir(self.out, resume)
        except BaseException:
            self.lock.release()
            raise

    def lr_lambda(self, step: int) -> float:
        total = self.curriculum.total_steps
        warmup = max(1, int(self.cfg.warmup_ratio * total))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # ---- the loop -------------------------------------------------------------------------------------
    def train(self) -> list[dict]:
        """Train to the end of the curriculum. Ctrl-C stops cleanly: no traceback, the step that had just
        finished is saved if it was not, and the resume command is printed (then KeyboardInterrupt is re-raised)."""
        cfg, total = self.cfg, self.curriculum.total_steps
        history = []
        main = distributed.is_main()  # rank 0 alone evaluates, logs and checkpoints (the only rank without torchrun)
        tracker = open_tracker(cfg.report_to if main else "none", self.out, to_dict(cfg), self.step_index)  # metrics.jsonl's second copy
        if main:
            self.lock.acquire()  # again, when an earlier train() released it
        bar = tqdm(total=total, initial=self.step_index, desc="train", disable=not cfg.progress or not main,
                   dynamic_ncols=True)
        stepping = False  # inside step() or before step_index counts it: the model may be mid-update
        try:
            while self.step_index < total:
                stepping = True
                metrics = self.step()
                self.step_index += 1
                stepping = False
                last = self.step_index == total
                if main:  # the other ranks go on to the next step and wait for rank 0 at its first gather
                    if cfg.eval_every and (self.step_index % cfg.eval_every == 0 or last):
                        metrics.update({f"eval/{k}": v for k, v in self.evaluate().items()})
                    with (self.out / "metrics.jsonl").open("a") as f:
                        f.write(json.dumps(metrics) + "\n")
                    tracker.log(metrics, self.step_index)
                    if (cfg.save_every and self.step_index % cfg.save_every == 0) or last:
                        self.save()
                history.append(metrics)
                bar.update(1)
                calls = {t.name: f"{metrics[self.task.tool_metric(t.name)]:.2f}" for t in self.tools}
                bar.set_postfix(demos=metrics["demos"], reward=f"{metrics['reward']:.3f}", em=f"{metrics['em']:.2f}",
                                **calls, tok_s=f"{metrics['gen_tokens_per_s']:.0f}")
        except KeyboardInterrupt:
            bar.close()
            if not main:
                raise
            latest = latest_checkpoint(self.out)
            finished = not stepping and last_logged_step(self.out) == self.step_index  # trained and logged
            saved = False
            if finished and self.step_index > 0 and (latest is None or latest.name != f"checkpoint-{self.step_index}"):
                latest, saved = self.save(), True  # keeping the finished step is quick
            where = (f"after step {self.step_index}" if finished
                     else f"during step {self.step_index + 1 if stepping else self.step_index}")
            resume_from = (latest.name + (" (saved just now)" if saved else "") if latest is not None
                           else "step 0 (there is no checkpoint yet)")
            print(f"\n[icrl-lite] interrupted {where} of {total}. A resume continues from {resume_from}:\n"
                  f"    icrl-lite train --resume output_dir={shlex.quote(str(self.out))}", file=sys.stderr)
            raise
        finally:
            bar.close()
            tracker.close()
            if main:
                self.lock.release()
        return history

    def step(self) -> dict:
        cfg, step, size = self.cfg, self.step_index, self.cfg.num_generations
        started = time.time()
        lr = self.set_learning_rate(step)  # the schedule follows the step, whether or not it updates
        if distributed.world_size() > 1:  # each rank's own streams (LoRA dropout), a function of the step and rank
            random.seed(distributed.rank_seed(cfg.seed * 1_000_003 + step))
            torch.manual_seed(distributed.rank_seed(cfg.seed * 1_000_003 + step))
        if self.curriculum.gold_at(step):
            return self.gold_step(started, lr)
        demos, zero_shot = self.curriculum.demos_at(step), self.curriculum.zero_shot_at(step, size)
        questions = self.questions_at(step)  # the whole step's, on every rank
        mine = distributed.share(len(questions))  # the groups this rank samples: all of them in one process
        bare = {i: self.prompt(questions[i], 0, step, i) for i in mine}  # each question without demos
        prompts, counts = [], []
        for i in mine:  # a group: size - zero_shot rollouts with demos, then zero_shot without
            for k, n in ((demos, size - zero_shot), (0, zero_shot)):
                if n:
                    prompts.append(self.prompt(questions[i], k, step, i) if k else bare[i])
                    counts.append(n)
        shots = ([demos] * (size - zero_shot) + [0] * zero_shot) * len(questions)  # demos in each rollout's prompt
        seed = distributed.rank_seed(cfg.seed * 1_000_003 + step)
        rollouts = self.engine.generate(prompts, counts, torch.Generator(device=self.model.device).manual_seed(seed))
        gen_seconds = time.time() - started

        golds = [questions[i][self.task.gold_field] for i in mine for _ in range(size)]
        progress = step / max(1, self.curriculum.total_steps - 1)
        alpha = self.alpha_at(progress)
        scored = [score(r, g, self.task, self.tools, alpha, cfg.reward_variant, progress, cfg.tool_penalty,
                        cfg.answer_credit) for r, g in zip(rollouts, golds)]
        # every rank's scores (group-contiguous, in question order): advantages and metrics are the whole step's
        ranks = distributed.gather({"scored": scored, "texts": [r.text for r in rollouts], "gen_seconds": gen_seconds,
                                    "sampled": sum(r.sampled_tokens for r in rollouts)})
        scored = [m for part in ranks for m in part["scored"]]
        rewards = torch.tensor([m["reward"] for m in scored])  # (N,)
        advantages, informative = group_advantages(rewards, size, scale=cfg.scale_rewards)  # (N,), (N,)
        trained = []  # (rollout n of the step, advantage, off-policy) of every rank's rollouts the update trains
        for n, k in enumerate(shots):
            offpolicy = k > 0 and cfg.demo_loss_prompt == "zero_shot"
            if offpolicy and cfg.offpolicy_weight == "correct":  # rejection sampling: right answers, weight 1
                if scored[n]["em"] == 1.0:
                    trained.append((n, 1.0, offpolicy))
                continue
            if not informative[n] or (offpolicy and cfg.offpolicy_weight == "positive" and advantages[n] <= 0):
                continue
            trained.append((n, advantages[n].item(), offpolicy))
        first = mine.start * size  # this rank's first rollout in the step's order
        items = [LossItem(rollouts[n - first], bare[n // size] if offpolicy else rollouts[n - first].prompt_ids, a,
                          offpolicy) for n, a, offpolicy in trained if n - first in range(len(rollouts))]
        update = self.update(items) if trained else {}  # every rank updates when any does: the gradients are summed
        pushed_up = [scored[n]["em"] == 1.0 for n, a, _ in trained if a > 0]  # by whether their answer was right
        if distributed.is_main():
            texts = [text for part in ranks for text in part["texts"]]
            with (self.out / "samples.jsonl").open("a") as f:  # every trajectory, to read what the policy does
                f.writelines(json.dumps({"step": step + 1, "question": questions[n // size]["question"], "demos": k,
                                         "reward": m["reward"], "advantage": advantages[n].item(), "text": text}) + "\n"
                             for n, (text, k, m) in enumerate(zip(texts, shots, scored)))

        sampled = sum(part["sampled"] for part in ranks)
        gen_seconds = max(part["gen_seconds"] for part in ranks)  # the step waits for the slowest rank
        metrics = {
            "step": step + 1, "demos": demos, "zero_shot_rollouts": zero_shot * cfg.prompts_per_step,
            "stage": self.curriculum.stage_at(step),
            **mean_metrics(scored),
            "reward_std": rewards.std().item(),
            "informative_groups": int(informative.sum()) // size,
            "groups": cfg.prompts_per_step,
            "trained_rollouts": len(trained), "offpolicy_rollouts": sum(offpolicy for _, _, offpolicy in trained),
            # of the rollouts whose probability the step raises (A > 0): how many had the right answer, and how many
            # rank above their group's mean without it (on format or tool use alone)
            "pushed_up_correct": sum(pushed_up), "pushed_up_wrong": len(pushed_up) - sum(pushed_up),
            **health(scored, questions, informative, size, self.task, self.tools), "alpha": alpha,
            "loss": update.get("loss", 0.0), "kl": update.get("kl", 0.0), "grad_norm": update.get("grad_norm", 0.0),
            "clip_fraction": update.get("clip_fraction", 0.0),
            "lr": lr,
            "loss_scale": self.scaler.scale_factor, "skipped_updates": self.scaler.skipped_steps,  # fp16 overflows
        }
        if 0 < zero_shot < size:  # mixed groups: how the rollouts without demos did
            metrics.update({f"zs/{k}": v for k, v in mean_metrics([m for m, k in zip(scored, shots) if k == 0]).items()})
        if cfg.probe_demos and distributed.is_main():
            metrics.update(self.probe())
        metrics.update({"step_seconds": time.time() - started, "gen_seconds": gen_seconds,
                        "gen_tokens_per_s": sampled / max(gen_seconds, 1e-9)})
        return metrics

    def gold_step(self, started: float, lr: float) -> dict:
        """A supervised step (`Stage.gold`, a baseline, not ICRL): `prompts_per_step` worked solutions of the demo
        pool, each under its own question's 0-demo prompt with the tools' results masked, trained with advantage 1
        at ratio 1, i.e. on their tokens' mean negative log-likelihood. Nothing is sampled; the metrics' reward
        columns score the solutions themselves."""
        cfg, step = self.cfg, self.step_index
        picks = random.Random(cfg.seed * 1_000_003 + step).sample(range(len(self.demo_pool)),
                                                                  min(cfg.prompts_per_step, len(self.demo_pool)))
        demos = [self.demo_pool[j] for j in picks]  # the whole step's; each rank trains on its share
        items = []
        for i in distributed.share(len(demos)):
            prompt = self.prompt(demos[i], 0, step, i)
            rollout = solution_rollout(self.tokenizer, prompt, demos[i]["solution"], self.tools)
            items.append(LossItem(rollout, prompt, 1.0, offpolicy=True, supervised=True))
        progress = step / max(1, self.curriculum.total_steps - 1)
        scored = [score(it.rollout, demos[i][self.task.gold_field], self.task, self.tools, cfg.alpha, cfg.reward_variant,
                        progress, cfg.tool_penalty) for it, i in zip(items, distributed.share(len(demos)))]
        scored = [m for part in distributed.gather(scored) for m in part]
        update = self.update(items)
        metrics = {
            "step": step + 1, "demos": 0, "zero_shot_rollouts": 0, "stage": self.curriculum.stage_at(step),
            **mean_metrics(scored), "reward_std": 0.0, "informative_groups": 0, "groups": 0, "rollouts": 0,
            "gold_solutions": len(demos), "trained_rollouts": len(demos), "offpolicy_rollouts": len(demos),
            "pushed_up_correct": sum(m.get("em", 0.0) == 1.0 for m in scored),
            "pushed_up_wrong": sum(m.get("em", 0.0) != 1.0 for m in scored),
            "loss": update.get("loss", 0.0), "kl": 0.0, "grad_norm": update.get("grad_norm", 0.0), "clip_fraction": 0.0,
            "lr": lr, "loss_scale": self.scaler.scale_factor, "skipped_updates": self.scaler.skipped_steps,
        }
        if cfg.probe_demos and distributed.is_main():
            metrics.update(self.probe())
        metrics.update({"step_seconds": time.time() - started, "gen_seconds": 0.0, "gen_tokens_per_s": 0.0})
        return metrics

    def questions_at(self, step: int) -> list[dict]:
        """The step's `prompts_per_step` training questions, a function of the seed and the step (so a resumed run
        draws the same ones): uniform, or `multi_hop_share` of them from the questions needing 2+ hops."""
        rng = random.Random(self.cfg.seed * 1_000_003 + step)
        if self.by_hops is None:
            return rng.sample(self.train_set, self.cfg.prompts_per_step)
        single, multi = self.by_hops
        k = round(self.cfg.multi_hop_share * self.cfg.prompts_per_step)
        return rng.sample(multi, k) + rng.sample(single, self.cfg.prompts_per_step - k)

    def alpha_at(self, progress: float) -> float:
        """The reward's accuracy weight at `progress` (0 at the first step, 1 at the last): `alpha`, or annealed
        linearly to `alpha_final`."""
        cfg = self.cfg
        return cfg.alpha if cfg.alpha_final is None else cfg.alpha + (cfg.alpha_final - cfg.alpha) * progress

    def set_learning_rate(self, step: int) -> float:
        """Set and return the learning rate of `step` (warmup + cosine): a function of the step alone, so
        steps without an update and resumed runs keep the schedule."""
        lr = self.cfg.learning_rate * self.lr_lambda(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def prompt(self, question: str | dict, demos: int, step: int, index: int) -> list[int]:
        picks = choose_demos(len(self.demo_pool), demos, self.cfg.seed, step, index if self.cfg.demo_choice == "per_prompt" else 0)
        messages = build_messages(question, [self.demo_pool[j] for j in picks], self.cfg.demo_layout, self.instruction)
        return render_prompt(self.tokenizer, messages)

    @torch.no_grad()
    def probe(self) -> dict[str, float]:
        """How likely the demo-free policy is to act as the demos do, for the first `probe_demos` pool demos under
        the 0-demo prompt at temperature 1: `probe/tool_logp`, the log-prob of the first token of the first tool
        tag in the demo's solution given the solution's text before it (usually its <think> block), and
        `probe/start_logp`, the log-prob of the solution's first token (how it opens, e.g. `<think>`)."""
        tags = [t.open_tag for t in self.tools]
        tool, start = [], []
        for demo in self.demo_pool[: self.cfg.probe_demos]:
            at = min((i for i in (demo["solution"].find(t) for t in tags) if i >= 0), default=-1)
            if at < 0:
                continue
            tag = next(t for t in tags if demo["solution"].startswith(t, at))
            ids = self.tokenizer(demo["solution"][:at] + tag, add_special_tokens=False)["input_ids"]
            before = self.tokenizer(demo["solution"][:at], add_special_tokens=False)["input_ids"]
            shared = next((i for i, (x, y) in enumerate(zip(before, ids)) if x != y), len(before))  # tokens before the tag
            if shared >= len(ids):
                continue
            logp = response_logprobs(self.model, self.prompt(demo, 0, 0, 0), [ids[: shared + 1]], self.cfg.logprob_chunk)
            tool.append(logp[0, -1].item())
            start.append(logp[0, 0].item())
        if not tool:
            return {}
        return {"probe/tool_logp": sum(tool) / len(tool), "probe/start_logp": sum(start) / len(start)}

    def update(self, items: list[LossItem]) -> dict[str, float]:
        """`updates_per_step` optimizer steps on the rollouts, each a token-level mean over all their sampled tokens.

        Each item is scored under its loss prompt at the sampling temperature. On-policy tokens (and, with
        offpolicy_weight=ratio, off-policy ones) take the PPO ratio against the sampler's own log-probs, which
        also corrects the merged-adapter / unmerged-adapter difference and makes the clip act from the second
        update on. Off-policy items (sampled with demos, scored without) use ratio 1 on positive advantages
        (`positive`: weighted fine-tuning, unclipped in every update) or LUFFY's shaping (`shaped`), and no KL
        term (the reference log-probs are computed for on-policy batches only). Items sharing a prompt are scored on one shared prompt pass
        (`response_logprobs`), `micro_batch_size` at a time, with gradients accumulated over the update. The
        reference log-probs are computed once, all batches under one switch to the reference policy. Metrics are
        those of the first update (grad_norm: the mean).

        Under torchrun each rank passes its own items (none is fine): the token counts are the whole step's and the
        gradients are summed over the ranks before clipping, so every rank takes the single process's update.
        """
        cfg, device = self.cfg, self.model.device
        temperature = cfg.rollout.temperature or 1.0
        self.model.train()
        # the whole step's token counts, over every rank's items: each rank's loss is its tokens' share of the mean
        num_tokens, on_policy_tokens = distributed.sum_over_ranks(
            sum(it.rollout.sampled_tokens for it in items),
            sum(it.rollout.sampled_tokens for it in items if not it.offpolicy))
        on_policy_tokens = max(1, on_policy_tokens)  # what kl averages
        groups: dict[tuple, list[LossItem]] = {}
        for it in items:
            groups.setdefault((tuple(it.prompt), it.offpolicy), []).append(it)
        batches = [(list(prompt), offpolicy, members[start:start + cfg.micro_batch_size])
                   for (prompt, offpolicy), members in groups.items()
                   for start in range(0, len(members), cfg.micro_batch_size)]
        shared = self.shared_prefix([prompt for prompt, _, _ in batches])
        references: dict[int, torch.Tensor] = {}  # batch -> (b, R) reference log-probs, once for all updates
        if cfg.beta > 0 and not all(offpolicy for _, offpolicy, _ in batches):
            with torch.no_grad(), reference_mode(self.model):  # switched off once (it walks every module)
                reference_prefix = SharedPrefix.compute(self.model, shared) if shared else None
                for b, (prompt, offpolicy, batch) in enumerate(batches):
                    if offpolicy:  # tokens the scored policy did not sample: k3 would be biased, so no KL there
                        continue
                    references[b] = response_logprobs(self.model, prompt, [it.rollout.response_ids for it in batch],
                                                      cfg.logprob_chunk, temperature, prefix=reference_prefix)
        first: dict[str, float] = {}
        norms = []
        for epoch in range(cfg.updates_per_step):
            totals = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
            prefix = SharedPrefix.compute(self.model, shared) if shared else None  # the weights change every epoch
            for b, (prompt, offpolicy, batch) in enumerate(batches):
                rollouts = [it.rollout for it in batch]
                responses = [r.response_ids for r in rollouts]
                mask = loss_mask(rollouts).to(device)  # (b, R)
                adv = torch.tensor([it.advantage for it in batch], device=device)  # (b,)
                supervised = batch[0].supervised  # a gold step's batches hold only worked solutions: plain NLL, T = 1
                logp = response_logprobs(self.model, prompt, responses, cfg.logprob_chunk, 1.0 if supervised else temperature,
                                         prefix=prefix)  # (b, R)
                shaped = offpolicy and not supervised and cfg.offpolicy_weight == "shaped"
                old = (logp.detach() if supervised or (offpolicy and cfg.offpolicy_weight != "ratio")
                       else sampler_logprobs(rollouts).to(device))
                loss, metrics = grpo_loss(
                    logp, old, torch.zeros_like(adv) if shaped else adv, mask,  # shaped: its own loss below
                    ref_logp=references.get(b), epsilon=cfg.epsilon, beta=cfg.beta, num_tokens=num_tokens,
                    epsilon_high=cfg.epsilon_high,
                )
                if shaped:
                    loss = loss + shaped_offpolicy_loss(logp, adv, mask, gamma=cfg.shaping_gamma, num_tokens=num_tokens)
                self.scaler.scale(loss).backward()
                weight = mask.sum().item() / num_tokens
                totals["loss"] += loss.item()
                totals["kl"] += metrics["kl"].item() * mask.sum().item() / on_policy_tokens if b in references else 0.0
                totals["clip_fraction"] += metrics["clip_fraction"].item() * weight
            if prefix is not None:
                prefix.backward()  # the demos' one backward pass, with the gradient every batch sent them
            params = [p for p in self.model.parameters() if p.requires_grad]
            distributed.all_reduce_grads(params)  # summed over the ranks: the gradient of the whole step's token mean
            norm = self.scaler.unscale_and_clip(params, cfg.max_grad_norm)
            if self.scaler.step(self.optimizer):  # False: an fp16 overflow, the update is skipped
                norms.append(norm)
            self.optimizer.zero_grad(set_to_none=True)
            first = first or totals
        first = dict(zip(first, distributed.sum_over_ranks(*first.values())))  # each rank's share of the means
        return {**first, "grad_norm": sum(norms) / len(norms) if norms else 0.0,
                "loss_scale": self.scaler.scale_factor, "skipped_updates": self.scaler.skipped_steps}

    def shared_prefix(self, prompts: list[list[int]]) -> list[int]:
        """The tokens every loss prompt of an update starts with (the step's demonstrations with
        demo_choice=per_step and demo_loss_prompt=own; the system prompt and instruction otherwise), when there
        are several batches and it is at least `rollout.shared_prefix_min` tokens long: computed once per update
        (`SharedPrefix`), not once per batch. Each prompt keeps at least one token of its own. Empty = no sharing
        (one batch, a short prefix, sharing off, or gradient checkpointing, whose layers run without a cache)."""
        least = self.cfg.rollout.shared_prefix_min
        if not least or checkpoints_layers(self.model):
            return []
        length = shared_prefix_length(prompts)
        return list(prompts[0][:length]) if length >= least else []

    def evaluate(self) -> dict[str, float]:
        cfg = EvalConfig(task=self.cfg.task, seed=self.cfg.seed, rollout=replace(self.cfg.rollout, temperature=0.0))
        summary, _ = run_eval(self.model, self.tokenizer, self.eval_set, self.task, self.tools, self.instruction, cfg,
                              progress=False)
        return summary

    def final_evaluation(self) -> dict:
        """Greedy evaluation on the same `final_eval` questions of the untrained model (adapter disabled) zero-shot
        and with `final_eval_demos` demos, and of the trained one zero-shot. Records go to
        final-eval-{untrained,untrained_demos,trained}.jsonl, the summaries with 95% bootstrap intervals to
        final_eval.json; the untrained results are reused when the run is resumed."""
        cfg, task = self.cfg, self.task
        source = cfg.final_eval if Path(cfg.final_eval).suffix in (".jsonl", ".json") else task.bundled(cfg.final_eval)
        examples = task.load(source)[: cfg.final_eval_size or None]
        ecfg = EvalConfig(task=cfg.task, seed=cfg.seed, rollout=replace(cfg.rollout, temperature=0.0))
        path = self.out / "final_eval.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        with_demos = min(cfg.final_eval_demos, len(self.demo_pool))
        key = {"source": str(source), "questions": len(examples), "demos": with_demos, "demo_layout": cfg.demo_layout,
               "content": digest(examples), "demo_pool": digest(self.demo_pool)}  # reuse only what these made
        results = {"eval": key}
        names = ["untrained", "untrained_demos", "trained"] if with_demos else ["untrained", "trained"]
        for name in names:
            if name != "trained" and saved.get("eval") == key and name in saved:
                results[name] = saved[name]
                continue
            demos = with_demos if name == "untrained_demos" else 0
            with reference_mode(self.model) if name != "trained" else contextlib.nullcontext():
                summary, records = run_eval(self.model, self.tokenizer, examples, task, self.tools, self.instruction,
                                            replace(ecfg, demos=demos, demo_layout=cfg.demo_layout, demo_choice="per_step"),
                                            self.demo_pool,
                                            progress=cfg.progress)
            with (self.out / f"final-eval-{name}.jsonl").open("w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
            summary["intervals"] = intervals(summary, records)
            summary["demos"] = demos
            results[name] = summary
        results["trained"]["step"] = self.step_index
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, path)
        return results

    # ---- checkpoints ----------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write checkpoint-<step>: adapter, trainer state and config, atomically (`checkpoints.save_checkpoint`)."""
        def write(staging: Path) -> None:
            self.model.save_pretrained(staging / "adapter")
            torch.save({
                "step": self.step_index,
                "stage": self.curriculum.stage_at(max(self.step_index - 1, 0)),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            }, staging / "trainer_state.pt")
            save_config(self.cfg, staging / "config.yaml")

        return save_checkpoint(self.out, self.step_index, write, self.cfg.keep_checkpoints)

    def load_state(self, checkpoint: Path) -> None:
        state = load_trainer_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:  # the learning rate is a function of the step: nothing to restore for it
            self.scaler.load_state_dict(state["scaler"])
        random.setstate(state["rng"]["python"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step_index = state["step"]
        if distributed.is_main():
            print(f"[icrl-lite] resumed from {checkpoint} at step {self.step_index}")


@dataclass
class LossItem:
    """One rollout as the loss sees it: the prompt it is scored under, its advantage, and whether its tokens
    were sampled from another prompt (with demos) than the one they are scored under (off-policy)."""

    rollout: Rollout
    prompt: list[int]
    advantage: float
    offpolicy: bool = False
    supervised: bool = False  # a worked solution (Stage.gold): ratio 1 whatever offpolicy_weight says


OFFPOLICY_WEIGHTS = ("positive", "correct", "ratio", "shaped")


def split_by_hops(questions: list[dict], per_step: int, share: float) -> tuple[list[dict], list[dict]] | None:
    """(single-hop, multi-hop) questions for `multi_hop_share` sampling (None when share is 0), checked to hold
    enough of each for a step."""
    if not share:
        return None
    if not all("hops" in q for q in questions):
        raise ValueError("multi_hop_share needs a `hops` field (1, 2, ...) on every training question; the bundled QA "
                         "data has one. Add it to your data, or set multi_hop_share=0")
    multi = [q for q in questions if q["hops"] >= 2]
    single = [q for q in questions if q["hops"] < 2]
    k = round(share * per_step)
    if len(multi) < k or len(single) < per_step - k:
        raise ValueError(f"multi_hop_share={share} takes {k} of {per_step} questions a step from {len(multi)} multi-hop "
                         f"and {per_step - k} from {len(single)} single-hop ones: too few; change the share")
    return single, multi


def health(scored: list[dict], questions: list[dict], informative: torch.Tensor, size: int, task, tools) -> dict:
    """A step's tool-use health beyond the reward's mean (the per-rollout `repeated_calls`, `answer_is_query`,
    `answer_retrieved`, `closed_book`, `invalid_turns`, `response_tokens` are averaged with the reward metrics): the share of groups
    without reward spread (nothing to learn from), the within-group spread of correctness and of format (where
    GRPO's signal comes from), and EM and tool calls by hop count where the questions say."""
    spread = {f"spread/{key}": group_spread(torch.tensor([m[key] for m in scored], dtype=torch.float64), size)
              for key in ("em", "format") if key in scored[0]}
    records = [{**m, **({"hops": q["hops"]} if "hops" in q else {})}
               for m, q in zip(scored, (q for q in questions for _ in range(size)))]
    return {"no_spread_groups": 1.0 - informative.float().mean().item(), **spread,
            **by_hops(records, ("em", *(task.tool_metric(t.name) for t in tools)))}


def right_pad(rows: list[list[float]]) -> torch.Tensor:
    """(b, R) float tensor of per-token values, right-padded with 0 to the longest row."""
    out = torch.zeros((len(rows), max(len(row) for row in rows)))
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.float)
    return out


def digest(records: list[dict]) -> str:
    """A short sha256 of JSON records' content (the questions or demos an evaluation ran on)."""
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:16]


def sampler_logprobs(rollouts: list[Rollout]) -> torch.Tensor:
    """(b, R) the sampler's log-prob of each response token (0 where forced or past the end)."""
    return right_pad([r.logprobs for r in rollouts])


def loss_mask(rollouts: list[Rollout]) -> torch.Tensor:
    """(b, R) float mask over response positions, right-padded with 0: the rollout's own bits, never pad ids."""
    return right_pad([r.loss_mask for r in rollouts])


def run_config(path: Path) -> TrainConfig:
    """The TrainConfig a checkpoint (or run) directory was trained under (defaults when it saved none)."""
    from .config import load_config

    return load_config(TrainConfig, path / "config.yaml") if (path / "config.yaml").exists() else TrainConfig()

