"""Public checks for Lab 05 (memory accounting): each raises CheckFailed with what to fix."""
from __future__ import annotations

import gc
import math
import weakref

import torch

from ... import memory
from .. import CheckFailed

__all__ = ["ex1", "ex2", "ex3", "ex4"]

KEYS = ("parameters", "gradients", "master weights", "Adam first moment", "Adam second moment")


def ex1(state_bytes) -> str:
    for precision in ("fp32", "mixed"):
        got = state_bytes(65e9, precision)
        missing = [k for k in KEYS if k not in got]
        if missing:
            raise CheckFailed(f"state_bytes(..., {precision!r}) is missing the keys {missing}")
        expected = memory.memory_breakdown(memory.ModelShape("65B", 8192, 80, 64, 64, 22016, 32000, tied=False,
                                                             n_params_override=65e9),
                                           memory.TrainSetup(precision=precision))
        for k in KEYS:
            if not math.isclose(float(got[k]), expected[k], rel_tol=1e-9, abs_tol=1e-6):
                per = expected[k] / 65e9
                raise CheckFailed(f"{precision}: {k} should be {per:g} bytes per parameter "
                                  f"({expected[k] / 1e9:,.0f} GB for 65B), got {float(got[k]) / 1e9:,.1f} GB")
    return "16 bytes per parameter in both precisions, split as the lecture's table"


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


def ex3(zero_per_gpu) -> str:
    parts = {**memory.memory_breakdown(memory.MODELS["7B"], memory.TrainSetup(seq=256))}
    for stage in range(4):
        for n in (1, 8):
            got = zero_per_gpu(dict(parts), stage, n)
            expected = memory.zero_partition(parts, stage, n)
            for k, v in expected.items():
                if not math.isclose(float(got.get(k, float("nan"))), v, rel_tol=1e-9):
                    raise CheckFailed(f"stage {stage} on {n} GPUs: {k} should be {v / 1e9:.2f} GB per GPU, got "
                                      f"{float(got.get(k, float('nan'))) / 1e9:.2f}. Stage 1 splits the optimizer "
                                      "states (Adam moments and master weights), 2 also gradients, 3 also parameters; "
                                      "activations are never split")
    return "per-GPU bytes match ZeRO stages 0-3"


def ex4(gpus_that_fit) -> str:
    for total in (1e9, 15e9, 40e9, 100e9, 1e12):
        got = list(gpus_that_fit(total))
        expected = [name for name in memory.GPUS if memory.fits(total, name)]
        if sorted(got) != sorted(expected):
            raise CheckFailed(f"for {total / 1e9:g} GB expected {expected}, got {got}: a GPU with M GB fits a step "
                              f"of at most 0.9 * M * 1e9 bytes")
    return "fit decisions match the calculator's"
