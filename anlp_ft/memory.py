"""Memory accounting for fine-tuning: what a training step keeps in memory, predicted from a model's shape.

Per parameter, a mixed-precision Adam step keeps 16 bytes (Rajbhandari et al., ZeRO, 2020): 16-bit weights (2)
and gradients (2), fp32 master weights (4) and Adam's first and second moments (4 + 4). In fp32 it is also 16
bytes: weights, gradients and the two moments at 4 bytes each. On top come the activations saved for the backward
pass, which grow with batch x sequence length. LoRA trains few parameters, so only they pay for gradients and Adam;
QLoRA also stores the frozen weights in 4 bits. How ZeRO splits these parts over N data-parallel GPUs is lab 05's
exercise; `calculate` takes such a split as a function.

`activation_bytes` is exact for a Llama-style transformers model in fp32 on CPU, with and without LoRA (the
attention kernel keeps queries, keys, values, output and the log-sum-exp, not the s x s scores). A step peaks at
the start of backward, when the loss's gradients over the vocabulary join the activations
(`logit_gradient_bytes`). `anlp_ft.memory_measure` measures the same quantities on a real model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal, Mapping

from .lora import LORA_TARGETS

# Bits per NF4-quantised weight at QLoRA's block sizes (64 weights per absmax, 256 absmax per second-level scale),
# as the QLoRA paper gives them: 4.5 plain, 4.127 with double quantisation.
NF4_BITS = {False: 4.5, True: 4 + 8 / 64 + 32 / (64 * 256)}

GB = 1e9  # memory in decimal gigabytes, as GPU data sheets and the lecture's tables count it

Method = Literal["full", "lora", "qlora"]
Precision = Literal["fp32", "mixed"]
PARTS = ("parameters", "gradients", "master weights", "optimizer states", "activations", "logit gradients")
PER_BATCH = ("activations", "logit gradients")  # grow with batch x sequence length; the rest is per parameter


# ---------------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-style decoder (SmolLM2, Llama) that decide its memory."""
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool = True  # input embedding shared with the LM head
    n_params_override: float | None = None  # a round count as quoted (the lecture's "65B")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each projection in one layer."""
        h, kv, i = self.hidden, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        """Parameters in all layers' projections: what QLoRA stores in 4 bits."""
        return self.layers * sum(a * b for a, b in self.linear_shapes().values())

    @property
    def n_params(self) -> int:
        if self.n_params_override is not None:
            return int(self.n_params_override)
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        norms = self.layers * 2 * self.hidden + self.hidden
        return embeddings + self.linear_params + norms

    @classmethod
    def from_config(cls, config, name: str | None = None) -> "ModelShape":
        """The shape of a transformers Llama-style config (LlamaConfig, SmolLM2's config)."""
        name = name or Path(str(getattr(config, "name_or_path", "") or "model")).name
        return cls(name, config.hidden_size,
                   config.num_hidden_layers, config.num_attention_heads,
                   getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                   config.intermediate_size, config.vocab_size, bool(getattr(config, "tie_word_embeddings", False)))


MODELS: dict[str, ModelShape] = {
    "135M": ModelShape("SmolLM2-135M", 576, 30, 9, 3, 1536, 49152, tied=True),
    "1.7B": ModelShape("SmolLM2-1.7B", 2048, 24, 32, 32, 8192, 49152, tied=True),
    "7B": ModelShape("Llama-2-7B", 4096, 32, 32, 32, 11008, 32000, tied=False),
    "65B": ModelShape("LLaMA-65B", 8192, 80, 64, 64, 22016, 32000, tied=False),
}


# ------------------------------------------------------------------------------------------------------- GPUs
@dataclass(frozen=True)
class GPU:
    name: str
    memory_gb: float
    note: str = ""


