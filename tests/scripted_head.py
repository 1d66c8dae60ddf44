"""An output head for tests that makes the rollout engine sample a fixed script, shared by test modules."""

import torch


class Scripted(torch.nn.Module):
    """An output head that makes the (single) row sample `script` token by token, then EOS: one forward pass,
    one sampled token."""

    def __init__(self, script: list[int], vocab: int, eos: int):
        super().__init__()
        self.script, self.vocab, self.eos, self.calls = script, vocab, eos, 0

    def forward(self, h):  # (B, H) -> (B, V)
        token = self.script[self.calls] if self.calls < len(self.script) else self.eos
        self.calls += 1
        logits = torch.full((h.shape[0], self.vocab), -1e9)
        logits[:, token] = 0.0
        return logits
