"""HalfLoraLinear (the base projection and its LoRA adapter as one half-precision autograd node on a CPU) against
peft's own forward, and when peft's forward is kept."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from icrl_lite.cpu.lora import HalfLoraLinear, plain_adapter, use_half_lora


class Tiny(torch.nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.proj = torch.nn.Linear(24, 40, bias=bias)

    def forward(self, x):
        return self.proj(x)


def lora_model(bias: bool = False, dropout: float = 0.0, dtype=torch.bfloat16):
    torch.manual_seed(0)
    model = get_peft_model(Tiny(bias), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["proj"]))
    model.to(dtype)
    layer = model.base_model.model.proj
    for name in ("lora_A", "lora_B"):  # fp32 adapters, as peft keeps them; B nonzero (fresh LoRA has B = 0)
        getattr(layer, name)["default"].float()
        torch.nn.init.normal_(getattr(layer, name)["default"].weight, std=0.3)
    return model, layer


def output_and_grads(model, layer, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out.double() * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
    grads = [x.grad.double()] + [getattr(layer, n)["default"].weight.grad.double() for n in ("lora_A", "lora_B")]
    for n in ("lora_A", "lora_B"):
        getattr(layer, n)["default"].weight.grad = None
    return [out.double()] + grads


@pytest.mark.parametrize("bias", [False, True])
def test_half_lora_matches_peft(bias):
    model, layer = lora_model(bias)
    x = torch.randn(3, 5, 24).bfloat16()
    theirs = output_and_grads(model, layer, x)  # peft's forward
    calls = []
    real = HalfLoraLinear.apply
    HalfLoraLinear.apply = lambda *a: calls.append(1) or real(*a)
    try:
        assert use_half_lora(model) == 1
        ours = output_and_grads(model, layer, x)
    finally:
        HalfLoraLinear.apply = real
    assert calls
    for got, want in zip(ours, theirs):
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 0.02 * want.abs().max()  # bf16 rounding; a lost term is O(1)
    assert layer.lora_A["default"].weight.dtype == torch.float32  # gradients land in the fp32 adapters


def test_half_lora_needs_no_input_gradient():
    model, layer = lora_model()
    use_half_lora(model)
    model(torch.randn(2, 24).bfloat16()).sum().backward()  # a frozen input (e.g. layer 0 after the embeddings)
    assert layer.lora_A["default"].weight.grad is not None and layer.lora_B["default"].weight.grad is not None


def test_peft_forward_is_kept_where_half_lora_would_differ():
    model, layer = lora_model()
    x = torch.randn(2, 24).bfloat16()
    assert plain_adapter(layer, x, (), {}) == "default"
    assert plain_adapter(layer, x.float(), (), {}) is None  # fp32: peft's forward
    assert plain_adapter(layer, x, (), {"adapter_names": ["default"]}) is None
    with model.disable_adapter():
        assert plain_adapter(layer, x, (), {}) is None
    layer.merge()
    assert plain_adapter(layer, x, (), {}) is None
    layer.unmerge()
    dropped, dropped_layer = lora_model(dropout=0.1)
    assert plain_adapter(dropped_layer, x, (), {}) is None  # training with dropout: peft's forward
    dropped.eval()
    assert plain_adapter(dropped_layer, x, (), {}) == "default"
    assert plain_adapter(layer, x.half(), (), {}) is None  # fp16: peft's forward (fp32 adapter gradients)
    biased, biased_layer = lora_model()
    biased_layer.lora_B["default"].bias = torch.nn.Parameter(torch.zeros(40))  # what peft's lora_bias=True adds
    assert plain_adapter(biased_layer, x, (), {}) is None
    layer.base_layer.weight.requires_grad_(True)
    assert plain_adapter(layer, x, (), {}) is None  # a trained base weight needs its own gradient


def test_disabled_adapter_still_computes_the_base():
    model, layer = lora_model()
    use_half_lora(model)
    x = torch.randn(2, 24).bfloat16()
    with model.disable_adapter():
        base = model(x)
    assert torch.equal(base, layer.base_layer(x))
    assert not torch.allclose(model(x).float(), base.float())  # the adapter (B != 0) is back on
