"""The rollout engine on a tiny random model: what it samples, what it forces, and the loss mask."""

from dataclasses import replace

import pytest
import torch

from icrl_lite.policy import ModelConfig, load_policy
from icrl_lite.prompts import INVALID_ACTION
from icrl_lite.rollout import RolloutConfig, RolloutEngine, sample
from icrl_lite.tools import Tool
from seeded import generator_for

OBSERVATION = "OBSERVED 42"


def frequent_tool(close_tag: str = "e"):
    """A tool the random model calls often: any sampled `close_tag` closes a call (the empty open tag is everywhere)."""
    return Tool(name="echo", open_tag="", close_tag=close_tag, fn=lambda _: OBSERVATION)


def greedy_tool(model, tok, cfg):
    """A frequent tool whose closing tag is a character the greedy random model does produce."""
    text = RolloutEngine(model, tok, [], cfg).generate(prompts(tok)[:1])[0].policy_text
    return frequent_tool(next(c for c in text if c.strip()))


def load(tiny_model_dir, **rollout):
    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    cfg = RolloutConfig(**{"temperature": 0.0, "max_turns": 3, "max_turn_tokens": 12, "max_response_tokens": 80, **rollout})
    return model, tok, cfg


def prompts(tok):
    return [tok("Question: where is the lighthouse?")["input_ids"], tok("A much longer question about a river and its many towns?")["input_ids"]]


def test_greedy_tokens_match_a_fresh_forward_over_the_whole_sequence(tiny_model_dir):
    # holes, per-row positions, chunked observations and cache compaction must not change what the model sees
    model, tok, cfg = load(tiny_model_dir)
    engine = RolloutEngine(model, tok, [greedy_tool(model, tok, cfg)], cfg)
    rollouts = engine.generate(prompts(tok), num_samples=2)
    assert any(r.tool_calls for r in rollouts)
    for r in rollouts:
        ids = torch.tensor([r.prompt_ids + r.response_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]  # (T, V)
        for j, (token, bit) in enumerate(zip(r.response_ids, r.loss_mask)):
            if bit:
                assert logits[len(r.prompt_ids) + j - 1].argmax().item() == token


def test_loss_mask_is_zero_exactly_on_forced_text(tiny_model_dir):
    model, tok, cfg = load(tiny_model_dir)
    tool = greedy_tool(model, tok, cfg)
    rollouts = RolloutEngine(model, tok, [tool], cfg).generate(prompts(tok), num_samples=1)
    forced_texts = {tok.decode(tok(tool.wrap(OBSERVATION), add_special_tokens=False)["input_ids"]),
                    tok.decode(tok(INVALID_ACTION, add_special_tokens=False)["input_ids"])}
    for r in rollouts:
        spans, current = [], []
        for token, bit in zip(r.response_ids, r.loss_mask):
            if bit == 0:
                current.append(token)
            elif current:
                spans.append(current)
                current = []
        if current:
            spans.append(current)
        assert spans, "the frequent tool should have been called"
        for span in spans:
            assert tok.decode(span) in forced_texts
        assert all(c["observation"] == OBSERVATION for c in r.tool_calls)
        assert OBSERVATION not in r.policy_text


def test_batched_rows_equal_rows_run_alone(tiny_model_dir):
    model, tok, cfg = load(tiny_model_dir)
    engine = RolloutEngine(model, tok, [greedy_tool(model, tok, cfg)], cfg)
    together = engine.generate(prompts(tok), num_samples=1)
    alone = [engine.generate([p], num_samples=1)[0] for p in prompts(tok)]
    assert [r.response_ids for r in together] == [r.response_ids for r in alone]


def test_sampled_eos_is_in_the_loss_even_when_pad_is_eos(tiny_model_dir):
    model, tok, cfg = load(tiny_model_dir, max_turns=0)
    assert tok.pad_token_id == tok.eos_token_id
    head = torch.nn.Linear(64, len(tok), bias=True)  # an LM head that always prefers EOS
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tok.eos_token_id] = 10.0
    model.get_base_model().lm_head = head
    r = RolloutEngine(model, tok, [], cfg).generate(prompts(tok)[:1], num_samples=1)[0]
    assert r.response_ids[-1] == tok.eos_token_id and r.loss_mask[-1] == 1 and r.finished

    from icrl_lite.trainer import loss_mask

    assert loss_mask([r])[0, len(r.response_ids) - 1] == 1


