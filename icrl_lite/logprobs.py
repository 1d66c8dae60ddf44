"""Log-probabilities of tokens under the policy, with gradients: what the GRPO loss is made of.

`response_logprobs` scores a group's responses to one prompt with the prompt's KV computed once (and a prefix
shared by several prompts, `SharedPrefix`, once per update); `token_logprobs` goes through the LM head in blocks
(`HeadLogprobs`) so that the batch's logits never sit in memory at once.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint

from . import cpu
from .policy import decoder, run_decoder


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk: int = 1024,
                      temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each token given its prefix: (B, T) -> (B, T-1), for tokens 1..T-1, under
    softmax(logits / temperature)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T) handles left padding and holes
    hidden = decoder(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).last_hidden_state[:, :-1]  # (B, T-1, H)
    return token_logprobs(model.get_output_embeddings(), hidden, input_ids[:, 1:], chunk, temperature)


def response_logprobs(model, prompt: list[int], responses: list[list[int]], chunk: int = 1024,
                      temperature: float = 1.0, prefix: "SharedPrefix | None" = None) -> torch.Tensor:
    """Log-probabilities of several responses to ONE prompt: (G, R) for R = the longest response, under
    softmax(logits / temperature): score with the temperature the tokens were sampled with.

    The prompt goes through the model once and its KV cache is shared by the G responses; gradients flow
    back through that shared cache, so this is exact, but the prompt (long, with demonstrations) costs one
    forward/backward instead of G. Positions past a response's end hold junk: mask them.

    With gradient checkpointing on, transformers' checkpointed layers run without a KV cache (it would be
    written twice when the backward pass replays them), so the shared prompt would silently vanish from the
    context. Then each response is scored as one sequence, prompt + response: just as exact, but the prompt
    costs G forward/backward passes.

    `prefix` (from `SharedPrefix.compute`, a prefix of `prompt` shorter than it) supplies the KV of the prompt's
    first tokens, computed once for several prompts (the same demonstrations); only the rest of the prompt runs
    here. Ignored under gradient checkpointing.
    """
    if checkpoints_layers(model):
        return _joined_logprobs(model, prompt, responses, chunk, temperature)
    from transformers import DynamicCache

    device = model.device
    body = decoder(model)
    cache, start = DynamicCache(), 0
    if prefix is not None:
        start = prefix.load(cache, prompt)
    if len(prompt) - 1 > start:
        rest = torch.tensor([prompt[start:-1]], device=device)  # (1, P-1-start)
        run_decoder(body, cache, input_ids=rest, position_ids=torch.arange(start, len(prompt) - 1, device=device)[None])
    if len(prompt) > 1:
        cache.batch_repeat_interleave(len(responses))  # differentiable copy of the prompt's keys/values
    width = max(len(r) for r in responses)
    ids = torch.full((len(responses), width + 1), prompt[-1], dtype=torch.long, device=device)  # (G, R+1)
    fed = torch.zeros_like(ids)  # (G, R+1) 1 = a real token
    fed[:, 0] = 1
    for g, response in enumerate(responses):
        ids[g, 1:1 + len(response)] = torch.tensor(response, device=device)
        fed[g, 1:1 + len(response)] = 1
    attention_mask = torch.cat([torch.ones((len(responses), len(prompt) - 1), dtype=torch.long, device=device), fed], dim=1)
    position_ids = torch.arange(len(prompt) - 1, len(prompt) + width, device=device).expand(len(responses), -1)
    hidden = run_decoder(body, cache, input_ids=ids, attention_mask=attention_mask,
                         position_ids=position_ids).last_hidden_state[:, :-1]  # (G, R, H)
    return token_logprobs(model.get_output_embeddings(), hidden, ids[:, 1:], chunk, temperature)


class SharedPrefix:
    """The keys and values of a token prefix that several prompts of an update share (the demonstrations of a
    step), computed in one forward pass and reused by every `response_logprobs` call on those prompts.

    Gradients stay exact: the calls see the prefix's keys/values as leaf tensors, whose `.grad` sums what every
    call's backward sends them; `backward()` then runs the prefix's own graph once with those sums, which by the
    chain rule is what each call's backward through its own copy of the prefix would have added to the
    weights' gradients. So an update over B prompts with demonstrations pays one forward/backward of the demos
    instead of B. Call `backward()` after the last call's backward and before the optimizer step. Under no_grad
    (the reference pass) the prefix is plain cached state and `backward()` does nothing.
    """

    def __init__(self, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor], graph=None):
        self.ids, self.keys, self.values, self._graph = list(ids), keys, values, graph

    @classmethod
    def compute(cls, model, ids: list[int]) -> "SharedPrefix":
        from transformers import DynamicCache

        cache = DynamicCache()
        run_decoder(decoder(model), cache, input_ids=torch.tensor([ids], device=model.device))
        keys = [layer.keys for layer in cache.layers]  # per layer (1, heads, C, head_dim)
        values = [layer.values for layer in cache.layers]
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in keys + values):
            return cls(ids, keys, values)
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in keys + values]  # without a LoRA on k_proj,
        # the first layer's keys do not depend on a trainable weight: they stay constants
        return cls(ids, leaves[: len(keys)], leaves[len(keys):], graph=keys + values)

    def load(self, cache, prompt: list[int]) -> int:
        """Put the prefix's keys/values into an empty `cache` for `prompt`; returns the prefix length."""
        if len(prompt) <= len(self.ids) or list(prompt[: len(self.ids)]) != self.ids:
            raise ValueError(f"the shared prefix ({len(self.ids)} tokens) is not a proper prefix of this "
                             f"{len(prompt)}-token prompt")
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            cache.update(k, v, layer)
        return len(self.ids)

    def backward(self) -> None:
        """Send the gradients gathered on the prefix's keys/values through the pass that computed them."""
        if self._graph is None:
            return
        pairs = [(out, leaf.grad) for out, leaf in zip(self._graph, self.keys + self.values) if leaf.grad is not None]
        if pairs:
            torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])
        self._graph = None  # the graph is freed: a second call would fail