# The lecture's GPU table (memory per device).
GPUS: dict[str, GPU] = {g.name: g for g in [
    GPU("T4", 16, "Colab's free GPU; a K80 has 24 GB as two 12 GB halves"),
    GPU("K80", 12, "per GPU (a K80 board holds two)"),
    GPU("V100", 32, "also sold with 16 GB"),
    GPU("A100", 80, "also sold with 40 GB"),
    GPU("H100", 80),
    GPU("RTX 6000 Ada / L40", 48),
    GPU("Mac M*", 128, "unified memory shared with the CPU; up to 192 GB on an M2 Ultra"),
]}
USABLE_FRACTION = 0.9  # CUDA context, allocator fragmentation and workspaces take the rest


# ------------------------------------------------------------------------------------------------ activations
def activation_bytes(shape: ModelShape, batch: int, seq: int, *, bytes_per_value: int = 4,
                     checkpointing: bool = False, lora_rank: int = 0,
                     lora_targets: tuple[str, ...] = LORA_TARGETS) -> int:
    """Bytes of tensors saved for backward by one forward pass with labels (SmolLM2 / Llama in transformers).

    Exact in fp32 on CPU (sdpa attention) without LoRA; an estimate in 16-bit (norms and the loss run partly in
    fp32 there). Per token and layer, in values: each RMSNorm keeps its input, 1/rms, the normalised input and
    its scaled output (3h + 1, twice); attention keeps q, k, v after RoPE, its output and the log-sum-exp
    (2h + 2 kv_dim + heads); the SwiGLU MLP keeps gate, silu(gate), up and their product (4 i). Once: RoPE's
    cos and sin (2 s d, shared by the batch), the final norm (3h + 1) and the log-softmax of the logits (V).
    With gradient checkpointing only each layer's input (h per token) is kept; a layer's activations are
    rebuilt one layer at a time during backward.

    With LoRA (lora_rank > 0; base weights, norms, embeddings and head frozen, as peft leaves them) each
    adapter keeps x A (r values), and what only weight gradients needed is not kept: each norm's normalised
    input (2h per layer), the first norm's input and 1/rms (the embeddings need no gradient: h + 1) and the
    final norm's normalised input and output (the head needs no gradient: 2h). With checkpointing, peft's
    `enable_input_require_grads` makes the embeddings' output require a gradient, so only the final 2h go.
    """
    h, i, a, d = shape.hidden, shape.intermediate, shape.heads, shape.head_dim
    kv = shape.kv_heads * d
    tokens = batch * seq
    if checkpointing:
        per_layer = h
        once = 0
    else:
        per_layer = 2 * (3 * h + 1) + (2 * h + 2 * kv + a) + 4 * i
        once = 2 * seq * d  # cos, sin
    head = (3 * h + 1) + shape.vocab
    if lora_rank:
        head -= 2 * h if checkpointing else 3 * h + 1
        if not checkpointing:
            per_layer += lora_rank * len(lora_targets) - 2 * h
    values = tokens * (shape.layers * per_layer + head) + once + 1  # + the loss scalar
    return values * bytes_per_value


def logit_gradient_bytes(shape: ModelShape, batch: int, seq: int) -> int:
    """The transient peak of the loss: while backward starts, the gradients with respect to the log-softmax
    and to the logits (b s V values each) are alive beside the saved activations, and so is the loss's own
    gradient (one value). transformers computes the loss in fp32 in every precision: 4 bytes per value."""
    return (2 * batch * seq * shape.vocab + 1) * 4


def korthikanti_activation_bytes(shape: ModelShape, batch: int, seq: int) -> float:
    """The published estimate (Korthikanti et al., 2022, Reducing Activation Recomputation) for a GPT-style
    transformer in 16-bit without flash attention: s b h (34 + 5 a s / h) bytes per layer."""
    s, b, h, a = seq, batch, shape.hidden, shape.heads
    return shape.layers * s * b * h * (34 + 5 * a * s / h)


