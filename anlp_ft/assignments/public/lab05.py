"""Public checks for Lab 05 (memory accounting): each raises CheckFailed with what to fix."""
from __future__ import annotations

import gc
import math
import numbers
import weakref

import torch

from ... import memory
from .. import CheckFailed

__all__ = ["ex1", "ex2", "ex3", "ex4"]

KEYS = ("parameters", "gradients", "master weights", "optimizer states")
# Bytes per parameter, in KEYS' order: stored values, not a computation. Adam's are the lecture's table.
BYTES_PER_PARAMETER = {
    ("fp32", "sgd"): (4, 4, 0, 0), ("fp32", "momentum"): (4, 4, 0, 4), ("fp32", "adam"): (4, 4, 0, 8),
    ("mixed", "sgd"): (2, 2, 4, 0), ("mixed", "momentum"): (2, 2, 4, 4), ("mixed", "adam"): (2, 2, 4, 8)}


def ex1(state_bytes) -> str:
    for (precision, optimizer), per_parameter in BYTES_PER_PARAMETER.items():
        got = state_bytes(65e9, precision, optimizer)
        missing = [k for k in KEYS if k not in got]
        if missing:
            raise CheckFailed(f"state_bytes(..., {precision!r}, {optimizer!r}) is missing the keys {missing}")
        for k, per in zip(KEYS, per_parameter):
            if not math.isclose(float(got[k]), per * 65e9, rel_tol=1e-9, abs_tol=1e-6):
                hint = (" (which quantities does the update carry from one step to the next?)"
                        if k == "optimizer states" else "")
                raise CheckFailed(f"{precision}, {optimizer}: {k} should be {per:g} bytes per parameter "
                                  f"({per * 65:,.0f} GB for 65B), got {float(got[k]) / 1e9:,.1f} GB{hint}")
    return "bytes per parameter for SGD, momentum and Adam in both precisions"


def ex2(saved_activation_bytes) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config).train()
    ids = torch.randint(0, 300, (2, 9))
    batch = {"input_ids": ids, "labels": ids}
    alive = []  # the final hidden states, which the head saves for backward: are they freed afterwards?
    hook = model.model.norm.register_forward_hook(lambda module, args, out: alive.append(weakref.ref(out)))
    try:
        got = saved_activation_bytes(model, batch)
    finally:
        hook.remove()
    gc.collect()
    if any(ref() is not None for ref in alive):
        raise CheckFailed("the forward pass's graph outlives your function: return t.detach() from pack, not t. "
                          "A saved output holds its own grad_fn, a reference cycle through C++ that Python's "
                          "garbage collector cannot free, so every call leaks all of its activations")
    # The Llama formula, which the measurement equals on this architecture (the hidden tests also use others).
    expected = memory.activation_bytes(memory.ModelShape.from_config(config), *ids.shape)
    if got != expected:
        hints = []
        with_params = expected + sum(p.numel() * p.element_size() for p in model.parameters())
        if got > expected:
            hints.append("skip storages that belong to the model's parameters (weights saved for backward)")
            hints.append("count each storage once (views share one: key by t.untyped_storage().data_ptr())")
            hints.append("count floating-point tensors only (not the int64 token ids / labels)")
        else:
            hints.append("use t.untyped_storage().nbytes(), the whole storage a view keeps alive")
        raise CheckFailed(f"measured {got} bytes, expected {expected}: " + "; ".join(hints)
                          + f" (all parameters together are {with_params - expected} bytes)")
    return f"{got} bytes on a tiny model, as expected"


# ZeRO on 8 GPUs, stages 0-3, for one step's parts (GB): what each GPU keeps. Stored values, not a computation, so
# that this module holds no answer.
ZERO_PARTS = {"parameters": 14.0, "gradients": 14.0, "master weights": 28.0, "optimizer states": 56.0,
              "activations": 3.0, "logit gradients": 1.0}
ZERO_ON_8 = {0: ZERO_PARTS,
             1: {**ZERO_PARTS, "master weights": 3.5, "optimizer states": 7.0},
             2: {**ZERO_PARTS, "gradients": 1.75, "master weights": 3.5, "optimizer states": 7.0},
             3: {**ZERO_PARTS, "parameters": 1.75, "gradients": 1.75, "master weights": 3.5, "optimizer states": 7.0}}


def ex3(zero_per_gpu) -> str:
    for stage, expected in ZERO_ON_8.items():
        for n, want in ((8, expected), (1, ZERO_PARTS)):  # one GPU: nothing to split
            got = zero_per_gpu({k: v * 1e9 for k, v in ZERO_PARTS.items()}, stage, n)
            for k, v in want.items():
                value = float(got.get(k, float("nan"))) / 1e9
                if not math.isclose(value, v, rel_tol=1e-9):
                    raise CheckFailed(f"stage {stage} on {n} GPUs: {k} should be {v:.2f} GB per GPU, got {value:.2f}. "
                                      "Stage 1 splits the optimizer states and the master weights, 2 also "
                                      "gradients, 3 also parameters; activations are never split")
    return "per-GPU bytes match ZeRO stages 0-3"


def _fits(model: str, method: str, seq: int, gpu: str, batch: int) -> bool:
    return memory.calculate(model=model, method=method, batch=batch, seq=seq, gradient_checkpointing=True,
                            gpu=gpu).fits


def ex4(largest_batch) -> str:
    """A property, not a stored answer: the batch returned fits, one more sequence does not."""
    for case in (("1.7B", "lora", 512, "T4"), ("7B", "qlora", 1024, "T4"), ("65B", "full", 512, "H100"),
                 ("135M", "full", 2048, "A100")):
        got = largest_batch(*case)
        if isinstance(got, bool) or not isinstance(got, numbers.Integral) or got < 0:
            raise CheckFailed(f"largest_batch{case} returned {got!r}: expected a batch size, an int >= 0")
        if got and not _fits(*case, got):
            raise CheckFailed(f"largest_batch{case} = {got}, but a batch of {got} does not fit (mixed precision, "
                              "gradient checkpointing on, as memory.calculate decides)")
        if _fits(*case, got + 1):
            raise CheckFailed(f"largest_batch{case} = {got}, but a batch of {got + 1} fits too")
    return "each batch fits and one more sequence does not"
