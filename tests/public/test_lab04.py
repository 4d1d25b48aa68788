"""anlp_ft.assignments.public.lab04 (knowledge distillation): its stored expected values are what the solution
computes, and each public check passes the solution and fails a typical mistake with a useful message."""
import pytest
import torch

from anlp_ft.assignments import CheckFailed
from anlp_ft.assignments.public import lab04
from anlp_ft.data.arithmetic import is_correct
from anlp_ft.evaluate import generate
from anlp_ft.formatting import IGNORE_INDEX, encode_example, plain_prompt
from tests.conftest import solution_answers


@pytest.fixture(scope="module")
def sol(tokenizer):
    return solution_answers("04", IGNORE_INDEX=IGNORE_INDEX, generate=generate, encode_example=encode_example,
                            plain_prompt=plain_prompt, tokenizer=tokenizer, MAX_NEW_TOKENS=40)


def expected_from_solution(sol) -> dict:
    """lab04.EXPECTED recomputed from the solution; print it to update the stored values after changing a case."""
    s, t, m = lab04._case(0)
    ex1 = {}
    for temperature in lab04.EX1_TEMPERATURES:
        for direction in ("forward", "reverse"):
            for name, mask in (("mask", m), ("every position", torch.ones_like(m))):
                ex1[f"T={temperature} {direction} {name}"] = sol.kd_loss(s, t, mask, temperature, direction).item()
    teacher, student = lab04._tiny(100, layers=3).eval(), lab04._tiny(0, layers=2)
    batch = lab04._batch(0)
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        s_logits, t_logits = student(**inputs).logits, teacher(**inputs).logits
        ex2 = {"T=2.0": sol.make_token_kd_loss(teacher, 2.0)(student, batch).item(),
               "T=2.0 unshifted": sol.kd_loss(s_logits, t_logits, batch["labels"] != IGNORE_INDEX, 2.0).item(),
               "T=2.0 attention mask": sol.kd_loss(s_logits[:, :-1], t_logits[:, :-1],
                                                   batch["attention_mask"][:, 1:].bool(), 2.0).item()}
    problems, samples = lab04._ex4_case()
    ex4 = [(k["question"], k["solution"], k["answer"]) for k in sol.keep_verified(problems, samples, is_correct)]
    return {"ex1": ex1, "ex2": ex2, "ex4": ex4}


def test_lab04_expected_values_are_the_solutions(sol):
    got, stored = expected_from_solution(sol), lab04.EXPECTED
    assert stored.keys() == got.keys(), f"update lab04.EXPECTED to {got!r}"
    for ex in ("ex1", "ex2"):
        assert stored[ex].keys() == got[ex].keys(), f"update lab04.EXPECTED to {got!r}"
        assert all(abs(stored[ex][k] - got[ex][k]) <= 1e-6 for k in got[ex]), f"update lab04.EXPECTED to {got!r}"
    assert [tuple(x) for x in stored["ex4"]] == got["ex4"], f"update lab04.EXPECTED to {got!r}"
    assert len(got["ex4"]) >= 3 and len(set(got["ex2"].values())) == 3  # the cases tell the mistakes apart


def test_lab04_ex1_accepts_solution_and_names_mistakes(sol):
    assert "match" in lab04.ex1(sol.kd_loss)
    kd = sol.kd_loss
    mistakes = {
        "T^2": lambda s, t, m, T=1.0, d="forward": kd(s, t, m, T, d) / T**2,
        "reverse": lambda s, t, m, T=1.0, d="forward": kd(s, t, m, T, "reverse" if d == "forward" else "forward"),
        "mask": lambda s, t, m, T=1.0, d="forward": kd(s, t, torch.ones_like(m), T, d),
        "sum": lambda s, t, m, T=1.0, d="forward": kd(s, t, m, T, d) * m.sum(),
        "soften": lambda s, t, m, T=1.0, d="forward": kd(s, t, m, 1.0, d) * T**2,
    }
    for words, fn in mistakes.items():
        with pytest.raises(CheckFailed, match=words.replace("^", r"\^")):
            lab04.ex1(fn)


def test_lab04_ex2_accepts_solution_and_catches_unshifted_logits_and_the_attention_mask(sol):
    assert "equals" in lab04.ex2(sol.make_token_kd_loss)

    def with_mask(mask_of):
        def make(teacher, temperature=2.0):
            def loss_fn(student, batch):
                inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
                with torch.no_grad():
                    t = teacher(**inputs).logits
                s = student(**inputs).logits
                mask, cut = mask_of(batch)
                return sol.kd_loss(s[:, :cut], t[:, :cut], mask, temperature)
            return loss_fn
        return make

    with pytest.raises(CheckFailed, match="shift"):
        lab04.ex2(with_mask(lambda b: (b["labels"] != IGNORE_INDEX, None)))
    with pytest.raises(CheckFailed, match="attention mask"):
        lab04.ex2(with_mask(lambda b: (b["attention_mask"][:, 1:].bool(), -1)))


def test_lab04_ex3_accepts_solution_and_catches_sampling(sol, tokenizer):
    assert "examples" in lab04.ex3(sol.sequence_kd_data, tokenizer)

    def sampled(teacher, questions):
        prompts = [plain_prompt(q) for q in questions]
        outs = generate(teacher, tokenizer, prompts, max_new_tokens=40, do_sample=True, temperature=1.5, seed=1)
        return [encode_example(tokenizer, p, " " + o.strip()) for p, o in zip(prompts, outs) if o.strip()], outs

    with pytest.raises(CheckFailed, match="greedy"):
        lab04.ex3(sampled, tokenizer)


def test_lab04_ex4_accepts_solution_and_catches_duplicates(sol):
    assert "kept" in lab04.ex4(sol.keep_verified, is_correct)

    def with_duplicates(problems, samples, verify):
        return [{"question": p["question"], "solution": s.strip(), "answer": p["answer"]}
                for p, outs in zip(problems, samples) for s in outs if s.strip() and verify(s, p["answer"])]

    with pytest.raises(CheckFailed, match="duplicates"):
        lab04.ex4(with_duplicates, is_correct)