# ------------------------------------------------------------------------------------------------- breakdown
@dataclass(frozen=True)
class TrainSetup:
    """How a model is trained: the choices that decide memory."""
    method: Method = "full"
    precision: Precision = "mixed"  # "mixed": 16-bit weights and gradients, fp32 master weights and Adam
    batch: int = 1
    seq: int = 512
    gradient_checkpointing: bool = False
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS
    double_quant: bool = True

    def __post_init__(self):
        if self.method not in ("full", "lora", "qlora"):
            raise ValueError(f"method must be 'full', 'lora' or 'qlora', got {self.method!r}")
        if self.precision not in ("fp32", "mixed"):
            raise ValueError(f"precision must be 'fp32' or 'mixed', got {self.precision!r}")
        if self.batch < 1 or self.seq < 1:
            raise ValueError(f"batch and seq must be at least 1, got batch={self.batch}, seq={self.seq}")


def lora_param_count(shape: ModelShape, rank: int, targets: tuple[str, ...] = LORA_TARGETS) -> int:
    """Trainable parameters of LoRA: r (in + out) for each targeted projection of every layer."""
    linears = shape.linear_shapes()
    unknown = set(targets) - set(linears)
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)}; choose from {list(linears)}")
    return shape.layers * sum(rank * (linears[t][0] + linears[t][1]) for t in targets)


def memory_breakdown(shape: ModelShape, setup: TrainSetup) -> dict[str, float]:
    """Bytes for each part of a training step on one GPU at its peak, the start of backward (keys: PARTS)."""
    P = shape.n_params
    w = 4 if setup.precision == "fp32" else 2  # bytes of a weight / gradient / activation value
    if setup.method == "full":
        trainable = P
        params = P * w
        grads = P * w
        master = P * 4 if setup.precision == "mixed" else 0
        moments = P * 4
    else:
        trainable = lora_param_count(shape, setup.lora_rank, setup.lora_targets)
        frozen = P * w
        if setup.method == "qlora":
            quantized = shape.linear_params
            frozen = quantized * NF4_BITS[setup.double_quant] / 8 + (P - quantized) * w
        # Adapters are small: kept, trained and updated in fp32 (as peft does), so no master copy is needed.
        params = frozen + trainable * 4
        grads = trainable * 4
        master = 0
        moments = trainable * 4
    acts = activation_bytes(shape, setup.batch, setup.seq, bytes_per_value=w,
                            checkpointing=setup.gradient_checkpointing,
                            lora_rank=setup.lora_rank if setup.method != "full" else 0,
                            lora_targets=setup.lora_targets)
    return {"parameters": float(params), "gradients": float(grads), "master weights": float(master),
            "optimizer states": float(2 * moments), "activations": float(acts),  # Adam's m and v
            "logit gradients": float(logit_gradient_bytes(shape, setup.batch, setup.seq))}


def total_bytes(parts: Mapping[str, float]) -> float:
    return float(sum(parts.values()))


def fits(parts: Mapping[str, float] | float, gpu: GPU | str, usable: float = USABLE_FRACTION) -> bool:
    """Whether a step fits on one GPU, leaving 1 - usable of its memory for the CUDA context and fragmentation."""
    gpu = GPUS[gpu] if isinstance(gpu, str) else gpu
    need = parts if isinstance(parts, (int, float)) else total_bytes(parts)
    return need <= gpu.memory_gb * GB * usable


def fit_table(models: tuple[str, ...] = ("135M", "1.7B", "7B", "65B"),
              methods: tuple[Method, ...] = ("full", "lora", "qlora"), *, batch: int = 1, seq: int = 512,
              gradient_checkpointing: bool = True) -> list[dict]:
    """One row per (model, method): total GB and which of the lecture's GPUs it fits on."""
    rows = []
    for m in models:
        for method in methods:
            parts = memory_breakdown(MODELS[m], TrainSetup(method=method, batch=batch, seq=seq,
                                                           gradient_checkpointing=gradient_checkpointing))
            rows.append({"model": m, "method": method, "total_gb": total_bytes(parts) / GB,
                         **{g: fits(parts, g) for g in GPUS}})
    return rows


