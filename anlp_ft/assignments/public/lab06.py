"""Public checks for Lab 06 (LoRA and QLoRA): each raises CheckFailed with what to fix.

They check properties (the layer's formula, merging keeps the outputs, one code per weight at the nearest level)
and compare with bitsandbytes where it is installed; the reference answers live with the solutions."""
from __future__ import annotations

import torch
from torch import nn

from ...lora import NF4_LEVELS, unpack_nibbles
from .. import CheckFailed

__all__ = ["ex1", "ex2", "ex3", "ex4"]


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def ex1(LoRALinear) -> str:
    torch.manual_seed(0)
    base = nn.Linear(24, 12)
    layer = LoRALinear(base, r=4, alpha=8)
    for name, shape in (("lora_A", (4, 24)), ("lora_B", (12, 4))):
        p = getattr(layer, name, None)
        if not isinstance(p, nn.Parameter):
            raise CheckFailed(f"{name} must be an nn.Parameter (so the optimizer sees it); got {type(p).__name__}")
        if tuple(p.shape) != shape:
            raise CheckFailed(f"{name} should have shape {shape} for in=24, out=12, r=4; got {tuple(p.shape)}")
    if layer.lora_B.abs().sum() != 0:
        raise CheckFailed("lora_B must start at zero, so that the adapted model starts equal to the pre-trained one")
    if layer.lora_A.abs().sum() == 0:
        raise CheckFailed("lora_A must start random (e.g. nn.init.kaiming_uniform_(A, a=5 ** 0.5)); with A and B "
                          "both zero, no gradient reaches either")
    trainable = sorted(n for n, p in layer.named_parameters() if p.requires_grad)
    if trainable != ["lora_A", "lora_B"]:
        raise CheckFailed(f"only lora_A and lora_B should be trainable, but these are: {trainable}; "
                          "freeze the base layer with requires_grad_(False)")
    x = torch.randn(3, 5, 24)
    with torch.no_grad():
        if not torch.allclose(layer(x), base(x), atol=1e-6):
            raise CheckFailed("at initialisation (B = 0) the output must equal base(x)")
        layer.lora_B.normal_()
        want = base(x) + (8 / 4) * (x @ layer.lora_A.T @ layer.lora_B.T)  # the formula in the exercise
        diff = (layer(x) - want).abs().max().item()
        if diff > 1e-5:
            raise CheckFailed("with B != 0 the output differs from base(x) + (alpha / r) x A^T B^T "
                              f"by up to {diff:.3g}; "
                              "check the scaling alpha / r and the order of the products")
        merged = layer.merged()
        if not isinstance(merged, nn.Linear):
            raise CheckFailed(f"merged() should return an nn.Linear, got {type(merged).__name__}")
        diff = (merged(x) - want).abs().max().item()
        if diff > 1e-5:
            raise CheckFailed(f"the merged layer's output differs by up to {diff:.3g}: W' = W + (alpha / r) B A")
    return "matches base(x) + (alpha / r) x A^T B^T within 1e-5, and merging keeps the outputs"


def ex2(inject_lora) -> str:
    from ...memory import ModelShape, lora_param_count

    model = _tiny_llama()
    ids = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    out = inject_lora(model, r=4, alpha=8)
    if out is None:
        raise CheckFailed("inject_lora should return the model (modified in place)")
    adapted = [n for n, m in out.named_modules() if isinstance(getattr(m, "lora_A", None), nn.Parameter)]
    if len(adapted) != 7 * 2:
        raise CheckFailed(f"expected 14 LoRA layers (7 projections x 2 layers), found {len(adapted)}: {adapted[:8]}")
    trainable = sum(p.numel() for p in out.parameters() if p.requires_grad)
    expected = lora_param_count(ModelShape.from_config(model.config), 4)
    if trainable != expected:
        raise CheckFailed(f"{trainable} trainable parameters, expected {expected} (r (in + out) per projection): "
                          "freeze everything else, embeddings and norms included")
    with torch.no_grad():
        if (out(input_ids=ids).logits - before).abs().max() > 1e-5:
            raise CheckFailed("right after injection the model must give the same logits as before (B = 0)")
    return f"{len(adapted)} projections adapted, {trainable} trainable parameters"


def ex3(nf4_quantize, nf4_dequantize) -> str:
    torch.manual_seed(0)
    w = torch.randn(96, 64) * 0.05
    codes, absmax = nf4_quantize(w)
    if codes.numel() != w.numel():
        raise CheckFailed(f"one code per value expected ({w.numel()}), got {codes.numel()}")
    if absmax.numel() != w.numel() // 64:
        raise CheckFailed(f"one absmax per block of 64 expected ({w.numel() // 64}), got {absmax.numel()}")
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:  # Colab has no bitsandbytes: the properties that define NF4 instead
        bnbf = None
    if bnbf is not None:
        packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
        ref_absmax, ref_codes = state.absmax, unpack_nibbles(packed, w.numel())
        ref_deq, source = bnbf.dequantize_4bit(packed, state), "bitsandbytes"
    else:
        ref_absmax, ref_codes, source = w.reshape(-1, 64).abs().amax(dim=1), None, "NF4's definition"
    if not torch.allclose(absmax.float(), ref_absmax.float()):
        raise CheckFailed("absmax differs: take max |w| over each block of 64 consecutive values of w.reshape(-1)")
    if ref_codes is None:  # nearest level: no other level is closer to w / absmax than the chosen one
        scaled = (w.reshape(-1, 64) / ref_absmax.unsqueeze(1)).reshape(-1)
        chosen = (scaled - NF4_LEVELS[codes.reshape(-1).long().clamp(0, 15)]).abs()
        wrong = (chosen > (scaled.unsqueeze(1) - NF4_LEVELS).abs().amin(dim=1) + 1e-6).float().mean().item()
    else:
        wrong = (codes.reshape(-1).long() != ref_codes.long()).float().mean().item()
    if wrong > 0:
        raise CheckFailed(f"{wrong:.1%} of the codes are not {source}'s: round w / absmax to the NEAREST level "
                          "(index into the sorted 16 levels, 0 = -1.0, 7 = 0.0, 15 = 1.0)")
    if ref_codes is None:
        ref_deq = (NF4_LEVELS[codes.reshape(-1).long()].view(-1, 64) * ref_absmax.unsqueeze(1)).reshape(w.shape)
    deq = nf4_dequantize(codes, absmax, w.shape)
    if tuple(deq.shape) != tuple(w.shape):
        raise CheckFailed(f"nf4_dequantize should return the original shape {tuple(w.shape)}, got {tuple(deq.shape)}")
    diff = (deq.float() - ref_deq.float()).abs().max().item()
    if diff > 1e-6:
        raise CheckFailed(f"dequantised values differ from {source}'s by up to {diff:.3g}: level[code] * absmax")
    return f"codes and dequantised values equal those of {source}"


def ex4(bits_per_parameter) -> str:
    plain, double = bits_per_parameter(64, False), bits_per_parameter(64, True)
    if abs(plain - 4.5) > 1e-9:
        raise CheckFailed(f"without double quantisation: 4 bits + one fp32 absmax per 64 values = 4.5, got {plain}")
    if abs(double - 4.126953125) > 1e-9:
        raise CheckFailed(f"with double quantisation: 4 + 8/64 + 32/(64*256) = 4.127, got {double}")
    return f"{plain} and {double:.4f} bits per parameter"
