"""Multi-turn rollouts: the engine's one KV cache vs re-encoding the whole context every turn.

Workload: bundled QA test questions with the search tool (BM25 over the bundled corpus), greedy decoding, up
to `max_turns` tool turns per rollout (a turn without a valid action gets ICRL's corrective message, which also
counts as a turn), then a final turn without tools. The engine (`icrl_lite.rollout.RolloutEngine`) prefills
each prompt once and feeds only the new tokens afterwards (sampled ones, tool output, corrective messages).
The baseline, `reencode_rollouts`, is what an HF-generate loop does (TRL's transformers path): each turn calls
`model.generate` on the whole text so far (prompt + every earlier turn), for all unfinished rollouts in one
left-padded batch, and stops each row at the end of its turn. Same model, same merged weights, same prompts,
same stop rules; under greedy decoding both must write the same tokens. bf16 (or a different batch layout)
can flip a near-tie argmax, so disagreements are counted and reported, not raised.

The baseline re-implements the rollout protocol (stop strings, tool calls, corrective messages, budgets)
independently of the engine, turn by turn; only `find_call` (the one parser of tool calls) is shared.

A rollout's tokens/s above mixes prefill, tool turns and a batch that shrinks as rollouts finish, so it is not
the decode rate at the batch it starts with. `pure_decode` measures that alone: the engine decodes `batch`
short prompts (a test question each, no instruction), greedy, exactly `new_tokens` per row (EOS and stops off,
no tools); the clock runs from the end of the prefill to the end of the run, and the rate is read against the
decode bound at that batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from transformers import StoppingCriteria

from icrl_lite.policy import generation_mode, merged_adapter
from icrl_lite.rollout import Rollout, RolloutConfig, RolloutEngine, eos_token_ids, left_pad
from icrl_lite.tools import Tool, find_call


@dataclass
class Episode:
    """One rollout of the re-encoding loop: its tokens so far and where it is in the protocol."""

    rollout: Rollout
    turn_start: int = 0  # index in response_ids where the current turn began
    turns_used: int = 0  # tool calls + corrective turns
    done: bool = False
    call: tuple[Tool, str] | None = None  # the tool call that ended the last turn, to run
    sessions: dict = field(default_factory=dict)

    def context(self) -> list[int]:
        return self.rollout.prompt_ids + self.rollout.response_ids


class Protocol:
    """The rules of a rollout turn, as the engine applies them: a turn ends at EOS, at a stop string (the final
    answer's closing tag; a tool's closing tag while tools are on), or at the turn budget; the rollout ends at
    an answer, at the final turn's end, or when a budget would be passed."""

    def __init__(self, tokenizer, tools: Sequence[Tool], cfg: RolloutConfig, final_stops: Sequence[str],
                 eos_ids: set[int], invalid_message: str):
        self.tokenizer, self.tools, self.cfg, self.final_stops = tokenizer, list(tools), cfg, list(final_stops)
        self.eos_ids = eos_ids
        self.invalid_ids = self.ids(invalid_message)

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def tools_on(self, ep: Episode) -> bool:
        return bool(self.tools) and ep.turns_used < self.cfg.max_turns

    def accept(self, ep: Episode, token: int) -> bool:
        """Append a generated token; True when it ended the turn (or the rollout)."""
        r, cfg = ep.rollout, self.cfg
        r.response_ids.append(token)
        r.loss_mask.append(1)
        tools_on = self.tools_on(ep)
        if token in self.eos_ids:
            self.end_turn(ep, tools_on, eos=True)
            return True
        text = self.tokenizer.decode(r.response_ids[ep.turn_start:])
        stops = self.final_stops + ([t.close_tag for t in self.tools] if tools_on else [])
        if any(s in text for s in stops):
            self.end_turn(ep, tools_on, eos=False, text=text)
            return True
        if len(r.response_ids) >= cfg.max_response_tokens or len(r.prompt_ids) + len(r.response_ids) >= cfg.max_context_tokens:
            ep.done, r.truncated = True, True
            return True
        if len(r.response_ids) - ep.turn_start >= cfg.max_turn_tokens:
            self.end_turn(ep, tools_on, eos=False)
            return True
        return False

    def end_turn(self, ep: Episode, tools_on: bool, eos: bool, text: str | None = None) -> None:
        r = ep.rollout
        if text is None:
            text = self.tokenizer.decode(r.response_ids[ep.turn_start:])
        call = find_call(text, self.tools) if tools_on else None
        answer_at = min((i for i in (text.find(s) for s in self.final_stops) if i != -1), default=-1)
        if answer_at != -1 and (call is None or answer_at < text.find(call[0].close_tag)):
            ep.done, r.finished = True, True
            return
        if not tools_on or (eos and call is None and self.cfg.stop_at_eos):
            ep.done, r.finished, r.truncated = True, eos, not eos
            return
        ep.turns_used += 1
        if call is None:
            r.invalid_turns += 1
            self.force(ep, self.invalid_ids)
        else:
            ep.call = call

    def run_call(self, ep: Episode) -> None:
        """Run the tool call that ended the turn and force its observation into the context."""
        tool, query = ep.call
        ep.call = None
        if tool.session is not None and tool.name not in ep.sessions:
            ep.sessions[tool.name] = tool.session()
        observation = tool.run(query, ep.sessions.get(tool.name))
        observation = self.tokenizer.decode(self.ids(observation)[: self.cfg.max_obs_tokens])
        ep.rollout.tool_calls.append({"tool": tool.name, "query": query, "observation": observation})
        self.force(ep, self.ids(tool.wrap(observation)))

    def force(self, ep: Episode, ids: list[int]) -> None:
        r, cfg = ep.rollout, self.cfg
        if len(r.response_ids) + len(ids) >= cfg.max_response_tokens or len(r.prompt_ids) + len(r.response_ids) + len(ids) >= cfg.max_context_tokens:
            ep.done, r.truncated = True, True
            return
        r.response_ids.extend(ids)
        r.loss_mask.extend([0] * len(ids))
        ep.turn_start = len(r.response_ids)


