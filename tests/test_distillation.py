"""anlp_ft.distill: the KD loss against torch's kl_div, the fit loss_fn, teacher data, verifier filtering, speed;
and lab 04's public checks on right and wrong answers."""
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from anlp_ft import distill
from anlp_ft.assignments import CheckFailed
from anlp_ft.assignments.public import lab04
from anlp_ft.data.arithmetic import is_correct
from anlp_ft.formatting import IGNORE_INDEX, encode_example, plain_prompt
from anlp_ft.train import TrainConfig, fit

from conftest import tiny_config


def _logits(seed=0, shape=(2, 5, 30)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 2, torch.randn(*shape, generator=g) * 2


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_kd_loss_forward_and_reverse_equal_kl_div(temperature):
    s, t = _logits()
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, :2] = False
    ls, lt = (s / temperature).log_softmax(-1), (t / temperature).log_softmax(-1)
    forward = F.kl_div(ls, lt, log_target=True, reduction="none").sum(-1)[mask].mean() * temperature**2
    reverse = F.kl_div(lt, ls, log_target=True, reduction="none").sum(-1)[mask].mean() * temperature**2
    assert torch.allclose(distill.kd_loss(s, t, mask, temperature=temperature), forward, atol=1e-5)
    assert torch.allclose(distill.kd_loss(s, t, mask, temperature=temperature, direction="reverse"), reverse, atol=1e-5)


def test_kd_loss_is_zero_for_equal_logits_and_rejects_bad_arguments():
    s, _ = _logits()
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert distill.kd_loss(s, s.clone(), mask, temperature=2.0).abs().item() < 1e-6
    with pytest.raises(ValueError, match="direction"):
        distill.kd_loss(s, s, mask, direction="sideways")
    with pytest.raises(ValueError, match="temperature"):
        distill.kd_loss(s, s, mask, temperature=0)
    with pytest.raises(ValueError, match="no position"):
        distill.kd_loss(s, s, torch.zeros_like(mask))


def test_token_kd_loss_fn_trains_a_student_towards_its_teacher(tokenizer):
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(tiny_config(num_hidden_layers=2)).eval()
    student = LlamaForCausalLM(tiny_config(num_hidden_layers=1))
    data = [encode_example(tokenizer, plain_prompt(f"What is {a} + 1?"), f" {a + 1}") for a in range(10, 18)]
    loss_fn = distill.token_kd_loss_fn(teacher, temperature=2.0)
    history = fit(student, data, TrainConfig(steps=15, batch_size=4, lr=1e-2, progress=False), loss_fn=loss_fn)
    assert history.final_loss < history.loss[0] / 2
    assert all(p.grad is None for p in teacher.parameters())


def test_response_positions_shift_the_labels():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6, IGNORE_INDEX]])
    assert distill.response_positions(labels).tolist() == [[False, True, True, False]]


def test_teacher_examples_and_sampling(tokenizer, tiny_model):
    questions = ["What is 1 + 2?", "What is 3 + 4?"]
    examples, answers = distill.teacher_examples(tiny_model, tokenizer, questions, max_new_tokens=5)
    assert len(answers) == 2 and len(examples) == sum(bool(a.strip()) for a in answers)
    samples = distill.sample_solutions(tiny_model, tokenizer, questions, k=3, max_new_tokens=5, seed=0)
    assert len(samples) == 2 and all(len(s) == 3 for s in samples)
    assert samples == distill.sample_solutions(tiny_model, tokenizer, questions, k=3, max_new_tokens=5, seed=0)


def test_keep_verified_filters_dedups_and_caps():
    problems = [{"question": "What is 1 + 2?", "answer": "3"}, {"question": "What is 2 + 2?", "answer": "4"}]
    samples = [["The answer is 3.", " The answer is 3. ", "It is 4.", "", "1 + 2 = 3"], ["5"]]
    kept = distill.keep_verified(problems, samples, is_correct)
    assert [k["solution"] for k in kept] == ["The answer is 3.", "1 + 2 = 3"]
    assert len(distill.keep_verified(problems, samples, is_correct, per_problem=1)) == 1
    with pytest.raises(ValueError):
        distill.keep_verified(problems, samples[:1], is_correct)


def test_generation_tokens_per_s_is_positive(tokenizer, tiny_model):
    speed = distill.generation_tokens_per_s(tiny_model, tokenizer, ["Hello", "What is 1 + 2?"], new_tokens=4)
    assert speed > 0


# Lab 04's public checks: pass on the reference, fail with a useful message on typical mistakes -------------------
def _kd(s, t, m, temperature=1.0, direction="forward"):
    return distill.kd_loss(s, t, m, temperature=temperature, direction=direction)


def test_lab04_ex1_accepts_reference_and_names_mistakes():
    assert "match" in lab04.ex1(_kd)
    mistakes = {
        "T^2": lambda s, t, m, T=1.0, d="forward": _kd(s, t, m, T, d) / T**2,
        "reverse": lambda s, t, m, T=1.0, d="forward": _kd(s, t, m, T, "reverse" if d == "forward" else "forward"),
        "mask": lambda s, t, m, T=1.0, d="forward": _kd(s, t, torch.ones_like(m), T, d),
    }
    for words, fn in mistakes.items():
        with pytest.raises(CheckFailed, match=words.replace("^", r"\^")):
            lab04.ex1(fn)


def test_lab04_ex2_accepts_reference_and_catches_unshifted_logits():
    assert "equals" in lab04.ex2(lambda teacher, temperature=2.0: distill.token_kd_loss_fn(teacher, temperature=temperature))

    def unshifted(teacher, temperature=2.0):
        def loss_fn(student, batch):
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            with torch.no_grad():
                t = teacher(**inputs).logits
            return distill.kd_loss(student(**inputs).logits, t, batch["labels"] != IGNORE_INDEX, temperature=temperature)
        return loss_fn

    with pytest.raises(CheckFailed, match="shift"):
        lab04.ex2(unshifted)


def test_lab04_ex4_accepts_reference_and_catches_duplicates():
    assert "kept" in lab04.ex4(distill.keep_verified, is_correct)

    def with_duplicates(problems, samples, verify):
        return [{"question": p["question"], "solution": s.strip(), "answer": p["answer"]}
                for p, outs in zip(problems, samples) for s in outs if s.strip() and verify(s, p["answer"])]

    with pytest.raises(CheckFailed, match="duplicates"):
        lab04.ex4(with_duplicates, is_correct)
