import gc
import weakref

import pytest
import torch
from transformers import LlamaForCausalLM

from anlp_ft import memory as M
from anlp_ft import memory_measure as MM
from anlp_ft.plots import memory_calculator
from anlp_ft.assignments.checks import CheckFailed
from anlp_ft.assignments.public import lab05
from anlp_ft.memory import GB, MODELS, ModelShape, TrainSetup

from conftest import tiny_config


def test_smollm2_shape_matches_the_real_model(smollm):
    shape = ModelShape.from_config(smollm.config)
    assert shape == MODELS["135M"].__class__(**{**MODELS["135M"].__dict__, "name": shape.name})
    assert shape.n_params == sum(p.numel() for p in smollm.parameters())  # tied embeddings counted once


def test_lecture_65b_table():
    table = M.lecture_65b_table()
    for part in ("parameters", "gradients", "Adam first moment", "Adam second moment"):
        assert table[part] == (260.0, 260.0)
    low, high = table["total"]
    assert 1000 <= low <= 1100 and 1350 <= high <= 1410
    # Mixed precision stores 2 + 2 + 4 (master) + 4 + 4 bytes per parameter: the same 1040 GB before activations.
    shape = ModelShape(**{**MODELS["65B"].__dict__, "n_params_override": 65e9})
    parts = M.memory_breakdown(shape, TrainSetup(precision="mixed"))
    assert sum(v for k, v in parts.items() if k not in M.PER_BATCH) / GB == pytest.approx(1040)
    assert parts["parameters"] / GB == pytest.approx(130) and parts["master weights"] / GB == pytest.approx(260)


def test_zero_stages_reproduce_the_paper():
    # Rajbhandari et al., figure 1: 7.5B parameters, 64 GPUs, mixed-precision Adam (K = 12).
    shape = ModelShape("7.5B", 4096, 32, 32, 32, 11008, 32000, n_params_override=7.5e9)
    expected = {0: 120, 1: 31.4, 2: 16.6, 3: 1.9}
    for stage, gb in expected.items():
        parts = M.memory_breakdown(shape, TrainSetup(zero_stage=stage, n_gpus=64))
        states = sum(v for k, v in parts.items() if k not in M.PER_BATCH) / GB
        assert states == pytest.approx(gb, abs=0.05), stage


@pytest.mark.parametrize("batch,seq", [(1, 8), (2, 8), (1, 16), (3, 5)])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_measured_activation_bytes_match_the_formula(batch, seq, checkpointing):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=1000)
    model = LlamaForCausalLM(config).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    ids = torch.randint(0, 1000, (batch, seq))
    measured = MM.measure_saved_activation_bytes(model, {"input_ids": ids, "labels": ids})
    predicted = M.activation_bytes(ModelShape.from_config(config), batch, seq, checkpointing=checkpointing)
    assert measured == predicted