# ------------------------------------------------------------------------------------- the lecture's 65B table
LECTURE_65B_PARAMS = 65e9


def lecture_65b_table(batch_range: tuple[int, int] = (1, 8), seq: int = 2048) -> dict[str, tuple[float, float]]:
    """The lecture's full fine-tuning table for a 65B model, in GB, as (low, high): each of parameters,
    gradients and Adam's two moments takes 4 bytes per parameter (260 GB each; mixed precision's 2 + 2 + 4 + 4 +
    4 bytes add up to the same 1040 GB); activations with a memory-efficient attention kernel (34 s b h bytes per
    layer in 16-bit) for 1 to 8 sequences of 2048 tokens."""
    shape = replace(MODELS["65B"], n_params_override=LECTURE_65B_PARAMS)
    per_param = LECTURE_65B_PARAMS * 4 / GB
    lo, hi = (34 * seq * b * shape.hidden * shape.layers / GB for b in batch_range)
    table = {"parameters": (per_param, per_param), "gradients": (per_param, per_param),
             "Adam first moment": (per_param, per_param), "Adam second moment": (per_param, per_param),
             "activations": (lo, hi)}
    table["total"] = (sum(v[0] for v in table.values()), sum(v[1] for v in table.values()))
    return table


def format_table(table: Mapping[str, tuple[float, float]]) -> str:
    width = max(len(k) for k in table)
    lines = []
    for k, (lo, hi) in table.items():
        value = f"{lo:,.0f} GB" if round(lo) == round(hi) else f"{lo:,.0f}-{hi:,.0f} GB"
        lines.append(f"{k:<{width}}  {value:>14}")
    return "\n".join(lines)


def accelerate_estimate(n_params: int, bytes_per_param: int = 4) -> dict[str, float]:
    """What `accelerate estimate-memory` reports for training with Adam: weights, gradients and two optimizer
    states, all at the load dtype (4x the weights). No activations, no fp32 master copy."""
    weights = float(n_params * bytes_per_param)
    return {"weights": weights, "gradients": weights, "optimizer": 2 * weights, "total": 4 * weights}


# ------------------------------------------------------------------------------------------------ calculator
@dataclass(frozen=True)
class CalculatorResult:
    parts_gb: dict[str, float]
    total_gb: float
    capacity_gb: float
    fits: bool
    summary: str


def calculate(model: str = "135M", batch: int = 8, seq: int = 512, precision: Precision = "mixed",
              method: Method = "full", gradient_checkpointing: bool = False, gpu: str = "T4", lora_rank: int = 16,
              per_gpu: Callable[[dict[str, float]], dict[str, float]] | None = None,
              per_gpu_label: str = "") -> CalculatorResult:
    """The calculator's logic, without a browser: the breakdown in GB and whether it fits on `gpu`.

    `per_gpu`, if given, turns the one-GPU breakdown into what each of several GPUs holds (lab 05's ZeRO split,
    say); `per_gpu_label` names it in the summary."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {list(MODELS)}")
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; choose from {list(GPUS)}")
    setup = TrainSetup(method=method, precision=precision, batch=batch, seq=seq,
                       gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank)
    parts = memory_breakdown(MODELS[model], setup)
    if per_gpu is not None:
        parts = per_gpu(dict(parts))
    parts_gb = {k: v / GB for k, v in parts.items()}
    total = sum(parts_gb.values())
    ok = fits(parts, gpu)
    capacity = GPUS[gpu].memory_gb
    verdict = "fits" if ok else "does NOT fit"
    split = f", {per_gpu_label}" if per_gpu_label else ""
    summary = (f"{MODELS[model].name} {method} ({precision}{', checkpointing' if gradient_checkpointing else ''}"
               f"{split}): {total:,.1f} GB per GPU, {verdict} on a {gpu} ({capacity:g} GB)")
    return CalculatorResult(parts_gb, total, capacity, ok, summary)
