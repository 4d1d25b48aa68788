"""Knowledge distillation plumbing: sampling k solutions per problem for the augmented teacher, and generation speed.

The KD loss, the loss_fn that distils a teacher into a student, the sequence-level KD data and the verified-sample
filter are lab 04's exercises: their reference versions live only in solutions/04_knowledge_distillation.ipynb.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .evaluate import generate
from .formatting import pad_batch, plain_prompt


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