def test_rollouts_stop_at_the_response_budget(tiny_model_dir):
    model, tok, cfg = load(tiny_model_dir, max_response_tokens=30)
    for r in RolloutEngine(model, tok, [frequent_tool()], cfg).generate(prompts(tok), num_samples=2):
        assert len(r.response_ids) <= 30
        assert r.finished or r.truncated


def test_merged_generation_leaves_base_weights_bit_exact(tiny_model_dir):
    model, tok, cfg = load(tiny_model_dir)
    generator = generator_for(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(generator=generator)  # a non-zero adapter, so merging changes the weights
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" not in n}
    RolloutEngine(model, tok, [], cfg).generate(prompts(tok), num_samples=1)
    for n, p in model.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n


def test_a_disabled_adapter_is_not_merged_so_the_reference_policy_samples_from_the_exact_base(tiny_model_dir):
    # PEFT merges a disabled adapter too, and its disabled forward then unmerges it in place: in bf16 the base
    # weights became round(round(W + delta) - delta), not W, and the "untrained" evaluation ran a perturbed base
    from icrl_lite.policy import reference_mode

    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="bf16"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator))
    cfg = RolloutConfig(temperature=0.0, max_turns=0, max_turn_tokens=16, max_response_tokens=17)
    runs = {}
    for merge in (True, False):
        with reference_mode(model):
            engine = RolloutEngine(model, tok, [], replace(cfg, merge_lora=merge))
            engine.eos_ids = set()
            runs[merge] = engine.generate(prompts(tok), num_samples=1)
    for merged, plain in zip(runs[True], runs[False]):
        assert merged.response_ids == plain.response_ids
        assert merged.logprobs == plain.logprobs  # bit for bit: the same weights, the same path


def test_gumbel_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(20000, 3)
    counts = torch.bincount(sample(logits, 1.0, 1.0, torch.Generator().manual_seed(0)), minlength=3).float() / 20000
    assert torch.allclose(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.015)
    top = sample(logits, 1.0, 0.6, torch.Generator().manual_seed(0))  # nucleus 0.6 keeps only the first token
    assert (top == 0).all()


