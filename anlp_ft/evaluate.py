"""Measuring a model: batched generation, task accuracy through verifiers, perplexity, and the KL divergence
between two models' next-token distributions (how far fine-tuning moved a model)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .formatting import IGNORE_INDEX, chat_prompt_ids, pad_batch

Prompt = str | list[dict]  # plain text, or a chat (messages) to continue as the assistant


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return chat_prompt_ids(tokenizer, prompt)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> list[str] | list[list[str]]:
    """Continue each prompt (greedy by default; sampled with do_sample) and return only the new text.

    Prompts are left-padded so that every row's next token sits in the last column. With num_samples > 1,
    each prompt gets a list of that many samples.
    """
    if num_samples > 1 and not do_sample:
        raise ValueError("num_samples > 1 needs do_sample=True: greedy decoding gives the same text every time")
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    encoded = [{"input_ids": _prompt_ids(tokenizer, p)} for p in prompts]
    outputs: list[str] = []
    starts = range(0, len(encoded), batch_size)
    for start in tqdm(starts, desc="generating", disable=not progress):
        batch = pad_batch(encoded[start: start + batch_size], pad, side="left")
        batch = {k: v.to(_device(model)) for k, v in batch.items()}
        sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=do_sample,
                             num_return_sequences=num_samples, pad_token_id=pad, eos_token_id=eos,
                             top_k=None, **sampling)
        new = out[:, batch["input_ids"].shape[1]:]
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    model.train(was_training)
    if num_samples > 1:
        return [outputs[i: i + num_samples] for i in range(0, len(outputs), num_samples)]
    return outputs


@dataclass
class EvalResult:
    accuracy: float
    correct: list[bool]
    outputs: list[str]

    @property
    def n(self) -> int:
        return len(self.correct)

    def split(self, size: int) -> list[EvalResult]:
        """Consecutive parts of `size` prompts each: the results of several prompt sets evaluated in one call (one
        generation batch instead of one per set)."""
        if size <= 0 or self.n % size:
            raise ValueError(f"cannot split {self.n} results into parts of {size}: size must divide the count")
        return [EvalResult(sum(self.correct[i: i + size]) / size, self.correct[i: i + size], self.outputs[i: i + size])
                for i in range(0, self.n, size)]

    def __repr__(self) -> str:
        return f"EvalResult(accuracy={self.accuracy:.3f}, n={self.n})"


def accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    verify: Callable[[str, str], bool],
    **generate_kwargs,
) -> EvalResult:
    """Greedy-generate an answer to each prompt and grade it with verify(output, answer)."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        raise ValueError("no prompts to evaluate")
    outputs = generate(model, tokenizer, prompts, **generate_kwargs)
    correct = [bool(verify(o, a)) for o, a in zip(outputs, answers)]
    return EvalResult(sum(correct) / len(correct), correct, outputs)


@torch.no_grad()
def perplexity(model: PreTrainedModel, examples: Sequence[dict], *, pad_token_id: int, batch_size: int = 16) -> float:
    """exp(mean cross-entropy) over the labelled tokens of encoded examples (input_ids, labels)."""
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        padded = pad_batch(examples[start: start + batch_size], pad_token_id)
        batch = {k: v.to(_device(model)) for k, v in padded.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="sum")
        total, count = total + nll.item(), count + int((labels != IGNORE_INDEX).sum())
    if count == 0:
        raise ValueError("no labelled tokens: perplexity needs examples with labels other than -100")
    return math.exp(total / count)


@torch.no_grad()
def kl_divergence(
    model_p: PreTrainedModel,
    model_q: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[Prompt],
    *,
    batch_size: int = 16,
) -> float:
    """Mean over every token position of KL(P || Q) between the two models' next-token distributions on the
    given texts: 0 for identical models; how far fine-tuning moved P away from the pre-trained Q."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [{"input_ids": _prompt_ids(tokenizer, t)} for t in texts]
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = pad_batch(encoded[start: start + batch_size], pad)
        mask = batch["attention_mask"].bool()
        logp = model_p(**{k: v.to(_device(model_p)) for k, v in batch.items()}).logits.float().log_softmax(-1).cpu()
        logq = model_q(**{k: v.to(_device(model_q)) for k, v in batch.items()}).logits.float().log_softmax(-1).cpu()
        kl = (logp.exp() * (logp - logq)).sum(-1)
        total, count = total + kl[mask].sum().item(), count + int(mask.sum())
    return total / count