class TurnEnd(StoppingCriteria):
    """A `generate` stopping criterion: feeds each row's newest token to the protocol and stops the rows whose
    turn ended (generate pads them from then on; their later tokens are never read)."""

    def __init__(self, protocol: Protocol, episodes: list[Episode]):
        self.protocol, self.episodes = protocol, episodes
        self.ended = [False] * len(episodes)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        last = input_ids[:, -1].tolist()  # (B,)
        for i, ep in enumerate(self.episodes):
            if not self.ended[i]:
                self.ended[i] = self.protocol.accept(ep, last[i])
        return torch.tensor(self.ended, device=input_ids.device)


@torch.no_grad()
def reencode_rollouts(model, tokenizer, tools: Sequence[Tool], cfg: RolloutConfig, prompts: Sequence[Sequence[int]],
                      final_stops: Sequence[str] = ("</answer>",), invalid_message: str | None = None) -> list[Rollout]:
    """Greedy multi-turn rollouts the HF way: each turn, `generate` re-encodes every unfinished rollout's whole
    context (left-padded batch) and decodes until the turn ends; tool output is appended as text tokens."""
    from transformers import GenerationConfig, StoppingCriteriaList

    from icrl_lite.prompts import INVALID_ACTION

    eos = set(eos_token_ids(model, tokenizer))
    protocol = Protocol(tokenizer, tools, cfg, final_stops, eos, INVALID_ACTION if invalid_message is None else invalid_message)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    episodes = [Episode(Rollout(prompt_ids=list(p))) for p in prompts]
    greedy = GenerationConfig(do_sample=False, max_new_tokens=cfg.max_turn_tokens, pad_token_id=pad_id,
                              eos_token_id=sorted(eos), temperature=None, top_p=None, top_k=None)
    try:
        with generation_mode(model), merged_adapter(model, cfg.merge_lora):
            while active := [ep for ep in episodes if not ep.done]:
                ids, attention = left_pad([ep.context() for ep in active], pad_id, model.device)  # (B, L)
                stop = TurnEnd(protocol, active)
                model.generate(input_ids=ids, attention_mask=attention, generation_config=greedy,
                               stopping_criteria=StoppingCriteriaList([stop]))
                for ep, ended in zip(active, stop.ended):
                    if not ended:  # generate stopped first (the context cap): nothing more fits
                        ep.done, ep.rollout.truncated = True, True
                    elif ep.call is not None:
                        protocol.run_call(ep)
    finally:
        for ep in episodes:
            for session in ep.sessions.values():
                session.close()
    for ep in episodes:
        r = ep.rollout
        r.logprobs = [0.0] * len(r.response_ids)
        r.text = tokenizer.decode(r.response_ids, skip_special_tokens=True)
        r.policy_text = "".join(tokenizer.decode(s, skip_special_tokens=True) for s in r.sampled_segments())
    return [ep.rollout for ep in episodes]


