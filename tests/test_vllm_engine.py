"""The vLLM backend's contract, against a stand-in `vllm` package (no GPU, no vLLM here): the same Rollouts as the
built-in engine on the same policy, vLLM's request parameters, the adapter synced under a new id when it changes,
and the refusals without vLLM or CUDA."""

from __future__ import annotations

import dataclasses
import os
import sys
import types
from dataclasses import dataclass, replace

import pytest
import torch

from icrl_lite import vllm_engine
from icrl_lite.policy import ModelConfig, load_policy, reference_mode
from icrl_lite.prompts import INVALID_ACTION
from icrl_lite.rollout import RolloutConfig, RolloutEngine
from icrl_lite.tools import Tool
from icrl_lite.vllm_engine import VllmEngine, make_engine
from scripted_head import Scripted
from seeded import generator_for

pytestmark = pytest.mark.usefixtures("one_thread")

SEARCH = Tool("search", "<search>", "</search>", lambda q: f"Doc 1(Title: {q}) the {q} flows north")


# ---- the stand-in ---------------------------------------------------------------------------------------------
@dataclass
class SamplingParams:
    """vLLM's names and defaults for the fields the engine sets; an unknown keyword raises, as vLLM's does."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    logprobs: int | None = None


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


class FakeLLM:
    """`vllm.LLM` on a policy: (context ids, LoRARequest | None) -> next-token logits (V,). Decodes as vLLM does: a
    sample's output ends at a stop string in its decoded text (kept), a stop or EOS token (kept in token_ids), or
    max_tokens; with a seed, sample k of a request draws from seed + k."""

    def __init__(self, stand_in, model: str, **options):
        self.stand_in, self.model, self.options, self.calls = stand_in, model, options, []

    def generate(self, prompts, sampling_params, lora_request=None, use_tqdm=True):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        self.calls.append((prompts, params, lora_request))
        return [types.SimpleNamespace(outputs=[self.complete(prompt["prompt_token_ids"], p, lora_request, k)
                                               for k in range(p.n)])
                for prompt, p in zip(prompts, params)]

    def complete(self, ids, p: SamplingParams, lora, k: int):
        tok = self.stand_in.tokenizer
        generator = torch.Generator().manual_seed(p.seed + k) if p.seed is not None else None
        stop_ids = set(p.stop_token_ids or ()) | {tok.eos_token_id}
        out, logprobs, finish = [], [], "length"
        while len(out) < p.max_tokens:
            logits = self.stand_in.policy(list(ids) + out, lora).float()  # (V,)
            scores = torch.log_softmax(logits / (p.temperature or 1.0), -1)
            if p.temperature == 0:
                token = int(scores.argmax())
            else:
                token = int(torch.multinomial(scores.exp(), 1, generator=generator))
            out.append(token)
            logprobs.append({token: types.SimpleNamespace(logprob=float(scores[token]))})
            if token in stop_ids or self.stand_in.stop_strings and any(s in tok.decode(out) for s in p.stop or ()):
                finish = "stop"
                break
        return types.SimpleNamespace(token_ids=out, logprobs=logprobs, finish_reason=finish)


@pytest.fixture
def stand_in(monkeypatch, tokenizer):
    """A fake `vllm` package in sys.modules; set `.policy` to what it samples from."""
    fake = types.SimpleNamespace(tokenizer=tokenizer, policy=None, llms=[], stop_strings=True)

    def make_llm(model, **options):
        fake.llms.append(FakeLLM(fake, model, **options))
        return fake.llms[-1]

    package = types.ModuleType("vllm")
    package.LLM, package.SamplingParams = make_llm, SamplingParams
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, module in (("vllm", package), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(vllm_engine, "_SAMPLERS", {})  # one vLLM engine per process: a fresh one per test
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)  # restored after the test, whatever the engine sets
    return fake


def on_cuda(monkeypatch, make):
    """Run `make()` as if torch saw a CUDA device (the engine refuses to start without one)."""
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        return make()


def scripted(tok, *pieces: str | int) -> list[int]:
    """The token ids of text pieces (tokenized one by one) and bare token ids, in order."""
    ids = []
    for piece in pieces:
        ids += [piece] if isinstance(piece, int) else tok(piece, add_special_tokens=False)["input_ids"]
    return ids


def model_policy(stand_in):
    """Next-token logits of the base model at the LLM's path, with the LoRARequest's adapter read from its folder
    (once per id, as vLLM caches adapters): what reaches the stand-in is only what the engine saved."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    models = {}

    def policy(ids, lora):
        key = lora.lora_int_id if lora else 0
        if key not in models:
            base = AutoModelForCausalLM.from_pretrained(stand_in.llms[0].model, dtype=torch.float32)
            models[key] = PeftModel.from_pretrained(base, lora.lora_path, torch_device="cpu") if lora else base
        with torch.no_grad():
            return models[key](input_ids=torch.tensor([ids])).logits[0, -1]

    return policy


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    """The tiny random model as the trainer loads it, with a non-zero adapter (so adapter and base sample apart)."""
    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32", device="cpu"))
    vocabulary = [[i] for i in range(len(tok))]
    pieces, decode = tok.batch_decode(vocabulary), tok.batch_decode
    # each engine decodes the whole vocabulary once (which tokens may end a stop string): 1.3 s, here once in all
    tok.batch_decode = lambda seqs, **kw: list(pieces) if seqs == vocabulary and not kw else decode(seqs, **kw)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5, generator=generator)
    return model, tok


