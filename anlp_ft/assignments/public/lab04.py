"""Public checks for lab 04, knowledge distillation (labs/04_knowledge_distillation.ipynb).

Each function checks one exercise and raises CheckFailed with what to fix; a returned string is shown after the
tick. The checks compare with stored expected values (EXPECTED, computed once from the solution: the package holds
no reference answer) on seeded random tensors and tiny models, and with properties the right answer has.
"""
from __future__ import annotations

import random

import torch

from ...evaluate import generate
from ...formatting import IGNORE_INDEX, encode_example, plain_prompt
from ..checks import CheckFailed
from ..checks import require as _require

__all__ = ["EXPECTED", "ex1", "ex2", "ex3", "ex4"]

# What the solution returns on the seed-0 cases below (tests/public/test_lab04.py recomputes them from the solution).
# ex1: kd_loss at each (temperature, direction), with the case's mask and with every position counted.
# ex2: the loss_fn at T = 2, and the two classic mistakes (no shift; the attention mask instead of the labels).
# ex4: the kept (question, solution) pairs under arithmetic.is_correct.
EXPECTED: dict = {
    "ex1": {
        "T=1.0 forward mask": 3.752379894256592,
        "T=1.0 forward every position": 3.16227388381958,
        "T=1.0 reverse mask": 3.5634706020355225,
        "T=1.0 reverse every position": 2.999962091445923,
        "T=2.0 forward mask": 4.890218257904053,
        "T=2.0 forward every position": 4.212363243103027,
        "T=2.0 reverse mask": 4.35678768157959,
        "T=2.0 reverse every position": 3.7100348472595215,
        "T=0.5 forward mask": 2.184390068054199,
        "T=0.5 forward every position": 1.8483085632324219,
        "T=0.5 reverse mask": 2.207698106765747,
        "T=0.5 reverse every position": 1.8702603578567505,
    },
    "ex2": {
        "T=2.0": 3.979397773742676,
        "T=2.0 unshifted": 3.8572726249694824,
        "T=2.0 attention mask": 4.016425609588623,
    },
    "ex4": [
        ("What is 71 + 55?", "71 + 55 = 126. The answer is 126.", "126"),
        ("What is 89 + 42?", "89 + 42 = 131. The answer is 131.", "131"),
        ("What is 97 + 52?", "97 + 52 = 149. The answer is 149.", "149"),
        ("What is 88 + 91?", "88 + 91 = 179. The answer is 179.", "179"),
        ("What is 80 + 11?", "So it is 91", "91"),
        ("What is 80 + 11?", "80 + 11 = 91. The answer is 91.", "91"),
    ],
}


def _scalar(value, name: str) -> torch.Tensor:
    _require(torch.is_tensor(value) and value.numel() == 1, f"{name} must return a scalar tensor (one number)")
    return value.float().reshape(())


# ex1: the token-level KD loss ---------------------------------------------------------------------------------
EX1_TEMPERATURES = (1.0, 2.0, 0.5)


def _case(seed: int, batch: int = 2, length: int = 7, vocab: int = 17):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, length, vocab, generator=g) * 2
    teacher = torch.randn(batch, length, vocab, generator=g) * 2
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, :3] = False  # a prompt
    mask[1, :2] = False
    mask[1, -2:] = False  # padding
    return student, teacher, mask


def _diagnose(got: torch.Tensor, temperature: float, direction: str, count: int) -> None:
    want = _kd(temperature, direction)
    if abs(got.item() - want) <= 1e-4:
        return
    other = "reverse" if direction == "forward" else "forward"
    if abs(got.item() - _kd(temperature, other)) <= 1e-4:
        raise CheckFailed(f"direction={direction!r} gave the {other} KL: forward is KL(teacher || student) = "
                          "sum p_T (log p_T - log q_T), the expectation under the teacher; reverse swaps the roles")
    if temperature != 1 and abs(got.item() - want / temperature**2) <= 1e-4:
        raise CheckFailed(f"at T={temperature} the loss lacks the T^2 factor: multiply the mean KL by temperature ** 2")
    if temperature != 1 and abs(got.item() - _kd(1.0, direction) * temperature**2) <= 1e-4:
        raise CheckFailed("the temperature must soften both distributions: divide both logits by it before log_softmax")
    if abs(got.item() - _kd(temperature, direction, "every position")) <= 1e-4:
        raise CheckFailed("positions where mask is False (prompt, padding) must not count: "
                          "average over masked positions only")
    if abs(got.item() - want * count) <= 1e-3:
        raise CheckFailed(f"you returned the sum over the {count} masked positions; return their mean")
    raise CheckFailed(f"expected {want:.5f} (T={temperature}, {direction}) on a random case, got {got.item():.5f}: "
                      "divide logits by T, log_softmax both, sum p (log p - log q) over the vocabulary, average over "
                      "the masked positions, multiply by T^2")