def compare(a: Sequence[Rollout], b: Sequence[Rollout]) -> dict:
    """How far two sets of rollouts of the same prompts agree token for token."""
    mismatched = [i for i, (x, y) in enumerate(zip(a, b)) if x.response_ids != y.response_ids]
    first = [next((t for t, (u, v) in enumerate(zip(a[i].response_ids, b[i].response_ids)) if u != v),
                  min(len(a[i].response_ids), len(b[i].response_ids))) for i in mismatched]
    return {"rollouts": len(a), "identical": len(a) - len(mismatched), "mismatched": len(mismatched),
            "mismatched_rows": mismatched, "first_divergence_at": first}


def turn_stats(rollouts: Sequence[Rollout]) -> dict:
    """Tool calls and corrective turns per rollout, and how many rollouts used each number of turns."""
    turns = [len(r.tool_calls) + r.invalid_turns for r in rollouts]
    return {"tool_calls_mean": sum(len(r.tool_calls) for r in rollouts) / len(rollouts),
            "corrective_turns_mean": sum(r.invalid_turns for r in rollouts) / len(rollouts),
            "turns_histogram": {str(k): turns.count(k) for k in sorted(set(turns))},
            "forced_tokens_mean": sum(len(r.loss_mask) - sum(r.loss_mask) for r in rollouts) / len(rollouts)}


def timed(fn) -> tuple[list[Rollout], dict]:
    start = time.perf_counter()
    rollouts = fn()
    seconds = time.perf_counter() - start
    sampled = sum(r.sampled_tokens for r in rollouts)
    return rollouts, {"seconds": seconds, "sampled_tokens": sampled, "tokens_per_s": sampled / seconds}


def run_workload(model, tokenizer, tools, prompts: list[list[int]], cfg: RolloutConfig, final_stops, bound: float | None) -> dict:
    """Both systems on `prompts` (one greedy rollout each), after a warm-up of each on the first prompt."""
    engine = RolloutEngine(model, tokenizer, tools, cfg, final_stops=final_stops)
    warm = replace(cfg, max_turn_tokens=4, max_turns=1)
    RolloutEngine(model, tokenizer, tools, warm, final_stops=final_stops).generate(prompts[:1], 1)
    reencode_rollouts(model, tokenizer, tools, warm, prompts[:1], final_stops)
    ours, engine_stats = timed(lambda: engine.generate(prompts, 1))
    theirs, loop_stats = timed(lambda: reencode_rollouts(model, tokenizer, tools, cfg, prompts, final_stops))
    result = {"prompts": len(prompts), "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
              "engine": engine_stats, "reencode": loop_stats,
              "speedup": engine_stats["tokens_per_s"] / loop_stats["tokens_per_s"],
              "agreement": compare(ours, theirs), "turns": turn_stats(ours), "turns_reencode": turn_stats(theirs)}
    if bound:
        result["decode_bound_tokens_per_s"] = bound
        result["engine"]["fraction_of_bound"] = engine_stats["tokens_per_s"] / bound
        result["reencode"]["fraction_of_bound"] = loop_stats["tokens_per_s"] / bound
    return result


