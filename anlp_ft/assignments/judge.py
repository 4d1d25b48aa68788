"""The verdict, computed in the grader's own process: a judged part passes when its judge accepts the data the
student's kernel handed over, compared with the data the same probe produced in a kernel that ran the solution.

A hidden-test part is a *probe* (run in the kernel; it calls the student's code on inputs drawn from
``GRADER_SEED`` and hands values over with ``emit``) and, after a ``# JUDGE`` line, a *judge* (run here, never in
a kernel). The judge sees ``submitted`` (the student's values), ``ref`` (the solution's values for the same inputs),
``same`` and ``torch``; it passes when it raises nothing. Patching anything inside the kernel (``json``, ``print``,
``sys.stdout``, builtins, the harness) changes only ``data``: the only way to a pass is to return the right values
for inputs the student has not seen.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

import torch

from .labspec import HiddenCell

__all__ = ["decode", "judge_parts", "same", "self_test"]

MAX_TENSOR_BYTES = 64 * 2**20  # a probe hands over small tensors; anything bigger is refused, not loaded


def decode(value: Any) -> Any:
    """JSON from a kernel -> Python values, with tensors read back from safetensors (never pickle)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tensor__"} and isinstance(value["__tensor__"], str):
            from safetensors.torch import load

            raw = base64.b64decode(value["__tensor__"], validate=True)
            if len(raw) > MAX_TENSOR_BYTES:
                raise ValueError(f"a tensor of {len(raw)} bytes is larger than a probe may hand over")
            try:
                tensors = load(raw)
            except Exception as error:  # safetensors' own error type: not a tensor file
                raise ValueError(f"not a safetensors tensor ({type(error).__name__})") from None
            if set(tensors) != {"t"}:
                raise ValueError("a tensor entry must hold exactly one tensor")
            return tensors["t"]
        return {k: decode(v) for k, v in value.items()}
    return value


def same(got: Any, want: Any, *, rtol: float = 1e-6, atol: float = 1e-8, where: str = "value") -> None:
    """Raise AssertionError naming the first place where `got` differs from `want` (tensors and floats within
    rtol/atol, everything else exactly). The message never shows the expected value."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise AssertionError(f"{where}: expected a tensor, got {type(got).__name__}")
        if tuple(got.shape) != tuple(want.shape):
            raise AssertionError(f"{where}: shape {tuple(got.shape)} differs from the reference's")
        if want.is_floating_point():
            diff = (got.double() - want.double()).abs()
            bad = diff > atol + rtol * want.double().abs()
            if bool(bad.any()) or bool(got.isnan().any()):
                raise AssertionError(f"{where}: {int(bad.sum())} of {want.numel()} values differ from the reference "
                                     f"(max |difference| {diff.max().item():.3g})")
        elif not torch.equal(got.to(want.dtype), want):
            wrong = (got.to(want.dtype) != want).float().mean().item()
            raise AssertionError(f"{where}: {wrong:.1%} of the values differ from the reference")
        return
    if isinstance(want, float) or (isinstance(want, int) and isinstance(got, float) and not isinstance(want, bool)):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise AssertionError(f"{where}: expected a number, got {type(got).__name__}")
        if not math.isclose(float(got), float(want), rel_tol=rtol, abs_tol=atol):
            raise AssertionError(f"{where}: {got!r} differs from the reference")
        return
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise AssertionError(f"{where}: keys {keys} differ from the reference's")
        for key in want:
            same(got[key], want[key], rtol=rtol, atol=atol, where=f"{where}[{key!r}]")
        return
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            size = len(got) if isinstance(got, list) else type(got).__name__
            raise AssertionError(f"{where}: {size} items, the reference has {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            same(g, w, rtol=rtol, atol=atol, where=f"{where}[{i}]")
        return
    if type(got) is not type(want) or got != want:
        raise AssertionError(f"{where}: {got!r} differs from the reference")


def _run_judge(source: str, data: dict[str, Any], ref: dict[str, Any], label: str) -> str:
    """"" when the judge accepts the data, else the reason (for the feedback: no hidden code in it)."""
    namespace = {"submitted": data, "ref": ref, "same": same, "torch": torch, "math": math}
    try:
        exec(compile(source, f"<judge {label}>", "exec"), namespace)
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:300] if str(error) else type(error).__name__
    return ""


def judge_parts(hidden: HiddenCell, parts: list[Any], reference: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Each part's {passed, error}: a judged part by its judge on the kernel's data (and only if the kernel ran it
    without an error), an unjudged one by the kernel's own report. `reference` holds the solution kernel's parts."""
    verdicts = []
    for number, part in enumerate(parts, start=1):
        ran = isinstance(part, dict) and part.get("passed") is True
        error = "" if ran else str(part.get("error", "") if isinstance(part, dict) else "")
        judge = hidden.judge(number)
        if judge and ran:
            if reference is None or number > len(reference):
                error = "grader: no reference data for this part"
            else:
                try:
                    data = decode(part.get("data", {}))
                    ref = decode(reference[number - 1].get("data", {}))
                except (ValueError, TypeError) as bad:
                    error = f"the data handed over is malformed ({bad})"[:300]
                else:
                    error = _run_judge(judge, data if isinstance(data, dict) else {}, ref,
                                       f"{hidden.label} part {number}")
        verdicts.append({"passed": ran and not error, "error": error})
    return verdicts


def self_test(seed: int = 0) -> tuple[int, Callable[[str, Any], None], dict[str, Any], dict[str, Any], Callable]:
    """(GRADER_SEED, emit, submitted, ref, same) for a solution notebook run as a plain notebook: its hidden tests'
    probes and judges then run on the solution's own values (ref is submitted), so a broken probe or judge fails
    there first.
    A solution gets them in a ``### BEGIN HIDDEN TESTS`` block of its set-up cell, which labs never contain."""
    data: dict[str, Any] = {}
    return seed, data.__setitem__, data, data, same
