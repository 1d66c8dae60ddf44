"""Batched multi-turn rollouts with tool calls, on one KV cache that is never re-read.

For B prompts x G samples the engine prefills each distinct prompt once (a prefix they all share, such as
the same demonstrations, only once), copies its KV cache G times and then decodes all rows together. A row generates until a tool's closing tag, `</answer>` or EOS; the tool's
observation (`<information>...</information>`) is then *forced* into the context: its tokens are fed to the
model in one chunk and masked out of the loss. Rows that finish leave the batch at once, so they stop
consuming compute. Every token of a rollout carries a mask bit: 1 = sampled by the policy (a sampled EOS
included, even when pad == eos), 0 = forced (tool output, the corrective message).

How rows of different lengths share one cache: each step feeds every row the same number of slots; a row
with nothing to feed gets a masked hole. Positions are tracked per row, so holes do not shift RoPE, and
when holes make up most of the cache it is compacted. Forced chunks wait a few steps so that several rows'
observations go through the model together.

The EOS rule: an end-of-sequence token ends the rollout when the turn holds an answer or tools are off (the
final turn). Otherwise, by default, it is ICRL's loop: a turn with neither a tool call nor an answer, ended by
EOS or by the turn budget, gets the corrective message and the policy tries again (`stop_at_eos=true` ends
the rollout at EOS instead). Corrective turns count toward `max_turns`; after `max_turns` the final turn has
tools disabled.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from typing import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .cpu import FastDecoder
from .logprobs import chosen_logprobs
from .policy import decoder, generation_mode, merged_adapter, run_decoder
from .prompts import INVALID_ACTION
from .tools import Tool, find_call



TOOL_POOL = ThreadPoolExecutor(max_workers=8)  # shared by all engines: threads are made once, not per engine


CASCADE_MIN = 256  # a shared prompt prefix this long is attended as one block in decode steps (FastDecoder)


@dataclass
class RolloutConfig:
    max_turns: int = 2
    """Tool calls (and corrective turns) per rollout; one final turn without tools follows (the paper: 6)."""
    max_turn_tokens: int = 64
    """Tokens the policy may sample in one turn before the turn is cut (raise it for models that think at length)."""
    max_response_tokens: int = 512
    """Tokens of the whole response (sampled + tool output) before the rollout is truncated. The default fits the
    bundled two-hop demos (410-483 tokens with two searches' results); training refuses budgets that cut a demo."""
    max_obs_tokens: int = 500
    """Tool observations are cut to this many tokens."""
    max_context_tokens: int = 5000
    """Prompt + response cap; a rollout that would pass it is truncated."""
    temperature: float = 1.0
    """Sampling temperature; 0 = greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    merge_lora: bool = True
    """Decode with the LoRA adapter merged into the base weights (~2x faster; weights restored exactly). Training
    corrects for the tiny merged/unmerged difference: the loss's ratio is taken against the sampler's own log-probs."""
    fast_decode: bool = True
    """Run decode steps through `icrl_lite.cpu.FastDecoder` (fused, prepacked weights; CPU, Llama-family models,
    merged or no LoRA) instead of transformers' forward; anything it does not cover falls back by itself."""
    shared_prefix_min: int = 64
    """Prompts of one batch that share at least this many leading tokens (the same demonstrations) run that
    prefix once, in sampling and in the update's loss (one forward/backward of the prefix per update, exact
    gradients); 0 = never share (every prompt run in full)."""
    after_observation: str = ""
    """Text forced after every tool result, before the policy goes on (e.g. "<think>": it opens the policy's reading
    of what came back, as the demos do; SmolLM2 otherwise answers with the entity it searched for and never searches
    a second time). Not sampled, so not in the loss; the reward scores it as part of the response. Empty = none."""
    stop_at_eos: bool = False
    """What an end-of-sequence token does while tools are still available and the turn holds no valid action:
    false = ICRL's loop (the corrective message is forced and the policy tries again; the EOS stays in the
    response with mask 1), true = the rollout ends there. An EOS in the final (tools-off) turn always ends it."""
    backend: str = "auto"
    """auto | vllm: what samples the rollouts of training and evaluation. auto = icrl-lite's own engine (CPUs, GPUs).
    vllm = vLLM in the same process and GPU (colocated), the LoRA adapter handed to it each step without merging
    (icrl_lite/vllm_engine.py); optional, needs a CUDA GPU and `pip install 'icrl-lite[vllm]'`. It has not run on a
    GPU in this project's CI (no GPU): its contract is tested with a stand-in. `icrl-lite chat` keeps auto."""
    vllm_gpu_memory_utilization: float = 0.3
    """backend=vllm: the fraction of the GPU's memory vLLM takes (its own copy of the base weights, the adapter, its
    KV cache); the trained model, its optimizer and the update need the rest."""

    def validate(self) -> None:
        if self.backend not in ("auto", "vllm"):
            raise ValueError(f"rollout.backend={self.backend!r}: use auto (icrl-lite's engine) or vllm (a CUDA GPU "
                             "with `pip install 'icrl-lite[vllm]'`)")
        if not 0 < self.vllm_gpu_memory_utilization < 1:
            raise ValueError(f"rollout.vllm_gpu_memory_utilization={self.vllm_gpu_memory_utilization}: a fraction "
                             "of the GPU's memory in (0, 1), e.g. 0.3")
        if self.shared_prefix_min < 0:
            raise ValueError(f"rollout.shared_prefix_min={self.shared_prefix_min} must be >= 0 (0 = never share)")
        for name in ("max_turns", "max_turn_tokens", "max_response_tokens", "max_obs_tokens", "max_context_tokens"):
            if getattr(self, name) < (0 if name == "max_turns" else 1):
                raise ValueError(f"rollout.{name}={getattr(self, name)} must be positive")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("rollout.temperature must be >= 0 and rollout.top_p in (0, 1]")


@dataclass
class Rollout:
    """One sampled trajectory: response tokens after the prompt, with a loss-mask bit per token."""

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)  # 1 = sampled by the policy, 0 = forced
    logprobs: list[float] = field(default_factory=list)  # the sampler's log-prob of each token (0.0 where forced)
    text: str = ""  # decoded response, tool output included (special tokens removed)
    policy_text: str = ""  # only what the policy sampled: what rewards score
    tool_calls: list[dict] = field(default_factory=list)  # {"tool", "query", "observation"}
    opened: list[int] = field(default_factory=list)  # where a forced `after_observation` text ends (response index)
    invalid_turns: int = 0
    finished: bool = False  # ended by an answer, or EOS in the final turn
    truncated: bool = False  # ran out of response/context budget

    @property
    def sampled_tokens(self) -> int:
        return sum(self.loss_mask)

    def sampled_segments(self) -> list[list[int]]:
        """Runs of consecutive policy-sampled token ids (forced tool output and messages removed)."""
        return [tokens for _, tokens in self.sampled_runs()]

    def sampled_runs(self) -> list[tuple[int, list[int]]]:
        """(start index in response_ids, token ids) of each run of policy-sampled tokens."""
        runs, start = [], 0
        for bit, run in groupby(zip(self.response_ids, self.loss_mask), key=lambda pair: pair[1]):
            tokens = [token for token, _ in run]
            if bit:
                runs.append((start, tokens))
            start += len(tokens)
        return runs