def checkpoints_layers(model) -> bool:
    """Whether the decoder's layers run under gradient checkpointing now (training mode with it switched on)."""
    return model.training and any(getattr(m, "gradient_checkpointing", False) for m in decoder(model).modules())


def _joined_logprobs(model, prompt: list[int], responses: list[list[int]], chunk: int, temperature: float) -> torch.Tensor:
    """`response_logprobs` without a KV cache: each row is prompt + response, right-padded: (G, R)."""
    device, start = model.device, len(prompt)
    width = max(len(r) for r in responses)
    ids = torch.full((len(responses), start + width), prompt[-1], dtype=torch.long, device=device)  # (G, P+R)
    ids[:, :start] = torch.tensor(prompt, device=device)
    for g, response in enumerate(responses):
        ids[g, start:start + len(response)] = torch.tensor(response, device=device)
    # right padding needs no attention mask: causal attention already hides the pads from every real token
    hidden = decoder(model)(input_ids=ids, use_cache=False).last_hidden_state[:, start - 1:-1]  # (G, R, H)
    return token_logprobs(model.get_output_embeddings(), hidden, ids[:, start:], chunk, temperature)


def token_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, chunk: int, temperature: float = 1.0) -> torch.Tensor:
    """log p(targets | hidden) through the LM head, `chunk` positions at a time: (B, T, H), (B, T) -> (B, T).

    p = softmax(logits / temperature); temperature 0 (greedy sampling) scores at 1.

    Each chunk's fp32 logits are recomputed in the backward pass (activation checkpointing) instead of
    kept, so the whole batch's B x T x vocab logits never sit in memory at once. A frozen, bias-free head (the
    usual case: LoRA leaves it alone) goes through `HeadLogprobs`, which does the same in blocks that stay in
    the CPU's cache (on a GPU, in `chunk`-position blocks), with the softmax's gradient written in place:
    2.4x faster for 512 positions on a 2-core EPYC in bf16 (forward + backward, 205 vs 496 ms), the same values.
    With `KEEP_SOFTMAX` (off by default), when the B x T positions' softmax in the head's dtype fits in one
    chunk's fp32 logits (chunk x vocab x 4 bytes), it keeps that softmax for the backward instead of recomputing
    the logits: 182 vs 201 ms for 512 positions (same gradients within bf16 rounding); memory stays bounded by
    the chunk.
    """
    scale = 1.0 / temperature if temperature > 0 else 1.0
    if frozen_linear(head):
        block = HEAD_BLOCK if hidden.device.type == "cpu" else chunk  # a GPU wants large matmuls, not cache blocks
        # the softmax is kept for the backward when it takes no more than one chunk's fp32 logits, if KEEP_SOFTMAX
        keep = KEEP_SOFTMAX and torch.is_grad_enabled() and targets.numel() * head.weight.element_size() <= chunk * 4
        return HeadLogprobs.apply(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets.reshape(-1), scale,
                                  block, keep).view(targets.shape)
    pieces = []
    for start in range(0, hidden.shape[1], chunk):
        h, t = hidden[:, start:start + chunk], targets[:, start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(torch.utils.checkpoint.checkpoint(_chunk_logprobs, head, h, t, scale, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(head, h, t, scale))
    return torch.cat(pieces, dim=1)


def _chunk_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return chosen_logprobs(head(hidden).float() * scale, targets)  # (B, c)


def chosen_logprobs(scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(scores)[token] at each position, (..., V), (...) -> (...) in fp32, without writing the whole
    log-softmax."""
    scores = scores.float()
    return scores.gather(-1, tokens[..., None]).squeeze(-1) - torch.logsumexp(scores, dim=-1)


HEAD_BLOCK = 64  # positions per block of `HeadLogprobs`: 64 x 49,152 fp32 logits = 12.6 MB
# Keep the head's softmax for the backward (faster: ~2% of a single-turn step) instead of recomputing it. Off: with
# it the default run trained to a lower EM in 3 of 3 seeds (within the seed spread; docs/results.md, 2026-11-29).
KEEP_SOFTMAX = False


def frozen_linear(head) -> bool:
    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


class HeadLogprobs(torch.autograd.Function):
    """log softmax(hidden W^T * scale)[target] for a frozen LM head W, `block` positions at a time.

    Forward turns each block's logits (block x vocab fp32: at 64 positions it stays in the CPU's cache, where the
    whole chunk's exp / subtract / convert passes went to memory) into the position's log-prob and its softmax.
    With `keep`, the softmax of all N positions is kept in W's dtype for the backward (N x vocab: 512 positions
    x 49,152 in bf16 = 48 MiB), which is then one pass over it and one matmul: d/dh = scale * grad * (W[t] - p W).
    Without, only each position's log-sum-exp is kept and the backward recomputes each block's logits (one more
    matmul with W: ~25% of the head's time), so memory stays at one block's logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, scale: float, block: int, keep: bool):  # (N, H), (V, H), (N,) -> (N,)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        probs = weight.new_empty((hidden.shape[0], weight.shape[0])) if keep else None  # (N, V)
        kernels = head_kernels(hidden, weight) if not keep else None
        for s in range(0, hidden.shape[0], block):
            if kernels is not None:  # one pass over the bf16 logits (icrl_lite/cpu/csrc/cpu_kernels.cpp)
                stats = kernels.head_lse(torch.nn.functional.linear(hidden[s:s + block], weight), targets[s:s + block], scale)
                lse[s:s + block] = stats[:, 0]
                out[s:s + block] = stats[:, 1] - stats[:, 0]
                continue
            logits = _block_logits(hidden[s:s + block], weight, scale)  # (b, V)
            lse[s:s + block] = torch.logsumexp(logits, dim=-1)
            out[s:s + block] = logits.gather(-1, targets[s:s + block, None]).squeeze(-1) - lse[s:s + block]
            if keep:
                probs[s:s + block] = logits.sub_(lse[s:s + block, None]).exp_()
        ctx.save_for_backward(targets, weight, *((probs, out) if keep else (hidden, lse)))
        ctx.scale, ctx.block, ctx.keep = scale, block, keep
        return out

    @staticmethod
    def backward(ctx, grad):  # (N,)
        targets, weight, *kept = ctx.saved_tensors
        scale, block = ctx.scale, ctx.block
        if ctx.keep:  # the forward's softmax, written over in place (it is used once)
            probs, logp = kept
            g = grad[:, None] * scale  # (N, 1)
            # the target's entry g (1 - p_t) from the fp32 log-prob: in bf16, 1 - p_t of a confident token
            # (p_t = 0.999 rounds to 1) would cancel to 0
            target = (-g * torch.expm1(logp[:, None])).to(weight.dtype)  # (N, 1)
            g = g.to(weight.dtype)
            grad_hidden = probs.new_empty((probs.shape[0], weight.shape[1]))  # (N, H)
            # in blocks, as the forward: one matmul over all N rows copied the N x V operand twice (oneDNN's layout)
            for s in range(0, probs.shape[0], block):
                p = probs[s:s + block].mul_(-g[s:s + block])  # -g p
                p.scatter_(-1, targets[s:s + block, None], target[s:s + block])  # g (1 - p) at the target
                grad_hidden[s:s + block] = p @ weight
            return grad_hidden, None, None, None, None, None
        hidden, lse = kept
        grad_hidden = torch.empty_like(hidden)
        kernels = head_kernels(hidden, weight)
        for s in range(0, hidden.shape[0], block):
            if kernels is not None:  # the logits' gradient in one pass, written over the recomputed bf16 logits
                probs = kernels.head_grad(torch.nn.functional.linear(hidden[s:s + block], weight), lse[s:s + block],
                                          targets[s:s + block], (grad[s:s + block] * scale).float().contiguous(), scale)
                grad_hidden[s:s + block] = probs @ weight
                continue
            logits = _block_logits(hidden[s:s + block], weight, scale)  # (b, V), recomputed
            g = grad[s:s + block, None] * scale  # (b, 1)
            probs = logits.sub_(lse[s:s + block, None]).exp_().mul_(-g)  # -g p
            probs.scatter_add_(-1, targets[s:s + block, None], g)  # + g at the target
            grad_hidden[s:s + block] = probs.to(weight.dtype) @ weight
        return grad_hidden, None, None, None, None, None


def head_kernels(hidden: torch.Tensor, weight: torch.Tensor):
    """The C++ kernels for `HeadLogprobs`' softmax passes (bf16 on a CPU; `icrl_lite.cpu`), or None: torch ops."""
    return cpu.kernels_for(hidden) if weight.dtype == torch.bfloat16 else None


def _block_logits(hidden: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    logits = torch.nn.functional.linear(hidden, weight).float()  # (b, V)
    return logits.mul_(scale) if scale != 1.0 else logits