def prompts(tok):
    return [tok("Question: where is the lighthouse?")["input_ids"], tok("Question: which river?")["input_ids"]]


# ---- the same rollouts as the built-in engine on one scripted policy --------------------------------------------
BASE = dict(temperature=0.0, max_turns=2, max_turn_tokens=24, max_response_tokens=200, fast_decode=False)
SCENARIOS = {  # name: (script pieces, rollout config): each piece a text, or EOS
    "tool call, then answer": (["<think> look </think><search> river </search>", "<answer> Nile </answer>"], {}),
    "EOS without an action: the corrective turn": (["EOS", "<answer> x </answer>"], {}),
    "a closing tag alone: the corrective turn": (["oops </search>", "<answer> x </answer>"], {}),
    "a turn cut by its budget": (["word " * 10, "<answer> x </answer>"], {"max_turn_tokens": 6}),
    "after max_turns the tags are plain text": (
        ["<search> a </search>", "<search> b </search> more <answer> c </answer>"], {"max_turns": 1}),
    "observation cut to max_obs_tokens, opener forced": (
        ["<search> river </search>", "<answer> d </answer>"], {"max_obs_tokens": 4, "after_observation": "<think>"}),
    "response budget": (["word " * 40], {"max_response_tokens": 20}),
    "an observation that does not fit": (["<search> river </search>", "x"], {"max_response_tokens": 24}),
    "tools off: one turn": (["<search> a </search> <answer> e </answer>"], {"max_turns": 0}),
}


def run_both(policy, stand_in, monkeypatch, pieces, options, tools=(SEARCH,)):
    """(built-in, vLLM) rollouts of one prompt under a head that samples `pieces` token by token, then EOS."""
    model, tok = policy
    script = scripted(tok, *[tok.eos_token_id if p == "EOS" else p for p in pieces])
    cfg = RolloutConfig(**{**BASE, **options})
    head = Scripted(script, len(tok), tok.eos_token_id)
    original = model.get_output_embeddings
    model.get_output_embeddings = lambda: head
    try:
        (ours,) = RolloutEngine(model, tok, list(tools), cfg).generate(prompts(tok)[:1])
    finally:
        model.get_output_embeddings = original
    fake_head = Scripted(script, len(tok), tok.eos_token_id)  # called once per sampled token, like the engine's
    stand_in.policy = lambda ids, lora: fake_head(torch.zeros(1, 1))[0]
    engine = on_cuda(monkeypatch, lambda: VllmEngine(model, tok, list(tools), cfg))
    (theirs,) = engine.generate(prompts(tok)[:1])
    return ours, theirs