@dataclass
class _Row:
    rollout: Rollout
    pending: list[int] = field(default_factory=list)  # tokens to feed before sampling again
    turn_start: int = 0  # index in response_ids where the current turn began
    turns_used: int = 0  # tool calls + corrective turns
    waited: int = 0  # steps a forced chunk has waited
    done: bool = False
    sessions: dict = field(default_factory=dict)  # tool name -> this rollout's session of a stateful tool


class RolloutEngine:
    """Generate tool-using rollouts for a batch of prompts with one shared KV cache."""

    def __init__(self, model, tokenizer, tools: Sequence[Tool], config: RolloutConfig,
                 final_stops: Sequence[str] = ("</answer>",), max_wait: int = 8, invalid_message: str = INVALID_ACTION):
        config.validate()
        self.model, self.tokenizer, self.tools, self.cfg = model, tokenizer, list(tools), config
        self.final_stops = list(final_stops)  # strings that end the rollout (the final answer's closing tag)
        self.max_wait = max_wait
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos_token_ids(model, tokenizer))
        # a stop string can only complete on a token whose text holds its last character
        last_chars = {s[-1] for s in self.final_stops + [t.close_tag for t in self.tools]}
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        self.may_stop = {i for i, piece in enumerate(pieces) if any(c in piece for c in last_chars)}
        self.invalid_ids = self._ids(invalid_message)
        self._fast: FastDecoder | None = None  # set for the length of a `generate` call
        self._prefix_kv: list | None = None  # per layer (keys, values) of the prompts' shared prefix, during a call

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ---- public -------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], num_samples: int | Sequence[int] = 1,
                 generator: torch.Generator | None = None) -> list[Rollout]:
        """Rollouts for every prompt x `num_samples` (one count for all prompts, or one per prompt), ordered
        prompt-major (group-contiguous).

        Each rollout records the sampler's log-prob of every sampled token (`Rollout.logprobs`): log
        softmax(logits / temperature), after top-p truncation, on the weights that sampled it (merged or not).
        """
        counts = [num_samples] * len(prompts) if isinstance(num_samples, int) else list(num_samples)
        if len(counts) != len(prompts) or any(c < 0 for c in counts):
            raise ValueError(f"num_samples must be one count >= 0 or one per prompt ({len(prompts)}), got {num_samples!r}")
        prompts = [p for p, c in zip(prompts, counts) if c > 0]
        counts = [c for c in counts if c > 0]
        if not prompts:
            return []
        rows = [_Row(Rollout(prompt_ids=list(p))) for p, c in zip(prompts, counts) for _ in range(c)]
        try:
            with generation_mode(self.model), merged_adapter(self.model, self.cfg.merge_lora):
                self._fast = FastDecoder.build(self.model) if self.cfg.fast_decode else None  # the merged weights
                self._run(rows, prompts, counts, generator)
        finally:
            self._fast = self._prefix_kv = None  # its weight copies and the prefix's KV go with the call
            for row in rows:  # stateful tools' sessions end with their rollout, even after an error
                for session in row.sessions.values():
                    session.close()
        for row in rows:
            r = row.rollout
            r.text = self.tokenizer.decode(r.response_ids, skip_special_tokens=True)
            r.policy_text = "".join((self.cfg.after_observation if start in r.opened else "")  # the forced opener: scored
                                    + self.tokenizer.decode(s, skip_special_tokens=True) for start, s in r.sampled_runs())
        return [row.rollout for row in rows]

    # ---- the decode loop -------------------------------------------------------------------------------
    def _run(self, rows: list[_Row], prompts, counts: list[int], generator) -> None:
        """Decode `rows` (prompt-major: `counts[i]` rows for prompt i) to the end, in place."""
        device = self.model.device
        cache = DynamicCache()
        cache.layer_class_to_replicate = SlabLayer
        logits, attn, pos = self._prefill(prompts, cache)
        if not bool(torch.isfinite(logits).all()):  # once per call: NaN logits must never reach sampling
            dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
            raise FloatingPointError(
                f"the model's next-token logits after the prompt are not finite (weights in {dtype}): the forward pass "
                f"overflowed{' (Qwen2 models overflow in fp16, e.g. on a T4)' if dtype == 'float16' else ''}. Set "
                "model.dtype=fp32, or bf16 on a GPU that has it (compute capability 8.0+), and rerun")
        expand = on_device([p for p, c in enumerate(counts) for _ in range(c)], device)  # (R,) row -> its prompt
        cache.batch_select_indices(expand)
        attn, logits, pos = attn[expand], logits[expand], pos[expand]  # (R, P), (R, V), (R,)
        batch = list(range(len(rows)))  # batch slot -> row index
        valid = [len(rows[r].rollout.prompt_ids) for r in batch]  # per slot, the unmasked positions of its cache

        # The host knows what each step feeds, so it reads back from the device only the sampled tokens and their
        # log-probs, in one copy a step (stop strings and tools need them); each step's inputs go over in one copy.
        while batch:
            ready = [b for b, r in enumerate(batch) if not rows[r].pending]
            if ready:
                # (n, V): no copy when all are ready
                scores = logits if len(ready) == len(batch) else logits[on_device(ready, device)]
                tokens, logps = sample(scores, self.cfg.temperature, self.cfg.top_p, generator, return_logprobs=True)
                picked = torch.stack([tokens.double(), logps.double()]).tolist()  # (2, n): ids < 2^53 stay exact
                calls = [self._accept(rows[batch[b]], int(tok), lp) for b, tok, lp in zip(ready, *picked)]
                self._run_tools([c for c in calls if c is not None])
            keep = [b for b, r in enumerate(batch) if not rows[r].done]
            if len(keep) < len(batch):  # finished rows leave the batch
                index = on_device(keep, device)
                cache.batch_select_indices(index)
                attn, pos, logits = attn[index], pos[index], logits[index]
                batch, valid = [batch[b] for b in keep], [valid[b] for b in keep]
            if not batch:
                break
            feed = self._schedule([rows[r] for r in batch])
            step_ids, step_mask = pad_rows(feed, self.pad_id, device)  # (B, W) right-padded
            fed = [b for b, tokens in enumerate(feed) if tokens]
            new_logits, pos = self._forward(step_ids, step_mask, pos, cache, attn, fed)
            attn = torch.cat([attn, step_mask], dim=1)  # (B, L + width)
            valid = [n + len(tokens) for n, tokens in zip(valid, feed)]
            if len(fed) < len(batch):  # rows that fed nothing keep their logits
                new_logits = torch.where(step_mask.any(1)[:, None], new_logits, logits)
            logits = new_logits
            compacted = compact(cache, attn, valid)
            if compacted is not attn:  # the shared prefix may no longer sit at the same slots in every row
                self._prefix_kv = None
            attn = compacted

    def _prefill(self, prompts, cache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the U distinct prompts into `cache`; return their next-token logits (U, V), mask (U, L), positions (U,).

        When the prompts share a prefix of at least `cfg.shared_prefix_min` tokens (the same demonstrations, the
        same system prompt), it is run once and its KV copied to every row; only the rest of each prompt is
        run per row. The rows then hold [prefix | masked holes | suffix]: positions are per row, so the holes
        shift nothing. Exact up to the summation order of a different batch shape.
        """
        device = self.model.device
        zeros = torch.zeros(len(prompts), dtype=torch.long, device=device)
        shared = shared_prefix_length(prompts)
        if not self.cfg.shared_prefix_min or shared < self.cfg.shared_prefix_min:
            ids, attn = left_pad(prompts, self.pad_id, device)  # (U, P)
            logits, pos = self._forward(ids, attn, zeros, cache, None)
            return logits, attn, pos
        prefix = on_device([list(prompts[0][:shared])], device)  # (1, C)
        ones = torch.ones_like(prefix)
        _, pos = self._forward(prefix, ones, zeros[:1], cache, None)
        if shared >= CASCADE_MIN:  # decode steps read this one copy instead of every row's own
            self._prefix_kv = [(layer.keys.contiguous(), layer.values.contiguous()) for layer in cache.layers]
        cache.batch_select_indices(zeros)  # the prefix's KV, once per prompt
        ids, step_mask = left_pad([p[shared:] for p in prompts], self.pad_id, device)  # (U, S)
        attn = ones.expand(len(prompts), -1)  # (U, C)
        logits, pos = self._forward(ids, step_mask, pos.expand(len(prompts)), cache, attn)
        return logits, torch.cat([attn, step_mask], dim=1), pos

    def _schedule(self, rows: list[_Row]) -> list[list[int]]:
        """Which tokens each row feeds this step: a decode step (one sampled token per row) or a forced
        chunk (tool output of the rows that have some; the others wait one step). Forced chunks wait up
        to `max_wait` steps so that several rows' observations go through the model together."""
        forced = [r for r in rows if len(r.pending) > 1]
        chunk = bool(forced) and (
            2 * len(forced) >= len(rows) or max(r.waited for r in forced) >= self.max_wait
            or all(r.pending for r in rows)
        )
        feed = []
        for r in rows:
            if (len(r.pending) > 1) == chunk and r.pending:
                feed.append(r.pending)
                r.pending, r.waited = [], 0
            else:
                r.waited += len(r.pending) > 1
                feed.append([])
        return feed

    def _forward(self, ids, step_mask, pos, cache, attn, fed: list[int] | None = None):
        """Feed (B, W) tokens; return next-token logits at each row's last fed token and the new positions.
        `fed`: the rows that feed at least one token (None: all of them)."""
        if attn is not None and ids.shape[1] > 1 and fed is not None and len(fed) < len(ids):
            return self._forward_rows(on_device(fed, ids.device), ids, step_mask, pos, cache, attn)
        full = step_mask if attn is None else torch.cat([attn, step_mask], dim=1)  # (B, L + W)
        if self._fast is not None and attn is not None and ids.shape[1] == 1:  # a decode step
            return self._fast(ids[:, 0], full, pos, cache, self._prefix_kv), pos + step_mask.sum(1)
        position_ids = pos[:, None] + (step_mask.cumsum(1) - 1).clamp(min=0)  # (B, W)
        hidden = run_decoder(decoder(self.model), cache, input_ids=ids, attention_mask=full,
                             position_ids=position_ids).last_hidden_state  # (B, W, H)
        last = ids.shape[1] - 1 - step_mask.flip(1).argmax(1)  # (B,) last fed slot, left or right padded
        h = hidden[torch.arange(len(ids), device=ids.device), last]  # (B, H)
        logits = self.model.get_output_embeddings()(h).float()  # (B, V)
        return logits, pos + step_mask.sum(1)

    def _forward_rows(self, rows, ids, step_mask, pos, cache, attn):
        """A forced chunk fed by some rows only: run the model on those rows, give the others masked holes."""
        sub = DynamicCache()
        for layer in cache.layers:
            part = DynamicLayer()
            part.lazy_initialization(layer.keys, layer.values)
            part.keys, part.values = layer.keys[rows], layer.values[rows]
            sub.layers.append(part)
        sub_logits, _ = self._forward(ids[rows], step_mask[rows], pos[rows], sub, attn[rows])
        width = ids.shape[1]
        for layer, part in zip(cache.layers, sub.layers):
            keys = layer.keys.new_zeros((len(ids), layer.keys.shape[1], width, layer.keys.shape[-1]))  # (B, h, W, d)
            values = torch.zeros_like(keys)
            keys[rows], values[rows] = part.keys[:, :, -width:], part.values[:, :, -width:]
            layer.update(keys, values)
        logits = sub_logits.new_zeros((len(ids), sub_logits.shape[-1]))  # (B, V)
        logits[rows] = sub_logits
        return logits, pos + step_mask.sum(1)

    # ---- per-row logic -------------------------------------------------------------------------------
    def _accept(self, row: _Row, token: int, logprob: float = 0.0):
        """Append a sampled token; end the turn when it calls for it. Returns a pending tool call or None."""
        r, cfg = row.rollout, self.cfg
        r.response_ids.append(token)
        r.loss_mask.append(1)
        r.logprobs.append(logprob)
        row.pending = [token]
        turn_len = len(r.response_ids) - row.turn_start
        tools_on = bool(self.tools) and row.turns_used < cfg.max_turns  # without tools a rollout is one turn
        if token in self.eos_ids:
            return self._end_turn(row, tools_on, eos=True)
        if token in self.may_stop:
            text = self.tokenizer.decode(r.response_ids[row.turn_start:])
            stops = self.final_stops + ([t.close_tag for t in self.tools] if tools_on else [])
            if any(s in text for s in stops):
                return self._end_turn(row, tools_on, eos=False, text=text)
        if len(r.response_ids) >= cfg.max_response_tokens or len(r.prompt_ids) + len(r.response_ids) >= cfg.max_context_tokens:
            row.done, r.truncated = True, True
        elif turn_len >= cfg.max_turn_tokens:
            return self._end_turn(row, tools_on, eos=False)
        return None

    def _end_turn(self, row: _Row, tools_on: bool, eos: bool, text: str | None = None):
        r = row.rollout
        if text is None:
            text = self.tokenizer.decode(r.response_ids[row.turn_start:])
        call = find_call(text, self.tools) if tools_on else None
        answer_at = min((i for i in (text.find(s) for s in self.final_stops) if i != -1), default=-1)
        if answer_at != -1 and (call is None or answer_at < text.find(call[0].close_tag)):
            row.done, r.finished = True, True
            return None
        if not tools_on or (eos and call is None and self.cfg.stop_at_eos):  # ended without an answer
            row.done, r.finished = True, eos
            r.truncated = not eos
            return None
        row.turns_used += 1
        if call is None:
            r.invalid_turns += 1
            self._force(row, self.invalid_ids)
            return None
        return row, *call

    def _run_tools(self, calls: list[tuple[_Row, Tool, str]]) -> None:
        """Run this step's tool calls concurrently and force their observations into the rows."""
        for row, tool, _ in calls:
            if tool.session is not None and tool.name not in row.sessions:
                row.sessions[tool.name] = tool.session()
        observations = list(TOOL_POOL.map(lambda call: call[1].run(call[2], call[0].sessions.get(call[1].name)), calls))
        for (row, tool, query), observation in zip(calls, observations):
            obs_ids = self._ids(observation)[: self.cfg.max_obs_tokens]
            observation = self.tokenizer.decode(obs_ids)
            row.rollout.tool_calls.append({"tool": tool.name, "query": query, "observation": observation})
            self._force(row, self._ids(tool.wrap(observation) + self.cfg.after_observation))
            if self.cfg.after_observation and not row.done:
                row.rollout.opened.append(len(row.rollout.response_ids))

    def _force(self, row: _Row, ids: list[int]) -> None:
        r, cfg = row.rollout, self.cfg
        if len(r.response_ids) + len(ids) >= cfg.max_response_tokens or len(r.prompt_ids) + len(r.response_ids) + len(ids) >= cfg.max_context_tokens:
            row.done, r.truncated = True, True
            return
        r.response_ids.extend(ids)
        r.loss_mask.extend([0] * len(ids))
        r.logprobs.extend([0.0] * len(ids))
        row.pending = row.pending + ids
        row.turn_start = len(r.response_ids)


# ---- helpers shared with training ----------------------------------------------------------------------
def eos_token_ids(model, tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(extra)
    return sorted(i for i in ids if i is not None)


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens several prompts can share in one pass: their common prefix, less what would leave
    a prompt without a token of its own (its last token is fed with what follows it); 0 for a single prompt."""
    if len(prompts) < 2:
        return 0
    return min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token sequences."""
    first, length = seqs[0], min(len(s) for s in seqs)
    for n in range(length):
        if any(s[n] != first[n] for s in seqs[1:]):
            return n
    return length


def pad_rows(seqs: Sequence[Sequence[int]], pad_id: int, device, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded to one width (on the right, or the left): ids (N, W) and mask (N, W) with 1 = a token,
    built on the host and copied to `device` at once."""
    width = max(len(s) for s in seqs)
    pads = [[pad_id] * (width - len(s)) for s in seqs]
    ids = [pad + list(s) if left else list(s) + pad for s, pad in zip(seqs, pads)]
    mask = [[0] * len(pad) + [1] * len(s) if left else [1] * len(s) + [0] * len(pad) for s, pad in zip(seqs, pads)]
    both = on_device([ids, mask], device)  # (2, N, W)
    return both[0], both[1]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_rows(seqs, pad_id, device, left=True)


def on_device(values: list, device) -> torch.Tensor:
    """A (nested) list of ints as a long tensor on `device`, in one host-to-device copy: on a GPU from pinned memory
    and without waiting for the copy (PyTorch keeps the pinned block until the copy is done)."""
    host = torch.tensor(values, dtype=torch.long)
    if torch.device(device).type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None,
           return_logprobs: bool = False):
    """(N, V) logits -> (N,) token ids, by inverting each row's CDF at one uniform draw (`invert_cdf`; on a
    2-core CPU faster than the Gumbel-max trick, which draws V uniforms and two logs per row).

    With `return_logprobs`, also (N,) log-probs of the chosen tokens under the distribution sampled from
    (softmax(logits / temperature) after top-p; greedy decoding reports softmax(logits)).
    """
    if temperature == 0:
        tokens = logits.argmax(-1)  # (N,)
        if not return_logprobs:
            return tokens
        return tokens, chosen_logprobs(logits, tokens)
    scores = logits.float() / temperature  # (N, V)
    if top_p < 1:
        probs, order = torch.softmax(scores, dim=-1).sort(dim=-1, descending=True)
        outside = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        scores = scores.scatter(-1, order, scores.gather(-1, order).masked_fill(outside, float("-inf")))
    uniform = torch.rand((len(scores), 1), generator=generator, device=scores.device, dtype=torch.float64)
    weights = scores.sub_(scores.amax(-1, keepdim=True)).exp_()  # (N, V) exp(score - max): unnormalised, in place
    tokens = invert_cdf(weights, uniform)
    if not return_logprobs:
        return tokens
    # log p = log(weight / total): a drawn token has mass, so its weight is > 0 (and >= 1e-38 in practice)
    total = weights.sum(-1, dtype=torch.float64)  # (N,)
    return tokens, (weights.gather(-1, tokens[:, None]).squeeze(-1).double().log() - total.log()).float()


CDF_BLOCK = 256  # tokens per block of `invert_cdf`


def invert_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The token at which each row's CDF first exceeds uniform x its total: (N, V) probabilities (fp32, maybe
    unnormalised), (N, 1) fp64 uniforms -> (N,) ids. In two levels, both summed in fp64: the CDF of the rows'
    `CDF_BLOCK`-token block sums picks a block, the CDF inside that block the token; one fp64 cumsum over all V
    tokens cost more than the rest of sampling (16 x 49,152: 2.6 ms a step)."""
    rows, vocab = probs.shape
    blocks = -(-vocab // CDF_BLOCK)
    if blocks * CDF_BLOCK != vocab:
        probs = torch.nn.functional.pad(probs, (0, blocks * CDF_BLOCK - vocab))  # zero mass: never drawn
    grouped = probs.view(rows, blocks, CDF_BLOCK)
    block_cdf = grouped.sum(-1, dtype=torch.float64).cumsum(-1)  # (N, blocks)
    target = uniform * block_cdf[:, -1:]  # (N, 1)
    block = torch.searchsorted(block_cdf, target, right=True).clamp_(max=blocks - 1)  # (N, 1)
    before = torch.where(block > 0, block_cdf.gather(-1, (block - 1).clamp(min=0)), 0.0)  # (N, 1) mass of earlier blocks
    inside = grouped.gather(1, block[..., None].expand(-1, -1, CDF_BLOCK)).squeeze(1).double().cumsum(-1)  # (N, B)
    # the block's sum and its inner cumsum may round apart: keep the target below the inner total, so that the
    # token found always has mass (never one cut by top-p, underflowed or padded)
    local = torch.minimum(target - before, torch.nextafter(inside[:, -1:], torch.zeros_like(before)))
    offset = torch.searchsorted(inside, local, right=True).clamp_(max=CDF_BLOCK - 1)  # (N, 1)
    return (block * CDF_BLOCK + offset).squeeze(-1).clamp_(max=vocab - 1)


def compact(cache, attn: torch.Tensor, counts: Sequence[int], min_len: int = 256) -> torch.Tensor:
    """Drop masked holes from the cache once they are most of it; returns the new (B, L') mask. `counts`: each
    row's unmasked positions, attn.sum(1), which the engine knows on the host (reading them back would wait for the
    device every step)."""
    length = attn.shape[1]
    if length < min_len or 2 * sum(counts) > len(counts) * length:  # holes are under half of it
        return attn
    width = max(counts)
    # stable order: masked slots first, then the valid ones in their original order; keep the last `width`
    order = torch.argsort(attn * (length + 1) + torch.arange(length, device=attn.device), dim=1)[:, -width:]  # (B, W)
    for layer in cache.layers:
        index = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[-1])
        layer.reset_to(layer.keys.gather(2, index), layer.values.gather(2, index))
    return attn.gather(1, order)


class SlabLayer(DynamicLayer):
    """A KV-cache layer that appends into a preallocated slab instead of `torch.cat`.

    `cat` copies the whole cache on every decode step (~1 ms per layer at 16 x 1500 tokens on a CPU);
    writing one slot into spare capacity is ~100x cheaper. `keys`/`values` are views of the filled part;
    `slab_k`/`slab_v` hold the whole capacity, zero past the filled part (finite, so a decode step can attend
    over the whole contiguous slab with the tail masked: a view of part of it makes a CPU bf16 matmul copy it).
    The capacity grows by a sixteenth (at least `GROW` slots): the masked tail stays small, and the copy into
    a larger slab (one pass over the cache) comes once per `GROW` or more appended tokens.
    """

    GROW = 32

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.slab_k = self.slab_v = None
        length = self.reserve(key_states.shape[-2], key_states)
        need = length + key_states.shape[-2]
        self.slab_k[:, :, length:need] = key_states
        self.slab_v[:, :, length:need] = value_states
        return self.advance(key_states.shape[-2])

    def reserve(self, count: int, like: torch.Tensor | None = None) -> int:
        """Room in the slab for `count` more positions (written by the caller, then `advance`); returns the filled
        length. `like` gives the (B, KV, *, d) shape and dtype while the layer is still empty."""
        length = self.keys.shape[-2] if self.keys.numel() else 0
        need = length + count
        if self.slab_k is None or need > self.slab_k.shape[-2]:
            like = self.keys if length else like
            capacity = need + max(self.GROW, need // 16)
            slab_k = like.new_zeros((*like.shape[:2], capacity, like.shape[-1]))
            slab_v = slab_k.new_zeros(slab_k.shape)
            if length:
                slab_k[:, :, :length] = self.keys
                slab_v[:, :, :length] = self.values
            self.slab_k, self.slab_v = slab_k, slab_v
        return length

    def advance(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Take `count` positions written past the filled part into the cache; returns the new keys/values views."""
        need = (self.keys.shape[-2] if self.keys.numel() else 0) + count
        self.keys, self.values = self.slab_k[:, :, :need], self.slab_v[:, :, :need]
        return self.keys, self.values

    def reset_to(self, keys, values) -> None:
        """Replace the contents (after a batch or hole change); the next update allocates a new slab."""
        self.keys, self.values = keys, values
        self.slab_k = self.slab_v = None

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.reset_to(self.keys.repeat_interleave(repeats, dim=0), self.values.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices) -> None:
        self.reset_to(self.keys[indices], self.values[indices])


def split_solution(solution: str, tools: Sequence[Tool]) -> list[tuple[str, Tool | None]]:
    """A worked solution as (text, tool) pieces: the policy's turns (tool None; one per tool call, plus the last)
    and between them each tool's result block with the blank lines the engine puts around it (forced text)."""
    pieces, rest = [], solution
    while True:
        starts = [(rest.find(t.result_open), t) for t in tools if t.result_open in rest]
        if not starts:
            pieces.append((rest, None))
            return pieces
        at, tool = min(starts, key=lambda pair: pair[0])
        end = rest.find(tool.result_close, at)
        end = len(rest) if end < 0 else end + len(tool.result_close)
        before = rest[:at].rstrip("\n")  # the engine feeds "\n\n<information>...</information>\n\n"
        after = len(rest[end:]) - len(rest[end:].lstrip("\n"))
        pieces += [(before, None), (rest[len(before):end + after], tool)]
        rest = rest[end + after:]


def solution_rollout(tokenizer, prompt_ids: list[int], solution: str, tools: Sequence[Tool]) -> Rollout:
    """A worked solution as the engine would have produced it: its turns' tokens are in the loss (mask 1), the
    tools' result blocks are forced (mask 0) and logged as its tool calls. For supervised stages (`Stage.gold`)."""
    rollout = Rollout(prompt_ids=list(prompt_ids), text=solution, finished=True)
    for text, tool in split_solution(solution, tools):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        rollout.response_ids += ids
        rollout.loss_mask += [0 if tool else 1] * len(ids)
        rollout.logprobs += [0.0] * len(ids)
        if tool is None:
            rollout.policy_text += text
        else:
            rollout.tool_calls.append({"tool": tool.name, "query": None, "observation": text.strip()})
    return rollout


def demo_budget_problems(demos: Sequence[dict], tokenizer, tools: Sequence[Tool], cfg: RolloutConfig) -> list[str]:
    """Replay each demo's `solution` against the rollout budgets; one line per demo that would not finish.

    A solution is split at the tools' result blocks (`<information>...</information>`, ...): each block is a
    tool call, the text between blocks is one policy turn. A demo fits when its calls <= max_turns, every turn
    <= max_turn_tokens, and the whole response < max_response_tokens (the engine truncates at that count).
    Budgets that cut the demonstrated behaviour make the right trajectory score below a guess.
    """
    problems = []
    for n, demo in enumerate(demos, start=1):
        solution = demo["solution"]
        pieces = split_solution(solution, tools)
        turns = [text for text, tool in pieces if tool is None]
        blocks = len(pieces) - len(turns)
        total = len(tokenizer(solution, add_special_tokens=False)["input_ids"])
        longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in turns)
        why = []
        if blocks > cfg.max_turns:
            why.append(f"{blocks} tool calls > rollout.max_turns={cfg.max_turns}")
        if longest > cfg.max_turn_tokens:
            why.append(f"a {longest}-token turn > rollout.max_turn_tokens={cfg.max_turn_tokens}")
        if total >= cfg.max_response_tokens:
            why.append(f"{total} response tokens >= rollout.max_response_tokens={cfg.max_response_tokens}")
        if why:
            question = str(demo.get("question", ""))[:60]
            problems.append(f"demo {n} ({question!r}): " + "; ".join(why))
    return problems
