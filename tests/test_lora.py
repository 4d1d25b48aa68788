"""anlp_ft.lora (counting, merging, copying peft's adapters, nibbles, the NF4 table, double quantisation), with lab
06's reference answers from its solution checked against the libraries that do it for real: the LoRA layer and its
injection equal peft's, NF4 codes, dequantisation and storage equal bitsandbytes'."""
import copy

import pytest
import torch

from anlp_ft import lora as L
from anlp_ft.memory import ModelShape, lora_param_count
from tests.conftest import solution_answers

SOL = solution_answers("06", NF4_LEVELS=L.NF4_LEVELS)  # the reference answers, from the solution

bnbf = pytest.importorskip("bitsandbytes.functional")


@pytest.fixture
def tiny(tiny_model_factory):
    return tiny_model_factory(vocab_size=1000).eval()


def test_lora_layer_starts_at_the_base_and_trains_only_a_and_b():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 8)
    layer = SOL.LoRALinear(base, r=4, alpha=8)
    assert torch.all(layer.lora_B == 0)
    assert layer.lora_A.abs().sum() > 0
    x = torch.randn(3, 16)
    assert torch.equal(layer(x), base(x))
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    assert layer.scaling == 2.0


def test_inject_counts_and_matches_peft(tiny):
    peft = pytest.importorskip("peft")
    ours = SOL.inject_lora(copy.deepcopy(tiny), r=4, alpha=8)
    trainable, total = L.count_parameters(ours)
    assert trainable == lora_param_count(ModelShape.from_config(tiny.config), 4)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(L.LORA_TARGETS))
    theirs = peft.get_peft_model(copy.deepcopy(tiny), config)
    torch.manual_seed(1)
    with torch.no_grad():  # B = 0 at init makes any two adapters agree; give B values to compare for real
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    L.copy_lora_from_peft(ours, theirs)
    assert trainable == sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    ids = torch.randint(0, 1000, (2, 12))
    a, b = ours(input_ids=ids).logits, theirs(input_ids=ids).logits
    assert (a - b).abs().max().item() <= 1e-5
    assert (a - tiny(input_ids=ids).logits).abs().max().item() > 1e-3  # the adapters do change the output
    merged = L.merge_lora(ours)
    assert not any(isinstance(m, SOL.LoRALinear) for m in merged.modules())
    assert (merged(input_ids=ids).logits - a).abs().max().item() <= 1e-5


@pytest.mark.parametrize("shape", [(64, 128), (576, 192), (7, 64)])
def test_nf4_codes_and_dequantization_equal_bitsandbytes(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape) * 0.05
    codes, absmax = SOL.nf4_quantize(w)
    packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    assert torch.equal(L.pack_nibbles(codes), packed.view(-1))
    assert torch.equal(L.unpack_nibbles(packed, w.numel()), codes)
    assert torch.equal(absmax, state.absmax)
    ours = SOL.nf4_dequantize(codes, absmax, w.shape)
    assert torch.equal(ours, bnbf.dequantize_4bit(packed, state))
    assert (ours - w).abs().max() <= absmax.max() * 0.15  # half the widest gap between levels


def test_nf4_levels_are_bitsandbytes_levels():
    from bitsandbytes.functional import get_4bit_type

    assert torch.equal(L.NF4_LEVELS, get_4bit_type("nf4", device="cpu").float())


def test_bits_per_parameter():
    assert SOL.bits_per_parameter() == 4.5
    assert SOL.bits_per_parameter(double_quant=True) == pytest.approx(4.127, abs=5e-4)
    # bitsandbytes' own storage, counted from its tensors, for a weight of 64 x 256 x 8 values
    w = torch.randn(512, 256)
    for compress, expected in [(False, 4.5), (True, 4.127)]:
        packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=compress)
        bits = packed.numel() * 8 + state.absmax.numel() * state.absmax.element_size() * 8
        if compress:
            bits += state.state2.absmax.numel() * 32
        assert bits / w.numel() == pytest.approx(expected, abs=5e-4)


def test_double_quantization_roundtrip():
    torch.manual_seed(0)
    _, absmax = SOL.nf4_quantize(torch.randn(64 * 1024) * 0.02)
    codes, scales, mean = L.double_quantize(absmax)
    assert codes.dtype == torch.int8
    assert scales.numel() == 4
    back = L.double_dequantize(codes, scales, mean)
    assert (back - absmax).abs().max() <= scales.max() / 127