@pytest.mark.parametrize("name", SCENARIOS)
def test_rollouts_equal_the_built_in_engines_on_the_same_policy(policy, stand_in, monkeypatch, name):
    ours, theirs = run_both(policy, stand_in, monkeypatch, *SCENARIOS[name])
    assert dataclasses.asdict(theirs) == dataclasses.asdict(ours)


def test_the_loss_mask_is_zero_exactly_on_the_forced_observation(policy, stand_in, monkeypatch):
    _, theirs = run_both(policy, stand_in, monkeypatch, *SCENARIOS["tool call, then answer"])
    tok = policy[1]
    observation = SEARCH.fn("river")
    forced = [t for t, bit in zip(theirs.response_ids, theirs.loss_mask) if bit == 0]
    assert forced == tok(SEARCH.wrap(observation), add_special_tokens=False)["input_ids"]
    assert theirs.tool_calls == [{"tool": "search", "query": "river", "observation": observation}]
    assert theirs.policy_text == "<think> look </think><search> river </search><answer> Nile </answer>"
    assert theirs.finished and not theirs.truncated


def test_an_eos_without_an_action_gets_the_corrective_message(policy, stand_in, monkeypatch):
    _, theirs = run_both(policy, stand_in, monkeypatch, *SCENARIOS["EOS without an action: the corrective turn"])
    tok = policy[1]
    assert theirs.response_ids[0] == tok.eos_token_id and theirs.loss_mask[0] == 1
    message = tok.decode(tok(INVALID_ACTION, add_special_tokens=False)["input_ids"])
    assert theirs.invalid_turns == 1 and message in theirs.text
    assert theirs.finished


def test_tokens_past_the_end_of_a_turn_are_dropped(policy, stand_in, monkeypatch):
    stand_in.stop_strings = False  # where vLLM's stop-string check and ours disagree, its completion runs on
    ours, theirs = run_both(policy, stand_in, monkeypatch, ["oops </search>", " more <answer> x </answer>"], {})
    tok = policy[1]
    turn = sum(len(tok(text, add_special_tokens=False)["input_ids"]) for text in ("oops </search>", INVALID_ACTION))
    assert theirs.response_ids[:turn] == ours.response_ids[:turn] and theirs.invalid_turns >= 1
    assert "more" not in theirs.policy_text  # sampled by vLLM after our turn had ended: not the rollout's


def test_requests_stop_at_tool_tags_only_while_tools_are_on(policy, stand_in, monkeypatch):
    run_both(policy, stand_in, monkeypatch, *SCENARIOS["after max_turns the tags are plain text"])
    (llm,) = stand_in.llms
    first, final = llm.calls[0][1][0], llm.calls[-1][1][0]
    assert set(first.stop) == {"</answer>", "</search>"} and final.stop == ["</answer>"]
    tok = policy[1]
    for _, params, _ in llm.calls:
        (p,) = params
        assert p.include_stop_str_in_output and p.logprobs == 0 and tok.eos_token_id in p.stop_token_ids


def test_max_tokens_is_what_the_turn_and_response_budgets_leave(policy, stand_in, monkeypatch):
    _, theirs = run_both(policy, stand_in, monkeypatch, ["<search> river </search>", "word " * 40],
                         {"max_response_tokens": 60, "max_turn_tokens": 24})
    (llm,) = stand_in.llms
    first, second = (params[0] for _, params, _ in llm.calls)
    assert first.max_tokens == 24  # a whole turn
    used = len(llm.calls[1][0][0]["prompt_token_ids"]) - len(theirs.prompt_ids)  # the first turn and its observation
    assert second.max_tokens == min(24, 60 - used)
    assert len(theirs.response_ids) <= 60 and theirs.truncated