@pytest.mark.parametrize("top_p", [1.0, 0.8])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_are_the_log_softmax_sampled_from_and_the_logits_stay(temperature, top_p):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 1000, generator=generator) * 5
    logits[0, 1:] -= 60  # a row whose other tokens are ~e^-60 below the top one
    before = logits.clone()
    tokens, logps = sample(logits, temperature, top_p, generator, return_logprobs=True)
    assert torch.equal(logits, before)  # sampling works on its own copy
    scores = logits / temperature
    if top_p < 1:  # the distribution sampled from: the nucleus, renormalised
        probs, order = torch.softmax(scores, -1).sort(-1, descending=True)
        outside = probs.cumsum(-1) - probs > top_p
        scores = scores.scatter(-1, order, scores.gather(-1, order).masked_fill(outside, float("-inf")))
    expected = torch.log_softmax(scores.double(), -1).gather(-1, tokens[:, None]).squeeze(-1)
    assert torch.isfinite(logps).all()
    torch.testing.assert_close(logps.double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("vocab", [3, 256, 1000, 49152])
def test_two_level_cdf_inversion_draws_what_one_full_cdf_draws(vocab):
    from icrl_lite.rollout import invert_cdf

    generator = torch.Generator().manual_seed(vocab)
    probs = torch.softmax(torch.randn(64, vocab, generator=generator) * 4, dim=-1)
    probs[:8, : vocab // 2] = 0  # whole blocks without mass
    probs[8, :] = 0
    probs[8, vocab - 1] = 1  # all mass on the last token (in a partial block when 256 does not divide V)
    uniform = torch.rand(64, 1, dtype=torch.float64, generator=generator)
    cdf = probs.cumsum(-1, dtype=torch.float64)
    expected = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).squeeze(-1)
    tokens = invert_cdf(probs, uniform)
    assert torch.equal(tokens, expected)
    assert (probs.gather(-1, tokens[:, None]) > 0).all()


def test_cdf_inversion_never_draws_a_token_without_mass_when_sums_round_apart():
    from icrl_lite.rollout import invert_cdf

    probs = torch.zeros(1, 300)
    probs[0, 0], probs[0, 1] = 1.0, 1.5 * 2.0**-24  # the block's sum in fp32 rounds up past its exact sum
    exact = 1.0 + 1.5 * 2.0**-24
    for uniform in (1 - 1e-12, (exact - 2.0**-26) / exact, 0.5):
        token = invert_cdf(probs, torch.tensor([[uniform]], dtype=torch.float64))
        assert probs[0, token] > 0


def assert_equal_up_to_summation_order(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal but for rounding: fp32 sums of thousands of terms, taken in another order (another code path or
    thread count), differ by up to ~n * eps, about 1e-3 of the tensor's largest entry (3e-5 seen)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-3 * expected.abs().max().item())


def test_shared_prompt_logprobs_equal_full_sequence_logprobs_and_gradients(tiny_model_dir):
    from icrl_lite.logprobs import response_logprobs, sequence_logprobs

    torch.manual_seed(0)  # LoRA's A matrices are drawn from the global generator
    model, tok, _ = load(tiny_model_dir)
    generator = generator_for(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1, generator=generator)
    prompt = tok("Question: where is the lighthouse?")["input_ids"]
    responses = [tok(" It is in Treslow.")["input_ids"], tok(" Unknown")["input_ids"]]
    lora = [p for n, p in model.named_parameters() if p.requires_grad]

    shared = response_logprobs(model, prompt, responses, chunk=3)  # (2, R)
    shared_total = shared[0].sum() + shared[1, : len(responses[1])].sum()
    shared_grads = torch.autograd.grad(shared_total, lora)

    full_total = 0
    for response in responses:
        ids = torch.tensor([prompt + response], device=model.device)
        full = sequence_logprobs(model, ids, torch.ones_like(ids), chunk=4)[0, len(prompt) - 1:]  # (R,)
        torch.testing.assert_close(shared[responses.index(response), : len(response)], full)  # fp32 defaults
        full_total = full_total + full.sum()
    for a, b in zip(shared_grads, torch.autograd.grad(full_total, lora)):
        assert_equal_up_to_summation_order(a, b)


def shared_prefix_prompts(tok):
    """Three prompts with a long common prefix (like the same demonstrations) and different questions."""
    head = "Here are worked examples. " * 12
    return [tok(head + q)["input_ids"] for q in ("Where is the lighthouse?", "Who built the bridge over the river?", "Why?")]


def test_a_shared_prefix_is_run_once_and_changes_no_token(tiny_model_dir):
    from icrl_lite.rollout import common_prefix_length

    model, tok, cfg = load(tiny_model_dir)
    ps = shared_prefix_prompts(tok)
    assert common_prefix_length(ps) >= 48
    tool = greedy_tool(model, tok, cfg)
    calls = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, inputs, out: calls.append(inputs[0].shape))
    try:
        shared = RolloutEngine(model, tok, [tool], RolloutConfig(**{**cfg.__dict__, "shared_prefix_min": 16})).generate(ps, 2)
        first_shared = calls[0]
        calls.clear()
        full = RolloutEngine(model, tok, [tool], RolloutConfig(**{**cfg.__dict__, "shared_prefix_min": 0})).generate(ps, 2)
        first_full = calls[0]
    finally:
        hook.remove()
    assert first_shared == (1, common_prefix_length(ps))  # the prefix alone, once
    assert first_full == (3, max(len(p) for p in ps))  # every prompt in full
    assert any(r.tool_calls for r in shared)
    assert [r.response_ids for r in shared] == [r.response_ids for r in full]
    assert [r.loss_mask for r in shared] == [r.loss_mask for r in full]
    for a, b in zip(shared, full):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_prompts_that_are_prefixes_of_each_other_keep_a_token_of_their_own(tiny_model_dir):
    model, tok, cfg = load(tiny_model_dir, shared_prefix_min=4)
    long = shared_prefix_prompts(tok)[0]
    ps = [long[:40], long, long[:40]]  # one prompt is the whole shared prefix
    together = RolloutEngine(model, tok, [], cfg).generate(ps, 1)
    alone = [RolloutEngine(model, tok, [], cfg).generate([p], 1)[0] for p in ps]
    assert [r.response_ids for r in together] == [r.response_ids for r in alone]


def test_a_worked_solution_becomes_a_rollout_with_the_tool_results_forced(tokenizer):
    from icrl_lite.rollout import solution_rollout

    search = Tool(name="search", open_tag="<search>", close_tag="</search>", fn=lambda q: "")
    solution = ("<think> find it </think>\n<search> Velm </search>\n\n<information>Doc 1(Title: Velm) a river.</information>"
                "\n\n<think> got it </think>\n<answer> Velm </answer>")
    rollout = solution_rollout(tokenizer, [1, 2], solution, [search])
    assert tokenizer.decode(rollout.response_ids) == solution  # every character, in order
    forced = tokenizer.decode([t for t, bit in zip(rollout.response_ids, rollout.loss_mask) if not bit])
    assert forced == "\n\n<information>Doc 1(Title: Velm) a river.</information>\n\n"  # as the engine feeds it
    assert "<information>" not in rollout.policy_text and rollout.policy_text.endswith("<answer> Velm </answer>")
    assert [c["tool"] for c in rollout.tool_calls] == ["search"] and rollout.sampled_tokens == sum(rollout.loss_mask)


def test_after_observation_text_is_forced_after_each_result_and_scored_but_not_trained(tiny_model_dir):
    model, tok, cfg = load(tiny_model_dir, after_observation="<think>")
    tool = greedy_tool(model, tok, replace(cfg, after_observation=""))
    rollouts = RolloutEngine(model, tok, [tool], cfg).generate(prompts(tok), num_samples=1)
    forced = tok(tool.wrap(OBSERVATION) + "<think>", add_special_tokens=False)["input_ids"]
    called = [r for r in rollouts if r.tool_calls]
    assert called, "the frequent tool should have been called"
    for r in called:
        runs = [tokens for start, tokens in r.sampled_runs()]
        assert "".join(tok.decode(t, skip_special_tokens=True) for t in runs) != r.policy_text
        for at in r.opened:  # each result ends with the opener, forced (mask 0), and the policy samples after it
            assert r.response_ids[at - len(forced):at] == forced and set(r.loss_mask[at - len(forced):at]) == {0}
            assert r.loss_mask[at] == 1
        assert len(r.opened) == len([1 for start, _ in r.sampled_runs() if start in r.opened]) >= 1
        assert r.policy_text.count("<think>") == len(r.opened)  # the scored text holds each opener once
        assert OBSERVATION not in r.policy_text


def test_non_finite_logits_after_the_prompt_stop_generation_with_the_fix(tiny_model_dir):
    model, tok, cfg = load(tiny_model_dir)
    real = model.get_output_embeddings()

    class Overflowing(torch.nn.Module):  # a forward pass that overflowed (fp16 Qwen2 on a T4)
        def forward(self, h):
            logits = real(h)
            return torch.full_like(logits, float("nan"))

    model.get_output_embeddings = lambda: Overflowing()
    with pytest.raises(FloatingPointError, match="not finite.*model.dtype=fp32"):
        RolloutEngine(model, tok, [], cfg).generate(prompts(tok))


# ---- what a decode step waits for: reads of device values on the host, host-to-device copies ------------------
@pytest.fixture
def engine_transfers(monkeypatch):
    """Counts, per engine step (a `_schedule` call), what rollout.py itself does that would wait for a GPU or copy to
    it: tensor-to-Python reads (`tolist`, `item`, `bool`, `int`, `float`) and tensors made from host values
    (`torch.tensor`). Returns the list of per-step counts, filled in as an engine runs."""
    import sys

    from icrl_lite import rollout as rollout_module

    steps = [{"reads": 0, "copies": 0}]  # before the first step: the prefill

    def counted(kind, original):
        def spy(*args, **kwargs):
            if sys._getframe(1).f_code.co_filename == rollout_module.__file__:
                steps[-1][kind] += 1
            return original(*args, **kwargs)
        return spy

    for name in ("tolist", "item", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, counted("reads", getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "tensor", counted("copies", torch.tensor))
    schedule = RolloutEngine._schedule

    def next_step(self, rows):
        steps.append({"reads": 0, "copies": 0})
        return schedule(self, rows)

    monkeypatch.setattr(RolloutEngine, "_schedule", next_step)
    return steps


def run_with_tool_calls(tiny_model_dir, rows_per_prompt: int):
    model, tok, cfg = load(tiny_model_dir)
    engine = RolloutEngine(model, tok, [greedy_tool(model, tok, cfg)], cfg)
    return engine, lambda: engine.generate(prompts(tok), num_samples=rows_per_prompt)


@pytest.mark.parametrize("rows_per_prompt", [1, 4])
def test_a_step_reads_the_device_once_whatever_the_batch(tiny_model_dir, engine_transfers, rows_per_prompt):
    _, generate = run_with_tool_calls(tiny_model_dir, rows_per_prompt)
    engine_transfers.clear()
    engine_transfers.append({"reads": 0, "copies": 0})
    rollouts = generate()
    assert any(r.tool_calls for r in rollouts) and len(engine_transfers) > 10
    assert engine_transfers[0]["reads"] <= 2  # the prefill's finite-logits check, the first tokens
    assert max(step["reads"] for step in engine_transfers[1:]) == 1  # the sampled tokens and their log-probs


@pytest.mark.parametrize("rows_per_prompt", [1, 4])
def test_a_step_copies_its_inputs_to_the_device_at_once_whatever_the_batch(tiny_model_dir, engine_transfers,
                                                                            rows_per_prompt):
    _, generate = run_with_tool_calls(tiny_model_dir, rows_per_prompt)
    engine_transfers.clear()
    engine_transfers.append({"reads": 0, "copies": 0})
    generate()
    # the step's ids and mask; the rows that sample, leave, or feed a forced chunk when not all of them do
    assert max(step["copies"] for step in engine_transfers) <= 4


def test_the_hosts_count_of_each_rows_positions_is_the_masks(tiny_model_dir, monkeypatch):
    from icrl_lite import rollout as rollout_module

    checked, compact = [], rollout_module.compact

    def checking(cache, attn, counts, **kwargs):
        assert list(counts) == attn.sum(1).tolist()
        checked.append(len(counts))
        return compact(cache, attn, counts, min_len=32)  # compacts too, so later counts follow a compaction

    monkeypatch.setattr(rollout_module, "compact", checking)
    engine, generate = run_with_tool_calls(tiny_model_dir, 3)
    rollouts = generate()
    assert any(r.tool_calls for r in rollouts) and len(set(checked)) > 1  # rows left the batch on the way
