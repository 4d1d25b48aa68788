"""anlp_ft.runtime: compute dtype by device and card, mixed-precision and autocast names, the profile, seeding
and the hub flag."""
import random

import pytest
import torch

from anlp_ft import runtime


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16), ((7, 0), torch.float16)])
def test_cuda_dtype_follows_compute_capability(capability, expected):
    assert runtime.compute_dtype("cuda", capability=capability) is expected


def test_cpu_computes_in_fp32():
    assert runtime.compute_dtype("cpu") is torch.float32


def test_mixed_precision_names():
    assert runtime.mixed_precision(torch.float16) == "fp16"  # accelerate adds a GradScaler for this one
    assert runtime.mixed_precision(torch.bfloat16) == "bf16"
    assert runtime.mixed_precision(torch.float32) == "no"


def test_auto_precision_follows_the_card():
    from anlp_ft.runtime import autocast_dtype
    assert autocast_dtype("auto", torch.device("cpu")) is torch.float32
    assert autocast_dtype("fp16", torch.device("cpu")) is torch.float16
    with pytest.raises(ValueError, match="mixed_precision"):
        autocast_dtype("fp8", torch.device("cpu"))


def test_profile_resolution(monkeypatch):
    monkeypatch.delenv("ANLP_FT_PROFILE", raising=False)
    assert runtime.resolve_profile() == "quick"  # on every device, until the full profile has run on a GPU
    monkeypatch.setenv("ANLP_FT_PROFILE", "full")
    assert runtime.resolve_profile() == "full"
    assert runtime.resolve_profile("quick") == "quick"  # an explicit PROFILE parameter wins
    assert runtime.by_profile("quick", quick=1, full=2) == 1
    with pytest.raises(ValueError, match="quick' or 'full"):
        runtime.resolve_profile("fast")


def test_seed_everything_repeats():
    runtime.seed_everything(3)
    a = (random.random(), torch.rand(3))
    runtime.seed_everything(3)
    b = (random.random(), torch.rand(3))
    assert a[0] == b[0]
    assert torch.equal(a[1], b[1])


def test_hub_offline_flag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runtime.hub_reachable.cache_clear()
    assert runtime.hub_reachable() is False
    runtime.hub_reachable.cache_clear()


@pytest.mark.parametrize("name, capability, expected", [
    ("Tesla T4", (7, 5), "GPU: Tesla T4, compute capability 7.5; training uses fp16 autocast with a GradScaler"),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "GPU: NVIDIA A100-SXM4-40GB, compute capability 8.0; training uses bf16"),
])
def test_describe_device_names_the_card_and_the_precision_fit_uses(name, capability, expected):
    assert runtime.describe_device("cuda", name=name, capability=capability).startswith(expected)


def test_describe_device_without_a_gpu_says_how_to_get_one_in_colab():
    assert runtime.describe_device("cpu", in_colab=True) == (
        "no GPU (in Colab: Runtime > Change runtime type > T4 GPU): training runs on the CPU in fp32")
    assert runtime.describe_device("cpu", in_colab=False) == "no GPU: training runs on the CPU in fp32"


@pytest.fixture
def pose(monkeypatch):
    """Set $ANLP_FT_POSE_GPU for one test; the parsed pose is cached, so clear it before and after."""
    def set_pose(value: str):
        monkeypatch.setenv(runtime.POSE_ENV, value)
        runtime.gpu_pose.cache_clear()
    yield set_pose
    monkeypatch.delenv(runtime.POSE_ENV, raising=False)
    runtime.gpu_pose.cache_clear()


def test_a_posed_t4_computes_in_fp16_on_cuda_and_the_cpu_stays_fp32(pose):
    pose("7.5:15")
    assert runtime.gpu_pose() == ((7, 5), 15.0)
    assert runtime.compute_dtype("cuda") is torch.float16
    assert runtime.compute_dtype("cpu") is torch.float32
    assert runtime.compute_dtype("cuda", capability=(9, 0)) is torch.bfloat16  # an explicit card still wins


@pytest.mark.parametrize("value", ["7.5", "T4", "7:15", "7.5:lots"])
def test_a_malformed_pose_names_the_variable_and_the_format(pose, value):
    pose(value)
    with pytest.raises(ValueError, match=r"ANLP_FT_POSE_GPU must look like '7.5:15'"):
        runtime.gpu_pose()
