"""Where code runs: device, precision, seeding, the quick/full profile and whether the hub is reachable."""
from __future__ import annotations

import functools
import os
import random
import socket
import sys
from typing import Literal, TypeVar

import numpy as np
import torch

Profile = Literal["quick", "full"]
T = TypeVar("T")
# "7.5:15" makes a bigger CUDA card train as a Colab T4 would: the precision of compute capability 7.5 (fp16 with a
# GradScaler) and at most 15 GiB for torch's allocator. For checking the students' path on another GPU.
POSE_ENV = "ANLP_FT_POSE_GPU"


@functools.cache
def gpu_pose() -> tuple[tuple[int, int], float] | None:
    """The card $ANLP_FT_POSE_GPU poses as, (capability, memory GiB), applied to CUDA once; None when unset."""
    value = os.environ.get(POSE_ENV)
    if not value:
        return None
    try:
        cap, gib = value.split(":")
        major, minor = (int(x) for x in cap.split("."))
        pose = ((major, minor), float(gib))
    except ValueError:
        raise ValueError(f"{POSE_ENV} must look like '7.5:15' (compute capability:GiB), got {value!r}") from None
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, pose[1] * 2**30 / total))
    return pose


def cuda_capability(device: torch.device | str | None = None) -> tuple[int, int]:
    """The compute capability training goes by: the posed card's ($ANLP_FT_POSE_GPU) if set, else the card's."""
    pose = gpu_pose()
    return pose[0] if pose else torch.cuda.get_device_capability(device)


def pick_device() -> torch.device:
    """cuda > mps > cpu."""
    if torch.cuda.is_available():
        gpu_pose()
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def compute_dtype(device: torch.device | str | None = None, capability: tuple[int, int] | None = None) -> torch.dtype:
    """The dtype to compute in: bf16 from compute capability 8.0 (Ampere), fp16 below it (a Colab T4 is 7.5),
    fp32 on CPU and MPS.

    Decided from the capability, not `torch.cuda.is_bf16_supported()`, which reports emulated bf16 on a T4
    (it runs, but slowly). `capability` lets tests pose as any card.
    """
    device = torch.device(device) if device is not None else pick_device()
    if device.type != "cuda":
        return torch.float32
    if capability is None:
        capability = cuda_capability(device)
    return torch.bfloat16 if capability >= (8, 0) else torch.float16


def describe_device(device: torch.device | str | None = None, *, name: str | None = None,
                    capability: tuple[int, int] | None = None, in_colab: bool | None = None) -> str:
    """One line for a notebook's set-up cell: the accelerator, its compute capability and the precision training
    uses there (what `fit` autocasts to). `name`, `capability` and `in_colab` let tests pose as any machine."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        pose = None if (name or capability) else gpu_pose()
        name = name or torch.cuda.get_device_name(device)
        if pose:
            name = f"{name} posing as compute capability {pose[0][0]}.{pose[0][1]} with {pose[1]:g} GiB ({POSE_ENV})"
        capability = capability or cuda_capability(device)
        dtype = compute_dtype(device, capability)
        how = ("bf16 autocast" if dtype == torch.bfloat16
               else "fp16 autocast with a GradScaler (no fast bf16 below compute capability 8.0)")
        return f"GPU: {name}, compute capability {capability[0]}.{capability[1]}; training uses {how}"
    if device.type == "mps":
        return "GPU: Apple MPS; training runs in fp32"
    in_colab = "google.colab" in sys.modules if in_colab is None else in_colab
    fix = " (in Colab: Runtime > Change runtime type > T4 GPU)" if in_colab else ""
    return f"no GPU{fix}: training runs on the CPU in fp32"


# accelerate's names for the precisions fit() can autocast to ("fp16" also means a GradScaler).
PRECISIONS: dict[str, torch.dtype] = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def mixed_precision(dtype: torch.dtype) -> Literal["no", "bf16", "fp16"]:
    """accelerate's name for autocasting to `dtype`; "fp16" also turns on a GradScaler."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The inverse of `mixed_precision`: "auto" follows the device (`compute_dtype`), else "no"/"bf16"/"fp16"."""
    if precision == "auto":
        return compute_dtype(device)
    if precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be 'auto', 'no', 'bf16' or 'fp16', got {precision!r}")
    return PRECISIONS[precision]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so that a run repeats."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_profile(profile: str | None = None) -> Profile:
    """The run profile: an explicit value (a papermill PROFILE parameter), else $ANLP_FT_PROFILE, else "quick".

    "quick" is the default on every device, a GPU included: a profile becomes a device's default only after every
    notebook passed in it there; the full profile's one GPU run (benchmarks/results/gpu_check_h200.md) did not pass
    everywhere yet. On a GPU the default says so."""
    value = profile or os.environ.get("ANLP_FT_PROFILE")
    if not value:
        value = "quick"
        if torch.cuda.is_available():
            print("profile: quick (the default everywhere until the full profile has passed on a GPU; "
                  "set PROFILE = 'full' or ANLP_FT_PROFILE=full to opt in)")
    if value not in ("quick", "full"):
        raise ValueError(f"profile must be 'quick' or 'full', got {value!r} (check PROFILE or $ANLP_FT_PROFILE)")
    return value  # type: ignore[return-value]


def by_profile(profile: str, *, quick: T, full: T) -> T:
    """Pick a setting by profile: `steps = by_profile(PROFILE, quick=40, full=300)`."""
    return quick if resolve_profile(profile) == "quick" else full


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub can be reached; False offline or with HF_HUB_OFFLINE set.

    A short TCP probe instead of a download attempt: offline, hub clients can spend minutes in retries.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False
