"""anlp_ft.assignments.public.lab06 (LoRA and QLoRA): each public check passes a right answer (the solution's,
peft's LoRA layer, bitsandbytes' NF4) and fails a plausible mistake with a message that names it."""
import pytest
import torch
from torch import nn

from anlp_ft import lora as L
from anlp_ft.assignments.checks import CheckFailed
from anlp_ft.assignments.public import lab06
from tests.conftest import solution_answers

SOL = solution_answers("06", NF4_LEVELS=L.NF4_LEVELS)  # the reference answers, from the solution


# ex1: the LoRA layer ---------------------------------------------------------------------------------------------
class PeftLoRALinear(nn.Module):
    """Lab 06's layer interface (lora_A, lora_B, forward, merged()) around peft's own LoRA layer: a right answer
    the check has not seen."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16):
        import peft

        super().__init__()
        base.requires_grad_(False)
        layer = peft.tuners.lora.Linear(base, "default", peft.LoraConfig(r=r, lora_alpha=alpha), r=r, lora_alpha=alpha)
        # Registered before peft_layer, so named_parameters() reports peft's adapter weights under these names.
        self.lora_A = layer.lora_A["default"].weight
        self.lora_B = layer.lora_B["default"].weight
        self.peft_layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.peft_layer(x)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        base = self.peft_layer.get_base_layer()
        out = nn.Linear(base.in_features, base.out_features)
        out.weight.copy_(base.weight + self.peft_layer.get_delta_weight("default"))
        out.bias.copy_(base.bias)
        return out


class ATransposed(SOL.LoRALinear):
    def __init__(self, base, r=16, alpha=32):
        super().__init__(base, r, alpha)
        self.lora_A = nn.Parameter(torch.randn(base.in_features, r))  # (in, r) instead of (r, in)


class ATensor(SOL.LoRALinear):
    def __init__(self, base, r=16, alpha=32):
        super().__init__(base, r, alpha)
        a = self.lora_A.detach().clone()
        del self.lora_A
        self.lora_A = a  # a plain tensor: the optimizer never sees it


class BRandom(SOL.LoRALinear):
    def __init__(self, base, r=16, alpha=32):
        super().__init__(base, r, alpha)
        nn.init.kaiming_uniform_(self.lora_B.data, a=5 ** 0.5)  # initialised like A


class AZero(SOL.LoRALinear):
    def __init__(self, base, r=16, alpha=32):
        super().__init__(base, r, alpha)
        nn.init.zeros_(self.lora_A.data)


class BaseTrainable(SOL.LoRALinear):
    def __init__(self, base, r=16, alpha=32):
        super().__init__(base, r, alpha)
        self.base.requires_grad_(True)  # the base layer is not frozen


class ScalingAlpha(SOL.LoRALinear):
    def __init__(self, base, r=16, alpha=32):
        super().__init__(base, r, alpha)
        self.scaling = alpha  # alpha, not alpha / r


class MergedWithoutScaling(SOL.LoRALinear):
    @torch.no_grad()
    def merged(self) -> nn.Linear:
        out = super().merged()
        out.weight.copy_(self.base.weight + self.lora_B @ self.lora_A)  # W + B A, the scaling forgotten
        return out


@pytest.mark.parametrize("layer", [SOL.LoRALinear, PeftLoRALinear], ids=["reference", "peft"])
def test_lab06_ex1_accepts_a_right_layer(layer):
    assert "matches base(x) + (alpha / r) x A^T B^T" in lab06.ex1(layer)


@pytest.mark.parametrize("layer, message", [
    (ATransposed, r"lora_A should have shape \(4, 24\)"),
    (ATensor, "lora_A must be an nn.Parameter"),
    (BRandom, "lora_B must start at zero"),
    (AZero, "lora_A must start random"),
    (BaseTrainable, "only lora_A and lora_B should be trainable"),
    (ScalingAlpha, "check the scaling alpha / r"),
    (MergedWithoutScaling, "the merged layer's output differs"),
], ids=["A-transposed", "A-not-a-parameter", "B-random", "A-zero", "base-trainable", "scaling-alpha",
        "merged-without-scaling"])
def test_lab06_ex1_names_the_mistake(layer, message):
    with pytest.raises(CheckFailed, match=message):
        lab06.ex1(layer)


# ex2: injecting LoRA into every projection ------------------------------------------------------------------------
def _attention_only(model, r=8, alpha=16):
    for p in model.parameters():
        p.requires_grad_(False)
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj")]
    for name, module in found:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, SOL.LoRALinear(module, r, alpha))
    return model


def _nothing_else_frozen(model, r=8, alpha=16):
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in L.LORA_TARGETS]
    for name, module in found:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, SOL.LoRALinear(module, r, alpha))  # freezes the base linear only
    return model


def _returns_nothing(model, r=8, alpha=16):
    SOL.inject_lora(model, r, alpha)


def test_lab06_ex2_accepts_the_reference():
    assert "14 projections adapted" in lab06.ex2(SOL.inject_lora)


@pytest.mark.parametrize("inject, message", [
    (_attention_only, r"expected 14 LoRA layers \(7 projections x 2 layers\), found 8"),
    (_nothing_else_frozen, "freeze everything else, embeddings and norms included"),
    (_returns_nothing, "should return the model"),
], ids=["attention-only", "rest-not-frozen", "returns-none"])
def test_lab06_ex2_names_the_mistake(inject, message):
    with pytest.raises(CheckFailed, match=message):
        lab06.ex2(inject)


# ex3: NF4 quantisation ----------------------------------------------------------------------------------------------
def _bnb_quantize(w, block=64):
    bnbf = pytest.importorskip("bitsandbytes.functional")
    packed, state = bnbf.quantize_4bit(w, blocksize=block, quant_type="nf4", compress_statistics=False)
    return L.unpack_nibbles(packed, w.numel()), state.absmax


def _bnb_dequantize(codes, absmax, shape, block=64):
    bnbf = pytest.importorskip("bitsandbytes.functional")
    levels = bnbf.get_4bit_type("nf4", device="cpu").float()
    return (levels[codes.long()].view(-1, block) * absmax.unsqueeze(1)).reshape(shape)


def _one_absmax(w, block=64):
    absmax = w.abs().max().reshape(1)  # one scale for the whole tensor
    scaled = (w.reshape(-1) / absmax).clamp(-1, 1)
    return torch.bucketize(scaled, (L.NF4_LEVELS[:-1] + L.NF4_LEVELS[1:]) / 2).to(torch.uint8), absmax


def _max_not_absmax(w, block=64):
    codes, _ = SOL.nf4_quantize(w, block)
    return codes, w.reshape(-1, block).amax(dim=1)  # the largest value, not the largest magnitude


def _round_down(w, block=64):
    _, absmax = SOL.nf4_quantize(w, block)
    scaled = (w.reshape(-1, block) / absmax.unsqueeze(1)).reshape(-1)
    codes = (torch.bucketize(scaled, L.NF4_LEVELS, right=True) - 1).clamp(0, 15)  # the level below, not the nearest
    return codes.to(torch.uint8), absmax


def _flat_dequantize(codes, absmax, shape, block=64):
    return SOL.nf4_dequantize(codes, absmax, shape, block).reshape(-1)


def _linear_levels(codes, absmax, shape, block=64):
    levels = torch.linspace(-1, 1, 16)  # evenly spaced, not NF4's normal quantiles
    return (levels[codes.long()].view(-1, block) * absmax.unsqueeze(1)).reshape(shape)


@pytest.mark.parametrize("quantize, dequantize", [(SOL.nf4_quantize, SOL.nf4_dequantize),
                                                  (_bnb_quantize, _bnb_dequantize)], ids=["reference", "bitsandbytes"])
def test_lab06_ex3_accepts_right_nf4(quantize, dequantize):
    assert "equal those of" in lab06.ex3(quantize, dequantize)


@pytest.mark.parametrize("quantize, dequantize, message", [
    (_one_absmax, SOL.nf4_dequantize, r"one absmax per block of 64 expected \(96\), got 1"),
    (_max_not_absmax, SOL.nf4_dequantize, "absmax differs"),
    (_round_down, SOL.nf4_dequantize, "of the codes are not .* NEAREST level"),
    (SOL.nf4_quantize, _flat_dequantize, r"should return the original shape \(96, 64\)"),
    (SOL.nf4_quantize, _linear_levels, "dequantised values differ"),
], ids=["one-absmax", "max-not-absmax", "round-down", "flat-dequantize", "linear-levels"])
def test_lab06_ex3_names_the_mistake(quantize, dequantize, message):
    with pytest.raises(CheckFailed, match=message):
        lab06.ex3(quantize, dequantize)


# ex4: bits per parameter --------------------------------------------------------------------------------------------
def test_lab06_ex4_accepts_the_reference():
    assert lab06.ex4(SOL.bits_per_parameter) == "4.5 and 4.1270 bits per parameter"


@pytest.mark.parametrize("bits, message", [
    (lambda block=64, double_quant=False, dq_block=256: 4.0, "4 bits \\+ one fp32 absmax per 64 values = 4.5, got 4.0"),
    (lambda block=64, double_quant=False, dq_block=256: 4 + (8 if double_quant else 32) / block,
     "with double quantisation: .* = 4.127, got 4.125"),
], ids=["absmax-forgotten", "second-level-scales-forgotten"])
def test_lab06_ex4_names_the_mistake(bits, message):
    with pytest.raises(CheckFailed, match=message):
        lab06.ex4(bits)


def test_lab06_ex3_without_bitsandbytes_checks_nf4s_definition(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as in Colab, which has no bitsandbytes
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    assert "NF4's definition" in lab06.ex3(SOL.nf4_quantize, SOL.nf4_dequantize)
    with pytest.raises(CheckFailed, match="NEAREST level"):
        lab06.ex3(_round_down, SOL.nf4_dequantize)
    with pytest.raises(CheckFailed, match="dequantised values differ"):
        lab06.ex3(SOL.nf4_quantize, _linear_levels)
