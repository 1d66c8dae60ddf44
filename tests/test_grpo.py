"""Tests for icrl_lite.grpo against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from icrl_lite.grpo import group_advantages, group_spread, grpo_loss, k3_kl

# ---- advantages -----------------------------------------------------------------------------------------


def test_group_advantages_hand_numbers():
    # group 0: [1, 0, 0, 1]: mean 0.5, sample var = 4 * 0.25 / 3 = 1/3, std = 0.57735
    #          -> advantages +-0.5 / 0.57735 = +-0.866025
    # group 1: [1, 0, 0, 0]: mean 0.25, sample var = (0.5625 + 3 * 0.0625) / 3 = 0.25, std = 0.5
    #          -> advantages [0.75, -0.25, -0.25, -0.25] / 0.5 = [1.5, -0.5, -0.5, -0.5]
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    adv, informative = group_advantages(rewards, group_size=4, eps=0.0)
    a = 0.5 / math.sqrt(1 / 3)
    expected = torch.tensor([a, -a, -a, a, 1.5, -0.5, -0.5, -0.5])
    torch.testing.assert_close(adv, expected)
    assert informative.all()


def test_zero_variance_group_gets_exactly_zero_and_is_not_informative():
    # group 1 is [0.1, 0.1, 0.1]: its float mean need not equal 0.1 exactly, the advantage must still be 0
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.1, 0.1, 0.1])
    adv, informative = group_advantages(rewards, group_size=3)
    assert informative.tolist() == [True, True, True, False, False, False]
    assert adv[3:].tolist() == [0.0, 0.0, 0.0]


def test_group_advantages_rejects_ragged_batch():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), group_size=4)


def test_group_advantages_rejects_group_of_one():
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        group_advantages(torch.zeros(4), group_size=1)


# ---- k3 KL ----------------------------------------------------------------------------------------------


def test_k3_hand_values():
    # d = ref - logp.  d = ln 2: 2 - 0.693147 - 1 = 0.306853;  d = -ln 2: 0.5 + 0.693147 - 1 = 0.193147;  d = 0: 0
    logp = torch.tensor([0.0, 0.0, -1.0])
    ref = torch.tensor([math.log(2), -math.log(2), -1.0])
    torch.testing.assert_close(k3_kl(logp, ref), torch.tensor([0.306853, 0.193147, 0.0]), atol=1e-6, rtol=0)


def test_k3_is_non_negative():
    g = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(1000, generator=g) * 3, torch.randn(1000, generator=g) * 3
    assert (k3_kl(logp, ref) >= 0).all()


# ---- loss -----------------------------------------------------------------------------------------------

# A 2 x 3 batch with old_logp = 0, so ratio = exp(logp). Row 1's last token is padding (mask 0) with a
# garbage log-prob of 100 (exp(100) overflows float32) that must not leak into the loss.
#   row 0, A = +1, ratios [1.0, 1.5, 0.9]:
#     t0: min(1.0, 1.0)        =  1.0 -> loss -1.0
#     t1: min(1.5, clip 1.2)   =  1.2 -> loss -1.2   (clip active: ratio > 1.2 and A > 0)
#     t2: min(0.9, 0.9)        =  0.9 -> loss -0.9
#   row 1, A = -2, ratios [0.9, 1.1, pad]:
#     t0: min(-1.8, -1.8)      = -1.8 -> loss +1.8   (0.9 inside [0.8, 1.2]: no clip)
#     t1: min(-2.2, -2.2)      = -2.2 -> loss +2.2
#   sum = -1.0 - 1.2 - 0.9 + 1.8 + 2.2 = 0.9 over 5 tokens -> loss 0.18
#   clip fraction 1/5 = 0.2; ratio mean (1.0 + 1.5 + 0.9 + 0.9 + 1.1) / 5 = 1.08
RATIOS = [[1.0, 1.5, 0.9], [0.9, 1.1, 1.0]]
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADV = torch.tensor([1.0, -2.0])


def _logp() -> torch.Tensor:
    logp = torch.tensor(RATIOS).log()
    logp[1, 2] = 100.0  # garbage at the padded position
    return logp.requires_grad_(True)


def test_loss_hand_example_with_one_clipped_token():
    logp = _logp()
    loss, metrics = grpo_loss(logp, torch.zeros(2, 3), ADV, MASK, beta=0.0)
    assert loss.item() == pytest.approx(0.18, abs=1e-6)
    assert metrics["policy_loss"].item() == pytest.approx(0.18, abs=1e-6)
    assert metrics["clip_fraction"].item() == pytest.approx(0.2)
    assert metrics["ratio_mean"].item() == pytest.approx(1.08, abs=1e-6)
    assert metrics["kl"].item() == 0.0


def test_loss_gradient_is_zero_on_clipped_and_padded_tokens():
    # d loss / d logp_t = -ratio_t * A / N where the clip is inactive, 0 where it is active or masked:
    #   row 0: -1.0 * 1 / 5 = -0.2,  0 (clipped),  -0.9 * 1 / 5 = -0.18
    #   row 1: -0.9 * -2 / 5 = 0.36,  -1.1 * -2 / 5 = 0.44,  0 (padding; finite despite logp = 100)
    logp = _logp()
    loss, _ = grpo_loss(logp, torch.zeros(2, 3), ADV, MASK, beta=0.0)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.2, 0.0, -0.18], [0.36, 0.44, 0.0]]))


def test_loss_adds_beta_times_k3():
    # ref = logp + ln 2 on every token -> k3 = 0.306853 per token; beta = 0.1 adds 0.0306853 to the mean
    logp = _logp()
    ref = logp.detach() + math.log(2)
    loss, metrics = grpo_loss(logp, torch.zeros(2, 3), ADV, MASK, ref_logp=ref, beta=0.1)
    assert metrics["kl"].item() == pytest.approx(0.306853, abs=1e-6)
    assert loss.item() == pytest.approx(0.18 + 0.1 * 0.306853, abs=1e-6)
    # beta = 0 turns the KL term off but still reports the KL
    loss0, metrics0 = grpo_loss(logp, torch.zeros(2, 3), ADV, MASK, ref_logp=ref, beta=0.0)
    assert loss0.item() == pytest.approx(0.18, abs=1e-6)
    assert metrics0["kl"].item() == pytest.approx(0.306853, abs=1e-6)


def test_on_policy_loss_is_minus_mean_advantage_per_token():
    # ratio = 1 everywhere: loss = -sum_t A_b / N = -(3 * 1 + 2 * -2) / 5 = 0.2
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, metrics = grpo_loss(logp, torch.zeros(2, 3), ADV, MASK)
    assert loss.item() == pytest.approx(0.2)
    assert metrics["clip_fraction"].item() == 0.0


def test_micro_batches_with_total_num_tokens_match_full_batch_gradient():
    # Rows of very different lengths: with num_tokens = total mask count, the summed micro-batch gradients
    # equal the full-batch gradient; with each micro-batch's own count they would not.
    g = torch.Generator().manual_seed(0)
    B, T = 4, 6
    logp = (torch.randn(B, T, generator=g) * 0.1 - 1.0).requires_grad_(True)
    old = logp.detach() + torch.randn(B, T, generator=g) * 0.2
    ref = logp.detach() + torch.randn(B, T, generator=g) * 0.2
    adv = torch.tensor([1.0, -0.5, 0.3, -1.2])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]])

    full, _ = grpo_loss(logp, old, adv, mask, ref_logp=ref, beta=0.04)
    (full_grad,) = torch.autograd.grad(full, logp)

    total = int(mask.sum())  # 13
    acc = torch.zeros_like(logp)
    own = torch.zeros_like(logp)
    for rows in (slice(0, 2), slice(2, 4)):
        args = (logp[rows], old[rows], adv[rows], mask[rows])
        part, _ = grpo_loss(*args, ref_logp=ref[rows], beta=0.04, num_tokens=total)
        acc += torch.autograd.grad(part, logp)[0]
        part_own, _ = grpo_loss(*args, ref_logp=ref[rows], beta=0.04)
        own += torch.autograd.grad(part_own, logp)[0]

    torch.testing.assert_close(acc, full_grad)
    assert not torch.allclose(own, full_grad)


def test_loss_rejects_mismatched_advantages():
    with pytest.raises(ValueError, match="advantages must be"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), MASK)


def test_scale_rewards_batch_and_none_hand_numbers():
    # groups [0, 0.02] (format-only difference) and [0, 0.8] (correct answer)
    rewards = torch.tensor([0.0, 0.02, 0.0, 0.8])
    group, _ = group_advantages(rewards, 2, eps=0.0, scale="group")
    # per-group std of a pair {0, d} is d / sqrt(2): both groups get +-1/sqrt(2), the complaint
    torch.testing.assert_close(group, torch.tensor([-1, 1, -1, 1.0]) / math.sqrt(2))
    none, _ = group_advantages(rewards, 2, scale="none")
    torch.testing.assert_close(none, torch.tensor([-0.01, 0.01, -0.4, 0.4]))
    batch, _ = group_advantages(rewards, 2, eps=0.0, scale="batch")
    std = torch.tensor([0.0, 0.02, 0.0, 0.8]).std().item()  # one scale for the whole step
    torch.testing.assert_close(batch, torch.tensor([-0.01, 0.01, -0.4, 0.4]) / std)
    assert abs(batch[3] / batch[1] - 40) < 1e-4  # the correct-answer group keeps its 40x larger advantage


def test_scale_rewards_rejects_unknown_mode():
    with pytest.raises(ValueError, match="group, batch, none"):
        group_advantages(torch.zeros(4), 2, scale="std")


def test_shaped_offpolicy_loss_hand_numbers_and_gradient():
    from icrl_lite.grpo import shaped_offpolicy_loss

    # p = 0.1 and 0.9 with gamma 0.1: f = 0.5 and 0.9; A = 2 -> per-token -1.0 and -1.8, mean -1.4
    logp = torch.log(torch.tensor([[0.1, 0.9, 0.5]])).requires_grad_()
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss = shaped_offpolicy_loss(logp, torch.tensor([2.0]), mask, gamma=0.1)
    torch.testing.assert_close(loss, torch.tensor(-1.4))
    loss.backward()
    # d/dlogp of -A p/(p+g) / 2 tokens = -A g p / (p+g)^2 / 2: p=0.1 -> -0.25, p=0.9 -> -0.09; masked -> 0
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -0.09, 0.0]]))


def test_clip_higher_lets_a_positive_advantage_token_gain_more_before_its_gradient_is_cut():
    logp = torch.full((1, 1), math.log(1.25), requires_grad=True)  # ratio 1.25 against old log-prob 0
    old, adv, mask = torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1)
    clipped, metrics = grpo_loss(logp, old, adv, mask, epsilon=0.2, beta=0.0)
    (grad,) = torch.autograd.grad(clipped, logp)
    assert grad.item() == 0.0 and metrics["clip_fraction"].item() == 1.0  # 1.25 > 1.2: cut
    higher, metrics = grpo_loss(logp, old, adv, mask, epsilon=0.2, beta=0.0, epsilon_high=0.28)
    (grad,) = torch.autograd.grad(higher, logp)
    assert grad.item() == pytest.approx(-1.25) and metrics["clip_fraction"].item() == 0.0  # 1.25 < 1.28: kept
    low = torch.full((1, 1), math.log(0.75), requires_grad=True)  # the lower bound stays 1 - epsilon
    loss, _ = grpo_loss(low, old, -adv, mask, epsilon=0.2, beta=0.0, epsilon_high=0.28)
    assert torch.autograd.grad(loss, low)[0].item() == 0.0


def test_group_spread_is_the_mean_within_group_sample_std():
    values = torch.tensor([0.0, 1.0, 1.0, 1.0])  # groups of 2: std 0.7071 and 0
    assert group_spread(values, 2) == pytest.approx(math.sqrt(0.5) / 2)
    with pytest.raises(ValueError, match="multiple"):
        group_spread(torch.zeros(3), 2)
