"""LoRA and NF4 plumbing around the labs' own layers: counting, merging, copying peft's adapters, the NF4 table.

The LoRA layer, its injection, NF4 quantisation and its storage cost are lab 06's exercises: their reference
answers live with the solutions (and the lecture uses peft and bitsandbytes), never in this package.

LoRA (Hu et al., 2021): freeze W and learn a low-rank update, h = W x + (alpha / r) B A x, with A (r x in)
random and B (out x r) zero, so training starts from the pre-trained model exactly. After training,
W' = W + (alpha / r) B A is merged back and inference costs nothing extra.

NF4 (Dettmers et al., 2023, QLoRA): split a weight into blocks of 64, divide each block by its absolute maximum
and round every value to the nearest of 16 levels placed at quantiles of a normal distribution.
"""
from __future__ import annotations

import torch
from torch import nn

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# The 16 NF4 levels (QLoRA, appendix E; bitsandbytes' table).
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])


# ------------------------------------------------------------------------------------------------------ LoRA
def _is_lora_layer(module: nn.Module) -> bool:
    # Duck-typed: the lab's own LoRA layer (lora_A / lora_B parameters, merged()).
    return all(isinstance(getattr(module, name, None), nn.Parameter) for name in ("lora_A", "lora_B"))


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRA layer (lora_A / lora_B parameters and a merged() method) by its merged nn.Linear,
    in place."""
    found = [(name, m) for name, m in model.named_modules() if _is_lora_layer(m)]
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.merged())
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; shared (tied) tensors are counted once."""
    seen: dict[int, torch.Tensor] = {}
    for p in model.parameters():
        seen.setdefault(id(p), p)
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, sum(p.numel() for p in seen.values())


@torch.no_grad()
def copy_lora_from_peft(model: nn.Module, peft_model: nn.Module, adapter: str = "default") -> None:
    """Copy peft's lora_A / lora_B weights (adapter `adapter`) into the model's own LoRA layers, matched by the
    layer's name, so that the two implementations can be compared with the same weights."""
    ours = {name: m for name, m in model.named_modules() if _is_lora_layer(m)}
    copied = 0
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict) and adapter in module.lora_A:
            key = name.split("base_model.model.", 1)[-1]
            if key not in ours:
                raise KeyError(f"peft adapts {key} but the model has no LoRA layer there")
            ours[key].lora_A.copy_(module.lora_A[adapter].weight)
            ours[key].lora_B.copy_(module.lora_B[adapter].weight)
            copied += 1
    if copied != len(ours):
        raise ValueError(f"copied {copied} adapters but the model has {len(ours)} LoRA layers")


# ------------------------------------------------------------------------------------------------------- NF4
def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, the first in the high nibble (bitsandbytes' layout)."""
    codes = codes.reshape(-1).to(torch.uint8)
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    return (codes[0::2] << 4) | codes[1::2]


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    packed = packed.reshape(-1).to(torch.uint8)
    return torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)[:n]


def double_quantize(absmax: torch.Tensor, block: int = 256) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Quantise the fp32 absmax values themselves: subtract their mean, then 8-bit absmax quantisation in blocks
    of 256 (linear levels here; bitsandbytes uses its 8-bit dynamic map). Returns (codes int8, scales, mean)."""
    mean = absmax.mean().item()
    centred = absmax - mean
    pad = (-centred.numel()) % block
    padded = torch.cat([centred, centred.new_zeros(pad)]).view(-1, block)
    scales = padded.abs().amax(dim=1).clamp(min=1e-12)
    codes = torch.round(padded / scales.unsqueeze(1) * 127).to(torch.int8)
    return codes.reshape(-1)[: absmax.numel()], scales, mean


def double_dequantize(codes: torch.Tensor, scales: torch.Tensor, mean: float, block: int = 256) -> torch.Tensor:
    n = codes.numel()
    pad = (-n) % block
    padded = torch.cat([codes.float(), codes.new_zeros(pad).float()]).view(-1, block)
    return (padded * scales.unsqueeze(1) / 127).reshape(-1)[:n] + mean
