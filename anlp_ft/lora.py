"""Teaching versions of LoRA and NF4, small enough to read, checked against peft and bitsandbytes in the tests.

LoRA (Hu et al., 2021): freeze W and learn a low-rank update, h = W x + (alpha / r) B A x, with A (r x in)
random and B (out x r) zero, so training starts from the pre-trained model exactly. After training,
W' = W + (alpha / r) B A is merged back and inference costs nothing extra.

NF4 (Dettmers et al., 2023, QLoRA): split a weight into blocks of 64, divide each block by its absolute maximum
and round every value to the nearest of 16 levels placed at quantiles of a normal distribution. Storage: 4 bits
per weight plus one fp32 absmax per block (0.5 bits); double quantisation stores the absmax values in 8 bits
with one fp32 scale per 256 of them (0.127 bits).
"""
from __future__ import annotations

import math

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
class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: y = base(x) + (alpha / r) * (dropout(x) A^T) B^T."""

    def __init__(self, base: nn.Linear, r: int = 16, alpha: float = 32, dropout: float = 0.0):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r must be at least 1, got {r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        device = base.weight.device
        # A: peft's init (kaiming uniform, a = sqrt(5)); B = 0 so the adapted model starts equal to the base.
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.T @ self.lora_B.T
        return self.base(x) + (update * self.scaling).to(x.dtype)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear with W' = W + (alpha / r) B A."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        out.weight.copy_(self.base.weight + (self.scaling * self.lora_B @ self.lora_A).to(self.base.weight.dtype))
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out


def inject_lora(model: nn.Module, r: int = 16, alpha: float = 32, targets: tuple[str, ...] = LORA_TARGETS,
                dropout: float = 0.0) -> nn.Module:
    """Freeze every parameter of `model`, then wrap each nn.Linear whose name ends in one of `targets`
    (SmolLM2's attention and MLP projections) in a LoRALinear. In place; returns the model."""
    for p in model.parameters():
        p.requires_grad_(False)
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets]
    if not found:
        raise ValueError(f"no nn.Linear named like {targets} in the model: check the target names")
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, LoRALinear(module, r, alpha, dropout))
    return model


def _is_lora_layer(module: nn.Module) -> bool:
    # Duck-typed, so a lab's own LoRA layer (lora_A / lora_B parameters, merged()) works here too.
    return all(isinstance(getattr(module, name, None), nn.Parameter) for name in ("lora_A", "lora_B"))


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRA layer (LoRALinear or one shaped like it) by its merged nn.Linear, in place."""
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
    """Copy peft's lora_A / lora_B weights (adapter `adapter`) into our LoRALinear layers, matched by the
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
def nf4_quantize(weight: torch.Tensor, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-wise NF4: (codes, absmax). codes holds one level index 0..15 per weight (uint8, flattened), absmax
    one fp32 scale per block. Each value is divided by its block's absmax and rounded to the nearest level
    (ties to the lower one, as bitsandbytes does)."""
    flat = weight.reshape(-1).float()
    if flat.numel() % block:
        raise ValueError(f"{flat.numel()} values do not split into blocks of {block}")
    blocks = flat.view(-1, block)
    absmax = blocks.abs().amax(dim=1)
    # Multiply by the reciprocal, as bitsandbytes does, so values on a boundary round the same way.
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp(-1, 1).reshape(-1)
    levels = NF4_LEVELS.to(flat.device)
    midpoints = (levels[:-1] + levels[1:]) / 2  # nearest level = how many midpoints lie below the value
    codes = torch.bucketize(scaled, midpoints).to(torch.uint8)
    return codes, absmax


def nf4_dequantize(codes: torch.Tensor, absmax: torch.Tensor, shape: torch.Size | tuple[int, ...],
                   block: int = 64) -> torch.Tensor:
    """Back to fp32: level[code] * absmax of its block."""
    values = NF4_LEVELS.to(codes.device)[codes.long()].view(-1, block) * absmax.unsqueeze(1)
    return values.reshape(shape)


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


def nf4_bits_per_parameter(block: int = 64, double_quant: bool = False, dq_block: int = 256) -> float:
    """4 bits per weight + 32 / block for the fp32 absmax (4.5 at block 64); with double quantisation the absmax
    is 8 bits (8 / 64) plus one fp32 scale per dq_block blocks (32 / (64 * 256)): 4.127."""
    if double_quant:
        return 4 + 8 / block + 32 / (block * dq_block)
    return 4 + 32 / block
