"""GRPO maths on tensors: group-relative advantages, the k3 KL estimator and the clipped policy loss.

Pure functions of tensors and masks; nothing here touches a model. The loss mask comes from the rollout
(1 = token sampled by the policy, 0 = prompt, tool output or padding) and is never rebuilt from pad ids.

Departures from the GRPO paper (DeepSeekMath), as in ICRL's training recipe and DAPO:

- The loss is a token-level mean over all policy tokens of the batch (DAPO), not a mean over tokens of
  each sequence followed by a mean over sequences, so long responses are not down-weighted.
- Advantages are scaled by the group's sample std (GRPO, TRL's default), the batch's, or not at all (Dr. GRPO):
  ``scale_rewards``; groups whose rewards are all equal carry no signal and get an advantage of exactly 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


SCALE_REWARDS = ("group", "batch", "none")


def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6,
                     scale: str = "group") -> tuple[Tensor, Tensor]:
    """Group-relative advantages ``(r - group mean) / s``.

    ``rewards`` is (N,) with N = num_groups * group_size, laid out group-contiguous (the group_size
    samples of prompt 0, then those of prompt 1, ...). ``scale`` picks ``s``:

    - ``group``: the group's sample std + eps (GRPO; TRL's default). A 0.02 format-only spread then gets the
      same advantage as a 0.8 correct-answer spread.
    - ``batch``: the sample std of all N rewards + eps (one scale for the step: a group's advantage keeps its
      size relative to the others').
    - ``none``: 1 (Dr. GRPO): advantages are raw reward differences.

    The std is the sample std (divides by n - 1). Returns ``advantages`` (N,) float and ``informative`` (N,)
    bool, True where the sample's group has non-zero variance; advantages of the other groups are exactly 0.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}; flatten it first")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (GRPO compares several samples of one prompt), got {group_size}")
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale={scale!r}: use one of {', '.join(SCALE_REWARDS)}")
    n = rewards.shape[0]
    if n % group_size != 0:
        raise ValueError(
            f"{n} rewards do not split into groups of {group_size}; pass num_prompts * group_size rewards, "
            "ordered group by group"
        )
    r = rewards.float().view(-1, group_size)  # (G, K)
    mean = r.mean(dim=1, keepdim=True)  # (G, 1)
    if scale == "group":
        denom = r.std(dim=1, unbiased=True, keepdim=True) + eps  # (G, 1)
    elif scale == "batch":
        denom = (r.std(unbiased=True) if n > 1 else torch.zeros(())) + eps  # ()
    else:
        denom = torch.ones(())  # ()
    informative = r.amax(dim=1, keepdim=True) != r.amin(dim=1, keepdim=True)  # (G, 1) exact, no float noise
    adv = torch.where(informative, (r - mean) / denom, torch.zeros_like(r))  # (G, K)
    return adv.view(-1), informative.expand_as(r).reshape(-1)  # (N,), (N,)


def group_spread(values: Tensor, group_size: int) -> float:
    """The mean over groups of the sample std of ``values`` (N,) within each group (group-contiguous, as in
    ``group_advantages``): how much of a step's reward spread one of its parts (correctness, format) makes."""
    if values.dim() != 1 or values.shape[0] % group_size or group_size < 2:
        raise ValueError(f"values must be (N,) with N a multiple of group_size >= 2, got {tuple(values.shape)}, {group_size}")
    return values.view(-1, group_size).std(dim=1).mean().item()


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(policy || reference): ``exp(d) - d - 1`` with ``d = ref_logp - logp``.

    Unbiased for tokens sampled from the policy, lower variance than ``-d``, and always >= 0.
    """
    d = ref_logp - logp  # (B, T)
    return torch.exp(d) - d - 1.0  # (B, T)


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    epsilon: float = 0.2,
    beta: float = 0.001,
    num_tokens: int | float | Tensor | None = None,
    epsilon_high: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The one GRPO loss: PPO-clipped surrogate plus k3 KL, averaged over policy tokens.

    Per token, with ``ratio = exp(logp - old_logp)`` and the sequence's advantage A::

        loss_t = -min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A) + beta * k3(logp, ref_logp)

    (the KL term only when ``ref_logp`` is given and ``beta > 0``; ``epsilon_high`` None = ``epsilon``, a larger
    one is DAPO's clip-higher: a token with A > 0 may gain more before its gradient is cut). The loss is
    ``sum(loss_t over mask tokens) / num_tokens``; ``num_tokens`` defaults to ``mask.sum()``. When a batch is
    split into micro-batches for gradient accumulation, pass the mask-token count of the whole batch so the
    summed gradients equal the gradient of the full-batch token mean (DAPO-style token-level mean).

    Shapes: ``logp``, ``old_logp``, ``ref_logp``, ``mask`` (B, T); ``advantages`` (B,). Positions with mask 0
    are zeroed before any arithmetic, so garbage log-probs there (padding) cannot produce inf or NaN in the
    loss or its gradient.

    Metrics (detached, means over this call's mask tokens, not divided by ``num_tokens``): ``policy_loss``
    (the clipped surrogate alone), ``kl`` (k3; 0 without ``ref_logp``), ``clip_fraction`` (tokens whose
    gradient the clip removed: ratio > 1 + epsilon with A > 0, or ratio < 1 - epsilon with A < 0) and
    ``ratio_mean``.
    """
    if logp.dim() != 2 or logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp, old_logp and mask must share one (B, T) shape, got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    if ref_logp is not None and ref_logp.shape != logp.shape:
        raise ValueError(f"ref_logp must have the shape of logp {tuple(logp.shape)}, got {tuple(ref_logp.shape)}")
    if advantages.shape != (logp.shape[0],):
        raise ValueError(f"advantages must be (B,) = ({logp.shape[0]},), got {tuple(advantages.shape)}")
    high = epsilon if epsilon_high is None else epsilon_high
    if epsilon < 0 or high < 0:
        raise ValueError(f"epsilon and epsilon_high (clip range) must be >= 0, got {epsilon}, {epsilon_high}")
    if beta < 0:
        raise ValueError(f"beta (KL weight) must be >= 0, got {beta}; use 0 to turn the KL term off")

    keep = mask.bool()  # (B, T)
    zero = torch.zeros_like(logp)  # (B, T)
    logp = torch.where(keep, logp, zero)  # (B, T)
    old_logp = torch.where(keep, old_logp.detach(), zero)  # (B, T)
    adv = advantages.detach().to(logp.dtype).unsqueeze(1)  # (B, 1)

    ratio = torch.exp(logp - old_logp)  # (B, T)
    unclipped = ratio * adv  # (B, T)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + high) * adv  # (B, T)
    surrogate = -torch.minimum(unclipped, clipped)  # (B, T)

    if ref_logp is not None:
        kl = k3_kl(logp, torch.where(keep, ref_logp.detach(), zero))  # (B, T)
    else:
        kl = zero  # (B, T)
    per_token = surrogate + beta * kl if (ref_logp is not None and beta > 0) else surrogate  # (B, T)

    m = keep.to(logp.dtype)  # (B, T)
    local_tokens = m.sum().clamp(min=1.0)  # ()
    denom = local_tokens if num_tokens is None else torch.as_tensor(num_tokens, dtype=logp.dtype, device=logp.device)
    if denom <= 0:
        raise ValueError(f"num_tokens must be > 0 (the mask-token count of the whole batch), got {num_tokens}")
    loss = (per_token * m).sum() / denom  # ()

    with torch.no_grad():
        clip_active = ((ratio > 1.0 + high) & (adv > 0)) | ((ratio < 1.0 - epsilon) & (adv < 0))  # (B, T)
        metrics = {
            "policy_loss": (surrogate * m).sum() / local_tokens,
            "kl": (kl * m).sum() / local_tokens,
            "clip_fraction": (clip_active.to(m.dtype) * m).sum() / local_tokens,
            "ratio_mean": (ratio * m).sum() / local_tokens,
        }
    return loss, {k: v.detach() for k, v in metrics.items()}


def shaped_offpolicy_loss(
    logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    gamma: float = 0.1,
    num_tokens: int | float | Tensor | None = None,
) -> Tensor:
    """LUFFY's policy-shaped objective for off-policy tokens: ``-A * f(p)`` per token, ``f(p) = p / (p + gamma)``.

    ``p = exp(logp)`` is the current policy's probability of a token that another policy sampled (here: the
    same model with demonstrations in its prompt, scored without them). LUFFY takes the off-policy ratio as
    ``p / 1`` and shapes it with ``f``; the gradient ``A * gamma * p / (p + gamma)^2 * grad log p`` stays
    large for tokens the policy finds unlikely (``p`` near ``gamma``) instead of vanishing like ``p * grad log p``,
    and fades for tokens it already predicts. No clip. Same shapes and token mean as ``grpo_loss``.
    """
    if logp.shape != mask.shape or advantages.shape != (logp.shape[0],):
        raise ValueError(f"logp and mask must be (B, T) and advantages (B,), got {tuple(logp.shape)}, "
                         f"{tuple(mask.shape)}, {tuple(advantages.shape)}")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0 (LUFFY uses 0.1), got {gamma}")
    keep = mask.bool()  # (B, T)
    p = torch.exp(torch.where(keep, logp, torch.zeros_like(logp)))  # (B, T)
    per_token = -advantages.detach().to(logp.dtype).unsqueeze(1) * p / (p + gamma)  # (B, T)
    m = keep.to(logp.dtype)  # (B, T)
    denom = m.sum().clamp(min=1.0) if num_tokens is None else torch.as_tensor(num_tokens, dtype=logp.dtype)
    return (per_token * m).sum() / denom  # ()
