"""anlp_ft.assignments.public.lab04 (knowledge distillation): each public check passes the reference and fails
a typical mistake with a useful message."""
import pytest
import torch

from anlp_ft import distill
from anlp_ft.assignments import CheckFailed
from anlp_ft.assignments.public import lab04
from anlp_ft.data.arithmetic import is_correct
from anlp_ft.formatting import IGNORE_INDEX


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
    assert "equals" in lab04.ex2(lambda teacher, temperature=2.0: distill.token_kd_loss_fn(teacher,
                                                                                          temperature=temperature))

    def unshifted(teacher, temperature=2.0):
        def loss_fn(student, batch):
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            with torch.no_grad():
                t = teacher(**inputs).logits
            return distill.kd_loss(student(**inputs).logits, t, batch["labels"] != IGNORE_INDEX,
                                   temperature=temperature)
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