def _leaking_saved_bytes(model, batch):
    """The natural first attempt at lab 05's exercise 2: pack returns t itself."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.is_floating_point() and t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch)
    return sum(seen.values())


@pytest.mark.parametrize("leaks", [False, True])
def test_activation_measurement_frees_its_graph(leaks):
    # The final hidden states are saved by the head: alive after the call means the graph leaked.
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(vocab_size=1000)).train()
    ids = torch.randint(0, 1000, (2, 8))
    batch = {"input_ids": ids, "labels": ids}
    alive = []
    model.model.norm.register_forward_hook(lambda m, args, out: alive.append(weakref.ref(out)))
    measure = _leaking_saved_bytes if leaks else MM.measure_saved_activation_bytes
    assert measure(model, batch) == MM.measure_saved_activation_bytes(model, batch)  # same count either way
    gc.collect()
    assert (alive[0]() is not None) == leaks


def test_lab05_check_names_the_graph_leak():
    with pytest.raises(CheckFailed, match=r"return t\.detach\(\) from pack"):
        lab05.ex2(_leaking_saved_bytes)
    assert "as expected" in lab05.ex2(MM.measure_saved_activation_bytes)


def test_lora_and_qlora_counts():
    shape = MODELS["135M"]
    lora = M.lora_param_count(shape, 16)
    assert lora == 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))
    assert lora / shape.n_params < 0.04
    full = M.memory_breakdown(shape, TrainSetup(method="full", seq=64))
    lo = M.memory_breakdown(shape, TrainSetup(method="lora", seq=64))
    q = M.memory_breakdown(shape, TrainSetup(method="qlora", seq=64))
    assert lo["Adam first moment"] == lora * 4 and lo["gradients"] == lora * 4
    assert q["parameters"] < lo["parameters"] < full["parameters"] + full["master weights"]
    ckpt = M.memory_breakdown(shape, TrainSetup(seq=512, batch=8, gradient_checkpointing=True))
    assert ckpt["activations"] < M.memory_breakdown(shape, TrainSetup(seq=512, batch=8))["activations"] / 5


def test_fits_and_fit_table():
    assert M.fits(M.memory_breakdown(MODELS["135M"], TrainSetup()), "T4")
    assert not M.fits(M.memory_breakdown(MODELS["65B"], TrainSetup()), "H100")
    # QLoRA's promise: a 65B model on one 48 GB GPU.
    assert M.fits(M.memory_breakdown(MODELS["65B"], TrainSetup(method="qlora", seq=512, gradient_checkpointing=True)),
                  "RTX 6000 Ada / L40")
    rows = {(r["model"], r["method"]): r for r in M.fit_table()}
    assert rows[("7B", "full")]["T4"] is False and rows[("7B", "qlora")]["T4"] is True


def test_calculator_logic_without_a_browser():
    r = M.calculate(model="7B", method="full", gpu="A100", batch=1, seq=512)
    assert not r.fits and "does NOT fit" in r.summary
    assert r.total_gb == pytest.approx(sum(r.parts_gb.values()))
    assert r.parts_gb["master weights"] == pytest.approx(MODELS["7B"].n_params * 4 / GB)
    z3 = M.calculate(model="7B", method="full", gpu="A100", batch=1, seq=512, zero_stage=3, n_gpus=8)
    assert z3.fits and z3.total_gb < r.total_gb / 4
    q = M.calculate(model="7B", method="qlora", gpu="T4", batch=1, seq=512, gradient_checkpointing=True)
    assert q.fits
    with pytest.raises(ValueError, match="unknown GPU"):
        M.calculate(gpu="B200")
    widget = memory_calculator()  # builds without a browser; its callback is calculate + a plot
    descriptions = {getattr(c, "description", None) for c in widget.children}
    assert {"model", "batch", "seq", "precision", "method", "checkpointing", "zero_stage", "n_gpus", "gpu"} <= descriptions


def test_measured_state_bytes_are_exact():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(vocab_size=1000)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 1000, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    got = MM.measured_state_bytes(model, opt)
    n = ModelShape.from_config(model.config).n_params
    assert got["parameters"] == got["gradients"] == 4 * n
    assert got["optimizer states"] == 8 * n


def _lora(model, rank=4):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                            target_modules=list(M.LORA_TARGETS)))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_lora_activation_bytes_match_the_formula(checkpointing):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=1000)
    model = LlamaForCausalLM(config).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    model = _lora(model)
    if checkpointing:
        model.enable_input_require_grads()  # what peft asks for with frozen embeddings
    ids = torch.randint(0, 1000, (2, 7))
    measured = MM.measure_saved_activation_bytes(model, {"input_ids": ids, "labels": ids})
    predicted = M.activation_bytes(ModelShape.from_config(config), 2, 7, checkpointing=checkpointing, lora_rank=4)
    assert measured == predicted


@pytest.mark.parametrize("method", ["full", "lora"])
def test_predicted_peak_is_the_measured_cpu_peak(method):
    """A whole Adam step: the bytes alive before it plus the most allocated during it, as the CPU allocator
    reports them, equal the breakdown's total."""
    torch.manual_seed(0)
    config = tiny_config(vocab_size=1000)
    model = LlamaForCausalLM(config).train()
    if method == "lora":
        model = _lora(model)
    ids = torch.randint(0, 1000, (3, 16))
    step = MM.measure_training_step(model, {"input_ids": ids, "labels": ids})
    measured = step["peak"] - step["buffers"]
    setup = TrainSetup(method=method, precision="fp32", batch=3, seq=16, lora_rank=4)
    predicted = M.total_bytes(M.memory_breakdown(ModelShape.from_config(config), setup))
    # peft multiplies each adapter's output by its scaling, a Python float that autograd saves as a 0-dim
    # float64 tensor (8 bytes) which saved_tensors_hooks do not see.
    adapters = config.num_hidden_layers * len(M.LORA_TARGETS) if method == "lora" else 0
    assert measured == predicted + 8 * adapters
    assert MM.peak_bytes_during(lambda: torch.zeros(1000)) == 4000


def test_peak_bytes_refuse_other_devices():
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        MM.peak_bytes_during(lambda: None, "meta")
