"""Memory of a training step, measured on a real model: the long-lived parameters, gradients and optimizer states
counted from the tensors themselves; what the forward pass leaves allocated for backward, and the step's peak, from
the allocator, on CPU as on CUDA. `anlp_ft.memory` predicts the same quantities from the model's shape; lab 05
compares the two (and counts the saved tensors from autograd's side, with saved_tensors_hooks, as an exercise).
"""
from __future__ import annotations

import os
from typing import Callable, Mapping

import torch


def tensor_bytes(tensors) -> int:
    """Bytes held by an iterable of tensors (each storage counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel():
            seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
    return sum(seen.values())


def measured_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """What a training step holds besides activations, counted exactly from the tensors themselves: parameters
    (bitsandbytes 4-bit weights count as their packed bytes plus quantisation state), gradients and
    optimizer states."""
    params = list(model.parameters())
    extra = []
    for p in params:  # bitsandbytes Params4bit keeps absmax (and the nested constants) beside the packed weights
        state = getattr(p, "quant_state", None)
        if state is not None:
            extra += [state.absmax, getattr(state, "code", None)]
            if getattr(state, "state2", None) is not None:
                extra += [state.state2.absmax, state.state2.code]
            if getattr(state, "offset", None) is not None:
                extra.append(state.offset)
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    out = {"parameters": tensor_bytes(params + extra), "buffers": tensor_bytes(buffers),
           "gradients": tensor_bytes(p.grad for p in params if p.grad is not None)}
    states = [v for s in (optimizer.state.values() if optimizer is not None else []) for v in s.values()]
    out["optimizer states"] = tensor_bytes(v for v in states if isinstance(v, torch.Tensor) and v.dim() > 0)
    return out


def peak_bytes_during(step: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """The most bytes allocated at once during `step()`, counted above what was allocated when it began.

    On CUDA: the caching allocator's `max_memory_allocated` less `memory_allocated` before the step. On CPU:
    the allocation events torch.profiler records (each carries the allocator's running total), which is the
    same quantity. Add the bytes alive before the step (`measured_state_bytes`) for the step's peak. Tensors
    that existed before the step must outlive it (e.g. `zero_grad(set_to_none=False)`): the CPU profiler does
    not see them freed.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on 'cpu' or 'cuda', not {device.type!r}")
    totals = _cpu_allocated_totals(step)
    return max(0, max(totals) - totals[0]) if totals else 0


def _cpu_allocated_totals(step: Callable[[], object]) -> list[int]:
    """The CPU allocator's running total of allocated bytes, when `step()` begins and after each allocation or
    free during it, in order, from the memory events torch.profiler records."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # else each profile prints start/stop lines into the notebook

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = []
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            events.append((event.start_time_ns, event.extra_fields.alloc_size, event.extra_fields.total_allocated))
    if not events:
        return []
    events.sort()
    return [events[0][2] - events[0][1]] + [total for _, _, total in events]


def forward_retained_bytes(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> int:
    """Bytes the allocator still holds once `model(**batch)` has returned its loss, above what it held before:
    what the graph keeps for backward. These are the activations autograd saved (what saved_tensors_hooks would
    count), plus what the graph also keeps that is not an activation: the int64 labels the loss shifted (8 b s
    bytes), a few bytes more and, with gradient checkpointing, each layer's saved RNG state and the inputs the
    layers share (RoPE's cos and sin, the positions); tests/test_memory_measure.py itemises it. The graph is freed
    before returning.

    On CUDA: `memory_allocated` after less before. On CPU: the allocator's running total from torch.profiler's
    memory events (`peak_bytes_during`'s source)."""
    device = next(model.parameters()).device
    kept: list[torch.Tensor] = []

    def forward() -> None:
        kept.append(model(**batch).loss)  # the loss keeps the graph alive; the rest of the output is dropped

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        forward()
        torch.cuda.synchronize(device)
        retained = torch.cuda.memory_allocated(device) - before
    elif device.type == "cpu":
        totals = _cpu_allocated_totals(forward)
        retained = totals[-1] - totals[0] if totals else 0
    else:
        raise ValueError(f"retained memory is measured on 'cpu' or 'cuda', not {device.type!r}")
    kept.clear()
    return retained


def measure_training_step(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, int | None]:
    """Memory of one Adam step on `batch`, measured: after a first step has created the gradients and Adam's
    states (which then live through training), one more step at lr 0 (the weights stay as they are). Returns the
    long-lived parts counted from the tensors (`measured_state_bytes`), "activations": what the forward pass
    leaves allocated for backward (`forward_retained_bytes`), and "peak": the long-lived parts plus the most
    allocated during the step (`peak_bytes_during`). Where the allocator keeps no statistics (MPS) "activations"
    and "peak" are None, and a line says so."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    was_training = model.training
    model.train()

    def step():
        model(**batch).loss.backward()
        optimizer.step()

    step()
    optimizer.zero_grad(set_to_none=False)
    state = measured_state_bytes(model, optimizer)
    if device.type in ("cpu", "cuda"):
        peak = sum(state.values()) + peak_bytes_during(step, device)
        activations = forward_retained_bytes(model, batch)
    else:
        peak = activations = None
        print(f"peak and activation memory: not measured on {device.type} (its allocator keeps no statistics); "
              "the long-lived parts are counted from the tensors")
    optimizer.zero_grad(set_to_none=True)
    model.train(was_training)
    return {**state, "activations": activations, "peak": peak}