# ---- n samples per prompt, seeds ----------------------------------------------------------------------------------
def test_the_first_turn_asks_for_each_prompts_samples_in_one_request(policy, stand_in, monkeypatch):
    model, tok = policy
    stand_in.policy = model_policy(stand_in)
    cfg = RolloutConfig(temperature=1.0, max_turns=1, max_turn_tokens=6, max_response_tokens=40)
    engine = on_cuda(monkeypatch, lambda: VllmEngine(model, tok, [SEARCH], cfg))
    a, b = prompts(tok)
    rollouts = engine.generate([a, b], [3, 2], generator_for(model))
    (llm,) = stand_in.llms
    first_prompts, first_params, _ = llm.calls[0]
    assert [p["prompt_token_ids"] for p in first_prompts] == [a, b] and [p.n for p in first_params] == [3, 2]
    assert [r.prompt_ids for r in rollouts] == [a, a, a, b, b]  # group-contiguous, as the trainer expects
    assert len({tuple(r.response_ids) for r in rollouts[:3]}) > 1  # the samples of a prompt differ
    for r in rollouts:
        assert len(r.logprobs) == len(r.loss_mask) == len(r.response_ids)
        assert all(lp < 0 for lp, bit in zip(r.logprobs, r.loss_mask) if bit)
        assert all(lp == 0 for lp, bit in zip(r.logprobs, r.loss_mask) if not bit)
    again = engine.generate([a, b], [3, 2], generator_for(model))
    assert [r.response_ids for r in again] == [r.response_ids for r in rollouts]  # seeds come from the generator


# ---- the adapter --------------------------------------------------------------------------------------------------
def test_the_synced_adapter_samples_as_the_trained_policy(policy, stand_in, monkeypatch):
    model, tok = policy
    stand_in.policy = model_policy(stand_in)
    cfg = RolloutConfig(temperature=0.0, max_turns=1, max_turn_tokens=10, max_response_tokens=40)
    engine = on_cuda(monkeypatch, lambda: VllmEngine(model, tok, [SEARCH], cfg))
    theirs = engine.generate(prompts(tok), 2)
    ours = RolloutEngine(model, tok, [SEARCH], cfg).generate(prompts(tok), 2)
    assert [r.response_ids for r in theirs] == [r.response_ids for r in ours]
    with reference_mode(model):
        base = RolloutEngine(model, tok, [SEARCH], cfg).generate(prompts(tok), 2)
    assert [r.response_ids for r in base] != [r.response_ids for r in ours]  # the adapter is what made them equal


def test_a_changed_adapter_is_synced_under_a_new_lora_id(policy, stand_in, monkeypatch):
    model, tok = policy
    stand_in.policy = model_policy(stand_in)
    cfg = RolloutConfig(temperature=0.0, max_turns=0, max_response_tokens=12)
    engine = on_cuda(monkeypatch, lambda: VllmEngine(model, tok, [], cfg))
    engine.generate(prompts(tok), 1)
    engine.generate(prompts(tok), 1)
    (llm,) = stand_in.llms
    first, unchanged = llm.calls[0][2], llm.calls[1][2]
    assert unchanged is first  # nothing changed: no save, the same request
    assert os.path.isfile(os.path.join(first.lora_path, "adapter_config.json"))  # peft's adapter files
    lora_b = next(p for name, p in model.named_parameters() if "lora_B" in name)
    saved = lora_b.detach().clone()
    try:
        with torch.no_grad():
            lora_b.mul_(-1.0)  # an optimizer step, in effect
        theirs = engine.generate(prompts(tok), 1)
        synced = llm.calls[2][2]
        assert synced.lora_int_id != first.lora_int_id and synced.lora_path != first.lora_path
        ours = RolloutEngine(model, tok, [], cfg).generate(prompts(tok), 1)
        assert [r.response_ids for r in theirs] == [r.response_ids for r in ours]
    finally:
        with torch.no_grad():
            lora_b.copy_(saved)


