"""anlp_ft.train: fit() learns, accumulates exactly (equal and uneven micro-batches), resumes from a checkpoint,
schedules the learning rate, names bad input, steps with AdamW or SGD, trains LoRA and QLoRA adapters only, and
autocasts fp16 with a GradScaler."""
import math
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model

from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.train import History, TrainConfig, fit, lr_factor


@pytest.fixture
def data(tokenizer):
    return [encode_example(tokenizer, plain_prompt(f"What is {i} + 1?"), f" {i + 1}") for i in range(8)]


def test_fit_learns_a_small_dataset(tiny_model, data):
    h = fit(tiny_model, data, TrainConfig(steps=40, batch_size=4, lr=2e-2, progress=False))
    assert isinstance(h, History)
    assert len(h.loss) == 40
    assert h.tokens > 0
    assert h.tokens_per_s > 0
    assert h.loss[-1] < 0.5 * h.loss[0]


def test_grad_accumulation_matches_a_bigger_batch(tokenizer, data, tiny_model_factory):
    same = [encode_example(tokenizer, "Q:", " a b") for _ in range(8)]  # equal lengths: means agree exactly
    losses = []
    for bs, acc in [(4, 1), (2, 2)]:
        model = tiny_model_factory()
        config = TrainConfig(steps=3, batch_size=bs, grad_accum=acc, lr=1e-3, progress=False)
        losses.append(fit(model, same, config).loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_resume_from_checkpoint_repeats_the_run(tmp_path, data, tiny_model_factory):
    model = tiny_model_factory  # the same seeded model each time

    straight = fit(model(), data, TrainConfig(steps=6, batch_size=3, lr=1e-3, progress=False))
    cfg = dict(batch_size=3, lr=1e-3, progress=False, checkpoint_dir=str(tmp_path), save_every=3)
    fit(model(), data, TrainConfig(steps=6, **cfg))  # leaves checkpoints after steps 3 and 6
    shutil.rmtree(tmp_path / "step-5")  # as if it had stopped after step 3
    resumed = fit(model(), data, TrainConfig(steps=6, resume=True, **cfg))
    assert resumed.steps == list(range(6))
    assert resumed.loss == pytest.approx(straight.loss, rel=1e-5)


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=10, warmup_steps=2, schedule="cosine")
    assert [lr_factor(s, cfg) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, cfg) == 1.0
    assert lr_factor(9, cfg) < 0.05
    lin = TrainConfig(steps=10, schedule="linear")
    assert lr_factor(5, lin) == pytest.approx(0.5)
    assert lr_factor(7, TrainConfig(steps=10, schedule="constant")) == 1.0


def test_bad_input_is_named(tiny_model, data, tokenizer):
    with pytest.raises(ValueError, match="train_data is empty"):
        fit(tiny_model, [], TrainConfig(steps=1))
    long = [encode_example(tokenizer, "x " * 300, " y")]
    with pytest.raises(ValueError, match="longer than the model's context"):
        fit(tiny_model, long, TrainConfig(steps=1))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="save_every needs checkpoint_dir"):
        TrainConfig(save_every=5)
    with pytest.raises(ValueError, match="optimizer must be 'adamw' or 'sgd'"):
        TrainConfig(optimizer="adam")


def test_a_constant_loss_factor_scales_sgd_steps_not_adamw_steps(data, tiny_model_factory):
    """What KD's T² factor relies on: one step's weight change grows with the loss's scale under SGD only."""
    def moved(optimizer: str, factor: float) -> float:
        model = tiny_model_factory()
        before = [p.detach().clone() for p in model.parameters()]
        fit(model, data, TrainConfig(steps=1, batch_size=4, lr=1e-3, optimizer=optimizer, max_grad_norm=None,
                                     progress=False), loss_fn=lambda m, batch: factor * m(**batch).loss)
        return sum((p.detach() - b).norm() ** 2 for p, b in zip(model.parameters(), before)).item() ** 0.5

    assert moved("sgd", 16.0) / moved("sgd", 1.0) == pytest.approx(16.0, rel=1e-3)
    assert moved("adamw", 16.0) / moved("adamw", 1.0) == pytest.approx(1.0, rel=0.05)


def test_lora_trains_only_adapters(tiny_model, data):
    base = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(tiny_model, lora)
    h = fit(model, data, TrainConfig(steps=10, batch_size=4, lr=5e-3, progress=False))
    assert h.loss[-1] < h.loss[0]
    merged = model.merge_and_unload()
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, base[k])]
    assert changed
    assert all("proj" in k for k in changed)  # only the adapted linears moved (after merging)


def test_lora_rank_zero_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match=r"`r` should be a positive integer"):
        get_peft_model(tiny_model, LoraConfig(r=0, target_modules="all-linear", task_type="CAUSAL_LM"))


def test_qlora_trains_through_fit(tmp_path, data, tiny_model_factory):
    from anlp_ft.models import load_model

    tiny_model_factory(seed=None, hidden_size=64, intermediate_size=128).save_pretrained(tmp_path)
    model = load_model(str(tmp_path), device="cpu", quantization="nf4", verbose=False)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    h = fit(model, data, TrainConfig(steps=8, batch_size=4, lr=5e-3, progress=False))
    assert all(math.isfinite(x) for x in h.loss)
    assert h.loss[-1] < h.loss[0]


def test_uneven_micro_batches_match_one_batch(tokenizer, tiny_model_factory):
    """The step's loss is the mean over all its response tokens, so accumulation is exact for any lengths."""
    uneven = [encode_example(tokenizer, "Q:", " a" * (1 + 5 * (i % 2))) for i in range(8)]
    losses = []
    for bs, acc in [(4, 1), (2, 2), (1, 4)]:
        model = tiny_model_factory()
        config = TrainConfig(steps=3, batch_size=bs, grad_accum=acc, lr=1e-3, progress=False)
        losses.append(fit(model, uneven, config).loss)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert losses[2] == pytest.approx(losses[0], rel=1e-5)


def test_fp16_branch_autocasts_with_a_grad_scaler(tiny_model, data):
    """The T4 branch (fp16 compute, fp32 master weights, loss scaling), forced on CPU."""
    h = fit(tiny_model, data, TrainConfig(steps=20, batch_size=4, lr=2e-2, mixed_precision="fp16", progress=False))
    assert h.precision == "fp16"
    assert len(h.loss_scale) == 20
    assert h.loss_scale[0] > 1
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    assert h.loss[-1] < 0.5 * h.loss[0]
    plain = fit(tiny_model, data, TrainConfig(steps=1, batch_size=4, mixed_precision="no", progress=False))
    assert plain.precision == "no"
    assert plain.loss_scale == []


def test_fit_runs_after_an_accelerator_with_another_precision(tiny_model, data):
    """A notebook's own accelerate loop (bf16 or fp16 on a GPU) fixes accelerate's process-wide state; fit() after it
    must still train (it does its own autocast) instead of raising accelerate's 'already initialized' error."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # earlier fits in this process made one with "no"
    Accelerator(mixed_precision="bf16", cpu=True)
    try:
        history = fit(tiny_model, data, TrainConfig(steps=2, batch_size=4, progress=False))
    finally:
        AcceleratorState._reset_state()
    assert history.precision == "no" and len(history.loss) == 2 and all(math.isfinite(x) for x in history.loss)