def pure_decode(model, tokenizer, prompts: list[list[int]], new_tokens: int) -> dict:
    """Decode tokens/s of the engine on `prompts` (one greedy row each, exactly `new_tokens` per row): the time
    from the end of the prefill to the end of the run, both read in the same run after a warm-up run (so the
    figure stays positive on a busy machine, where two separately timed runs could come out in either order)."""
    cfg = RolloutConfig(max_turns=0, max_turn_tokens=new_tokens, max_response_tokens=new_tokens + 1, temperature=0.0)
    engine = RolloutEngine(model, tokenizer, [], cfg, final_stops=[])
    engine.eos_ids = set()  # every row decodes exactly new_tokens
    engine.generate(prompts, 1)  # warm-up
    prefill, marks = engine._prefill, {}

    def timed_prefill(*args, **kwargs):
        out = prefill(*args, **kwargs)
        marks["prefilled"] = time.perf_counter()
        return out

    engine._prefill = timed_prefill
    start = time.perf_counter()
    rollouts = engine.generate(prompts, 1)
    end = time.perf_counter()
    assert all(r.sampled_tokens == new_tokens for r in rollouts), "a row stopped early: EOS or a stop was not off"
    decoded = len(prompts) * (new_tokens - 1)  # the first token comes from the prefill's logits
    return {"batch": len(prompts), "new_tokens": new_tokens, "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
            "seconds": end - start, "first_token_seconds": marks["prefilled"] - start,
            "tokens_per_s": decoded / (end - marks["prefilled"])}


def run_multiturn(model_name: str, dtype: str, device: str, workloads: list[dict], bound_at=None,
                  decode: dict | None = None) -> dict:
    """Every workload ({name, demos, questions, max_turns, max_turn_tokens, max_response_tokens}) on the bundled
    QA task with its BM25 search tool, then `pure_decode` at `decode` ({batch, new_tokens}) when given.
    `bound_at(batch)` gives the decode bound at a batch size (tokens/s)."""
    from icrl_lite.policy import ModelConfig, load_policy
    from icrl_lite.prompts import build_messages, render_prompt
    from icrl_lite.tasks import get_task
    from icrl_lite.tools import SearchConfig, build_search

    model, tokenizer = load_policy(ModelConfig(name=model_name, dtype=dtype, device=device))
    task = get_task("qa")
    tools = [build_search(SearchConfig(), task.bundled("corpus"))]
    questions, demos = task.load(task.bundled("test")), task.load_demos(task.bundled("demos"))
    results = []
    for w in workloads:
        prompts = [render_prompt(tokenizer, build_messages(q["question"], demos[: w["demos"]]))
                   for q in questions[: w["questions"]]]
        cfg = RolloutConfig(max_turns=w["max_turns"], max_turn_tokens=w["max_turn_tokens"],
                            max_response_tokens=w["max_response_tokens"], temperature=0.0)
        bound = bound_at(len(prompts)) if bound_at else None
        results.append({**w, **run_workload(model, tokenizer, tools, prompts, cfg, task.final_stops, bound)})
    out = {"dtype": str(model.dtype).removeprefix("torch."), "workloads": results}
    if decode:
        rows = [questions[i % len(questions)]["question"] for i in range(decode["batch"])]
        prompts = [render_prompt(tokenizer, [{"role": "user", "content": q}]) for q in rows]
        out["decode"] = pure_decode(model, tokenizer, prompts, decode["new_tokens"])
        if bound_at:
            out["decode"]["decode_bound_tokens_per_s"] = bound_at(decode["batch"])
            out["decode"]["fraction_of_bound"] = out["decode"]["tokens_per_s"] / out["decode"]["decode_bound_tokens_per_s"]
    return out
