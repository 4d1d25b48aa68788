"""Memory of a training step, measured on a real model: the tensors autograd saves for backward
(`torch.autograd.graph.saved_tensors_hooks`), the long-lived parameters, gradients and optimizer states counted
from the tensors themselves, and the step's peak from the allocator, on CPU as on CUDA. `anlp_ft.memory` predicts
the same quantities from the model's shape; lab 05 compares the two.
"""
from __future__ import annotations

import os
from typing import Callable, Mapping

import torch


def measure_saved_activation_bytes(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                                   *, include_integer: bool = False) -> int:
    """Bytes of the tensors autograd saves for backward during `model(**batch)`, measured exactly.

    Every tensor passed to saved_tensors_hooks' pack hook is counted once per storage (views share one), and
    the model's parameters are left out (they are weights, not activations). Integer tensors (token ids,
    labels) are left out unless include_integer. The graph is freed without a backward pass, and nothing of it
    outlives the call.
    """
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in param_storages and key not in seen and (include_integer or t.is_floating_point()):
            seen[key] = storage.nbytes()
        # Not t itself: a saved output holds its own grad_fn, a cycle through C++ that Python's garbage
        # collector cannot see, so every call would leak its whole graph and activations.
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**batch)
    del out
    return sum(seen.values())


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
        return 0
    events.sort()
    start = events[0][2] - events[0][1]
    return max(0, max(total for _, _, total in events) - start)


def measure_training_step(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, int | None]:
    """Memory of one Adam step on `batch`, measured: after a first step has created the gradients and Adam's
    states (which then live through training), one more step at lr 0 (the weights stay as they are). Returns the
    long-lived parts counted from the tensors (`measured_state_bytes`), the activations autograd saves, and
    "peak": those parts plus the most allocated during the step (`peak_bytes_during`). Where the allocator keeps
    no statistics (MPS) "peak" is None, and a line says so."""
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
    else:
        peak = None
        print(f"peak memory: not measured on {device.type} (its allocator keeps no peak); parts counted from tensors")
    activations = measure_saved_activation_bytes(model, batch)
    optimizer.zero_grad(set_to_none=True)
    model.train(was_training)
    return {**state, "activations": activations, "peak": peak}
