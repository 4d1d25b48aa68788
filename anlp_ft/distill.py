"""Knowledge distillation plumbing: the token-level KD loss (reference version), a loss_fn for train.fit that
distils a teacher's next-token distributions into a student, teacher generations for sequence-level KD,
sampling k solutions per problem and keeping those a verifier accepts (the augmented teacher), and
generation speed.

The notebooks write the KD loss themselves; this reference version is what the checks and tests compare with.
"""
from __future__ import annotations

import time
from typing import Callable, Literal, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .evaluate import generate
from .formatting import IGNORE_INDEX, encode_example, pad_batch, plain_prompt

Direction = Literal["forward", "reverse"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, *,
            temperature: float = 1.0, direction: Direction = "forward") -> torch.Tensor:
    """T^2 times the mean over masked positions of a KL between the temperature-softened distributions.

    forward: KL(teacher || student) = sum_v p_T(v) (log p_T(v) - log q_T(v)), mode-covering (Hinton et al. 2015);
    reverse: KL(student || teacher), mode-seeking. Logits (B, T, V) at the same positions; mask (B, T).
    The T^2 factor keeps gradient sizes comparable across temperatures (soft-target gradients scale as 1/T^2).
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_q = (student_logits.float() / temperature).log_softmax(-1)
    log_p = (teacher_logits.float() / temperature).log_softmax(-1)
    if direction == "forward":
        per_position = (log_p.exp() * (log_p - log_q)).sum(-1)
    else:
        per_position = (log_q.exp() * (log_q - log_p)).sum(-1)
    mask = mask.bool()
    if not mask.any():
        raise ValueError("the mask selects no position: there is nothing to distil")
    return temperature**2 * per_position[mask].mean()


def response_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, T-1) mask of the positions whose next token is a response token: logits[:, :-1] predict labels[:, 1:]."""
    return labels[:, 1:] != IGNORE_INDEX


def token_kd_loss_fn(teacher: PreTrainedModel, *, temperature: float = 2.0,
                     direction: Direction = "forward") -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """A loss_fn for train.fit: the student matches the (frozen) teacher's next-token distributions on the
    response tokens of each batch (the reference implementation of the lab's exercise)."""
    teacher.eval()

    def loss_fn(student: torch.nn.Module, batch: dict) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits[:, :-1]
        student_logits = student(**inputs).logits[:, :-1]
        return kd_loss(student_logits, teacher_logits, response_positions(batch["labels"]),
                       temperature=temperature, direction=direction)

    return loss_fn


def teacher_examples(teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], *,
                     max_new_tokens: int = 40, batch_size: int = 64) -> tuple[list[dict], list[str]]:
    """Sequence-level KD data: the teacher's greedy answers to the questions, encoded as (plain prompt,
    " " + answer) training examples. Returns (examples, answers); empty answers are dropped from the examples."""
    prompts = [plain_prompt(q) for q in questions]
    answers = generate(teacher, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    examples = [encode_example(tokenizer, p, " " + a.strip()) for p, a in zip(prompts, answers) if a.strip()]
    return examples, answers


def sample_solutions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], *,
                     k: int, temperature: float = 0.8, max_new_tokens: int = 40, batch_size: int = 32,
                     seed: int = 0) -> list[list[str]]:
    """k sampled answers per question (plain prompt), one list per question."""
    prompts = [plain_prompt(q) for q in questions]
    if k == 1:
        out = generate(model, tokenizer, prompts, do_sample=True, temperature=temperature,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
        return [[o] for o in out]
    return generate(model, tokenizer, prompts, do_sample=True, temperature=temperature, num_samples=k,
                    max_new_tokens=max_new_tokens, batch_size=max(1, batch_size // k), seed=seed)


def keep_verified(problems: Sequence[dict], samples: Sequence[Sequence[str]],
                  verify: Callable[[str, str], bool], *, per_problem: int | None = None) -> list[dict]:
    """The augmented teacher's data: {question, solution, answer} for each sample the verifier accepts
    (duplicates of the same text dropped; at most per_problem per problem)."""
    if len(problems) != len(samples):
        raise ValueError(f"{len(problems)} problems but {len(samples)} lists of samples")
    kept = []
    for problem, outs in zip(problems, samples):
        seen: set[str] = set()
        for text in outs:
            text = text.strip()
            if text and text not in seen and verify(text, problem["answer"]):
                seen.add(text)
                kept.append({"question": problem["question"], "solution": text, "answer": problem["answer"]})
                if per_problem is not None and len(seen) >= per_problem:
                    break
    return kept


@torch.no_grad()
def generation_tokens_per_s(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
                            new_tokens: int = 32, repeats: int = 1) -> float:
    """Greedy decoding throughput: exactly new_tokens per prompt (end of sequence ignored), in one batch;
    the best of `repeats` runs, after one warm-up token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = pad_batch([{"input_ids": tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts],
                      pad, side="left")
    batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
    was_training = model.training
    model.eval()

    def run(n: int) -> None:
        model.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)

    run(1)
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        tic = time.perf_counter()
        run(new_tokens)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - tic)
    model.train(was_training)
    return len(prompts) * new_tokens / best