def _kd(temperature: float, direction: str, mask: str = "mask") -> float:
    return EXPECTED["ex1"][f"T={temperature} {direction} {mask}"]


def ex1(kd_loss) -> str:
    s, t, m = _case(0)
    for temperature in EX1_TEMPERATURES:
        for direction in ("forward", "reverse"):
            got = _scalar(kd_loss(s.clone(), t.clone(), m.clone(), temperature, direction), "kd_loss")
            _diagnose(got, temperature, direction, int(m.sum()))
    same = _scalar(kd_loss(s, s.clone(), m, 2.0, "forward"), "kd_loss").abs().item()
    _require(same < 1e-5, f"the KL of a distribution with itself must be 0, got {same:.3g}")
    s.requires_grad_(True)
    loss = kd_loss(s, t, m, 2.0, "forward")
    _require(loss.requires_grad, "the loss must keep the graph to the student's logits (do not detach or call .item())")
    loss.backward()
    _require(s.grad[~m].abs().max().item() == 0, "masked-out positions must get no gradient")
    return "forward and reverse KL at T = 0.5, 1 and 2 match the expected values"


# ex2: the KD loss_fn for fit ------------------------------------------------------------------------------------
def _tiny(seed: int, layers: int = 2):
    """A tiny Llama whose weights come from a seeded generator, not from transformers' initialisation (which may
    change between versions): the stored expected values hold wherever the check runs. Large weights give peaked
    distributions, so mistakes show."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                         tie_word_embeddings=True, pad_token_id=0, eos_token_id=0)
    model = LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn(p.shape, generator=g) * 0.5)
    return model


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (3, 10), generator=g)
    attention = torch.ones_like(ids)
    attention[2, -3:] = 0
    ids[2, -3:] = 0
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX  # prompts
    labels[0, :6] = IGNORE_INDEX
    labels[2, -3:] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def ex2(make_token_kd_loss, temperature: float = 2.0) -> str:
    teacher, student = _tiny(100, layers=3).eval(), _tiny(0, layers=2)
    batch = _batch(0)
    loss_fn = make_token_kd_loss(teacher, temperature)
    _require(callable(loss_fn), "make_token_kd_loss must return a function loss_fn(student, batch)")
    got = _scalar(loss_fn(student, {k: v.clone() for k, v in batch.items()}), "loss_fn").item()
    want = EXPECTED["ex2"]
    if abs(got - want[f"T={temperature}"]) > 1e-4:
        if abs(got - want[f"T={temperature} unshifted"]) <= 1e-4:
            raise CheckFailed("shift by one: logits[:, :-1] predict labels[:, 1:], so use logits[:, :-1] of both "
                              "models and the mask labels[:, 1:] != -100")
        if abs(got - want[f"T={temperature} attention mask"]) <= 1e-4:
            raise CheckFailed("the loss counts the prompt's positions: mask with labels[:, 1:] != -100, "
                              "not the attention mask")
        raise CheckFailed(f"expected {want[f'T={temperature}']:.5f} on a tiny teacher and student, got {got:.5f}: "
                          "run both models on input_ids and attention_mask, take logits[:, :-1], "
                          "and call kd_loss with the temperature")
    student.zero_grad()
    teacher.zero_grad()
    loss_fn(student, batch).backward()
    _require(all(p.grad is None or p.grad.abs().sum() == 0 for p in teacher.parameters()),
             "gradients reached the teacher: run it under torch.no_grad() (it is frozen)")
    _require(any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters()),
             "no gradient reached the student: do not detach the student's logits")
    return f"equals the expected KD loss ({got:.4f}) on a tiny teacher and student"


# ex3: sequence-level KD data ------------------------------------------------------------------------------------
def ex3(sequence_kd_data, tokenizer, seed: int = 0, max_new_tokens: int = 40) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    teacher = LlamaForCausalLM(config).eval()
    questions = ["What is 12 + 34?", "What is 56 + 7?", "What is 81 + 19?"]
    got = sequence_kd_data(teacher, list(questions))
    _require(isinstance(got, tuple) and len(got) == 2, "sequence_kd_data must return a pair (examples, answers)")
    examples, answers = got
    prompts = [plain_prompt(q) for q in questions]
    want_answers = generate(teacher, tokenizer, prompts, max_new_tokens=max_new_tokens)  # greedy
    want_examples = [encode_example(tokenizer, p, " " + a.strip()) for p, a in zip(prompts, want_answers) if a.strip()]
    _require(len(answers) == len(questions),
             f"expected one raw answer per question ({len(questions)}), got {len(answers)}")
    _require(list(answers) == want_answers,
             "the answers differ from the teacher's greedy generations of plain_prompt(question): use "
             "generate(teacher, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS) (greedy, no sampling)")
    _require(len(examples) == len(want_examples), f"expected {len(want_examples)} examples (one per non-empty answer), "
                                                  f"got {len(examples)}")
    for e, w in zip(examples, want_examples):
        _require(list(e["input_ids"]) == w["input_ids"] and list(e["labels"]) == w["labels"],
                 "an example differs from encode_example(tokenizer, plain_prompt(q), ' ' + answer.strip())")
    return f"{len(examples)} examples from a tiny teacher's greedy answers, encoded as the lab asks"


# ex4: keep the verified samples ---------------------------------------------------------------------------------
def _ex4_case() -> tuple[list[dict], list[list[str]]]:
    rng = random.Random(0)
    problems, samples = [], []
    for i in range(6):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        answer = str(a + b)
        problems.append({"question": f"What is {a} + {b}?", "solution": "(gold, not to be used)", "answer": answer})
        right = f"{a} + {b} = {answer}. The answer is {answer}."
        outs = [right, " " + right + " ", f"The answer is {a + b + 1}.", "", f"So it is {answer}", "   "]
        rng.shuffle(outs)
        samples.append(outs[: rng.randint(2, 6)] if i else [f"The answer is {a + b - 1}."])  # one problem: none right
    return problems, samples


def ex4(keep_verified, verify) -> str:
    problems, samples = _ex4_case()
    got = keep_verified([dict(p) for p in problems], [list(s) for s in samples], verify)
    want = [{"question": q, "solution": text, "answer": a} for q, text, a in EXPECTED["ex4"]]
    _require(isinstance(got, list), "keep_verified must return a list of dicts")
    _require(all(isinstance(g, dict) and {"question", "solution", "answer"} <= set(g) for g in got),
             "each kept sample must be a dict with question, solution (the sample) and answer")
    _require(all(verify(g["solution"], g["answer"]) for g in got),
             "a kept sample fails the verifier: keep only samples with verify(sample, problem['answer']) true")
    _require(all(g["solution"] == g["solution"].strip() and g["solution"] for g in got),
             "strip each sample and drop empty ones")
    _require(not any(g["solution"] == "(gold, not to be used)" for g in got),
             "the solution must be the sampled text, not the problem's gold solution")
    if len(got) > len(want):
        raise CheckFailed("you kept duplicates: the same stripped text twice for one problem counts once")
    if len(got) < len(want):
        raise CheckFailed(f"you kept {len(got)} samples but {len(want)} pass the verifier "
                          "(distinct after strip, per problem)")
    _require(got == want, "the kept samples are right but not in order: keep the problems' order and each problem's "
                          "samples in the order they were drawn")
    return f"{len(want)} of {sum(map(len, samples))} samples kept, as expected"