def test_a_switched_off_adapter_samples_the_base_model(policy, stand_in, monkeypatch):
    model, tok = policy
    stand_in.policy = model_policy(stand_in)
    cfg = RolloutConfig(temperature=0.0, max_turns=0, max_response_tokens=12)
    engine = on_cuda(monkeypatch, lambda: VllmEngine(model, tok, [], cfg))
    with reference_mode(model):
        theirs = engine.generate(prompts(tok), 1)
        ours = RolloutEngine(model, tok, [], cfg).generate(prompts(tok), 1)
    assert stand_in.llms[0].calls[0][2] is None
    assert [r.response_ids for r in theirs] == [r.response_ids for r in ours]


# ---- the vLLM engine, its selection and its refusals --------------------------------------------------------------
def test_one_colocated_vllm_engine_per_process_is_shared(policy, stand_in, monkeypatch, tiny_model_dir):
    model, tok = policy
    cfg = RolloutConfig(backend="vllm", vllm_gpu_memory_utilization=0.25, max_context_tokens=3000)
    first = on_cuda(monkeypatch, lambda: make_engine(model, tok, [SEARCH], cfg))
    second = on_cuda(monkeypatch, lambda: make_engine(model, tok, [], replace(cfg, temperature=0.0)))
    assert type(first) is VllmEngine and first.sampler is second.sampler and len(stand_in.llms) == 1
    (llm,) = stand_in.llms
    assert llm.model == str(tiny_model_dir)
    assert llm.options["gpu_memory_utilization"] == 0.25 and llm.options["max_model_len"] == 3000
    assert llm.options["enable_lora"] and llm.options["max_lora_rank"] == 16  # ModelConfig's default rank
    assert llm.options["logprobs_mode"] == "processed_logprobs" and llm.options["dtype"] == "float32"
    with pytest.raises(ValueError, match="max_context_tokens=4000 is more than the 3000"):
        on_cuda(monkeypatch, lambda: make_engine(model, tok, [], replace(cfg, max_context_tokens=4000)))


def test_the_default_backend_is_the_built_in_engine(policy):
    model, tok = policy
    assert type(make_engine(model, tok, [SEARCH], RolloutConfig())) is RolloutEngine


def test_evaluation_samples_through_the_configured_backend(policy, stand_in, monkeypatch):
    from icrl_lite.evaluate import EvalConfig, run_eval
    from icrl_lite.prompts import SEARCH_INSTRUCTION
    from icrl_lite.tasks import get_task

    model, tok = policy
    stand_in.policy = model_policy(stand_in)
    examples = [{"id": "q1", "question": "Which river?", "answers": ["Nile"]}]
    cfg = EvalConfig(rollout=RolloutConfig(backend="vllm", max_turns=1, max_turn_tokens=6, max_response_tokens=20))
    summary, records = on_cuda(monkeypatch, lambda: run_eval(model, tok, examples, get_task("qa"), [SEARCH],
                                                             SEARCH_INSTRUCTION, cfg, progress=False))
    assert len(stand_in.llms) == 1 and stand_in.llms[0].calls and len(records) == 1


def test_without_cuda_the_vllm_backend_is_refused(policy, stand_in, monkeypatch):
    model, tok = policy
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*rollout.backend=auto"):
        make_engine(model, tok, [], RolloutConfig(backend="vllm"))
    assert not stand_in.llms


def test_without_vllm_the_error_says_how_to_install_it(policy, monkeypatch):
    model, tok = policy
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'icrl-lite\[vllm\]'.*") as error:
        on_cuda(monkeypatch, lambda: make_engine(model, tok, [], RolloutConfig(backend="vllm")))
    assert "CUDA GPU" in str(error.value)


@pytest.mark.parametrize("field, value, message", [("backend", "vlm", "use auto .* or vllm"),
                                                   ("vllm_gpu_memory_utilization", 1.5, r"in \(0, 1\)")])
def test_backend_settings_are_validated(field, value, message):
    with pytest.raises(ValueError, match=message):
        RolloutConfig(**{field: value}).validate()
