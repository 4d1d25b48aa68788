"""anlp_ft.memory: memory accounting from a model's shape (parameters, gradients, Adam, LoRA/QLoRA), the
lecture's 65B table, the GPU fit table and the calculator's logic, with lab 05's ZeRO split (from the solution).
Measurement on a real model is in test_memory_measure.py."""
import pytest

from anlp_ft import memory as M
from anlp_ft.memory import GB, MODELS, ModelShape, TrainSetup
from tests.conftest import solution_answers

ZERO_PER_GPU = solution_answers("05").zero_per_gpu


def test_smollm2_shape_matches_the_real_model(smollm):
    shape = ModelShape.from_config(smollm.config)
    assert shape == MODELS["135M"].__class__(**{**MODELS["135M"].__dict__, "name": shape.name})
    assert shape.n_params == sum(p.numel() for p in smollm.parameters())  # tied embeddings counted once


def test_lecture_65b_table():
    table = M.lecture_65b_table()
    for part in ("parameters", "gradients", "Adam first moment", "Adam second moment"):
        assert table[part] == (260.0, 260.0)
    low, high = table["total"]
    assert 1000 <= low <= 1100
    assert 1350 <= high <= 1410
    # Mixed precision stores 2 + 2 + 4 (master) + 4 + 4 bytes per parameter: the same 1040 GB before activations.
    shape = ModelShape(**{**MODELS["65B"].__dict__, "n_params_override": 65e9})
    parts = M.memory_breakdown(shape, TrainSetup(precision="mixed"))
    assert sum(v for k, v in parts.items() if k not in M.PER_BATCH) / GB == pytest.approx(1040)
    assert parts["parameters"] / GB == pytest.approx(130)
    assert parts["master weights"] / GB == pytest.approx(260)


def test_zero_stages_reproduce_the_paper():
    # Rajbhandari et al., figure 1: 7.5B parameters, 64 GPUs, mixed-precision Adam (K = 12), with lab 05's split.
    shape = ModelShape("7.5B", 4096, 32, 32, 32, 11008, 32000, n_params_override=7.5e9)
    expected = {0: 120, 1: 31.4, 2: 16.6, 3: 1.9}
    for stage, gb in expected.items():
        parts = ZERO_PER_GPU(M.memory_breakdown(shape, TrainSetup()), stage, 64)
        states = sum(v for k, v in parts.items() if k not in M.PER_BATCH) / GB
        assert states == pytest.approx(gb, abs=0.05), stage


def test_lora_and_qlora_counts():
    shape = MODELS["135M"]
    lora = M.lora_param_count(shape, 16)
    assert lora == 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))
    assert lora / shape.n_params < 0.04
    full = M.memory_breakdown(shape, TrainSetup(method="full", seq=64))
    lo = M.memory_breakdown(shape, TrainSetup(method="lora", seq=64))
    q = M.memory_breakdown(shape, TrainSetup(method="qlora", seq=64))
    assert lo["optimizer states"] == lora * 8  # Adam's m and v
    assert lo["gradients"] == lora * 4
    assert q["parameters"] < lo["parameters"] < full["parameters"] + full["master weights"]
    ckpt = M.memory_breakdown(shape, TrainSetup(seq=512, batch=8, gradient_checkpointing=True))
    assert ckpt["activations"] < M.memory_breakdown(shape, TrainSetup(seq=512, batch=8))["activations"] / 5


def test_lora_trainable_fraction_for_smollm2():
    shape = MODELS["135M"]
    assert M.lora_param_count(shape, 8) / shape.n_params < 0.02
    assert 0.03 < M.lora_param_count(shape, 16) / shape.n_params < 0.04


def test_fits_and_fit_table():
    assert M.fits(M.memory_breakdown(MODELS["135M"], TrainSetup()), "T4")
    assert not M.fits(M.memory_breakdown(MODELS["65B"], TrainSetup()), "H100")
    # QLoRA's promise: a 65B model on one 48 GB GPU.
    assert M.fits(M.memory_breakdown(MODELS["65B"], TrainSetup(method="qlora", seq=512, gradient_checkpointing=True)),
                  "RTX 6000 Ada / L40")
    rows = {(r["model"], r["method"]): r for r in M.fit_table()}
    assert rows[("7B", "full")]["T4"] is False
    assert rows[("7B", "qlora")]["T4"] is True


def test_calculator_logic_without_a_browser():
    r = M.calculate(model="7B", method="full", gpu="A100", batch=1, seq=512)
    assert not r.fits
    assert "does NOT fit" in r.summary
    assert r.total_gb == pytest.approx(sum(r.parts_gb.values()))
    assert r.parts_gb["master weights"] == pytest.approx(MODELS["7B"].n_params * 4 / GB)
    z3 = M.calculate(model="7B", method="full", gpu="A100", batch=1, seq=512,
                     per_gpu=lambda parts: ZERO_PER_GPU(parts, 3, 8), per_gpu_label="ZeRO-3 on 8 GPUs")
    assert z3.fits
    assert z3.total_gb < r.total_gb / 4
    assert "ZeRO-3 on 8 GPUs): " in z3.summary
    q = M.calculate(model="7B", method="qlora", gpu="T4", batch=1, seq=512, gradient_checkpointing=True)
    assert q.fits
    with pytest.raises(ValueError, match="unknown GPU"):
        M.calculate(gpu="B200")
