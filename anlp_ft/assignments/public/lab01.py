"""Public checks for lab 01, fine-tuning basics (labs/01_finetuning_basics.ipynb).

Each function checks one exercise and raises CheckFailed with what to fix; a returned string is shown
after the tick. The checks use small random tensors and a tiny model, so they run in a second.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from ...formatting import IGNORE_INDEX, encode_example, plain_prompt
from ..checks import CheckFailed
from ..checks import require as _require

__all__ = ["ex1", "ex2", "ex3", "ex4", "ex5", "ex6", "ex7"]


# ex1: input_ids and labels with the prompt masked ------------------------------------------------------------
def ex1(build_example, tokenizer, prompt: str | None = None, response: str | None = None) -> str:
    prompt = prompt or plain_prompt("What is 23 + 45?")
    response = response or " Let's think step-by-step. 23 + 40 = 63. 63 + 5 = 68. The answer is 68."
    got = build_example(tokenizer, prompt, response)
    want = encode_example(tokenizer, prompt, response)
    _require(isinstance(got, dict) and {"input_ids", "labels"} <= set(got),
             "build_example must return a dict with the keys 'input_ids' and 'labels'")
    ids, labels = list(got["input_ids"]), list(got["labels"])
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    _require(len(ids) == len(labels),
             f"input_ids has {len(ids)} tokens but labels has {len(labels)}: they must line up one to one")
    _require(ids[-1] == tokenizer.eos_token_id,
             "input_ids must end with tokenizer.eos_token_id, so the model learns where the response stops")
    _require(ids == want["input_ids"],
             "input_ids must be the prompt's tokens followed by the response's tokens and eos; tokenize prompt and "
             "response separately with add_special_tokens=False and concatenate")
    _require(all(x == IGNORE_INDEX for x in labels[:n_prompt]),
             f"the first {n_prompt} labels (the prompt) must all be -100, so the loss ignores the prompt")
    _require(labels[n_prompt:] == ids[n_prompt:],
             "after the prompt, labels must copy input_ids (response tokens and eos): those are what the loss "
             "trains on. Do not shift them yourself; the model shifts labels by one position")
    return f"{n_prompt} prompt tokens masked, {len(ids) - n_prompt} response tokens trained on"


# ex2: cross-entropy by hand over the response tokens ---------------------------------------------------------
def _reference_ce(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX)


def _random_case(seed: int, batch=2, length=9, vocab=13):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=g) * 2
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[0, :4] = IGNORE_INDEX  # a prompt
    labels[1, :2] = IGNORE_INDEX
    labels[1, -3:] = IGNORE_INDEX  # padding
    return logits, labels


def ex2(response_cross_entropy, seed: int = 0) -> str:
    logits, labels = _random_case(seed)
    got = response_cross_entropy(logits.clone(), labels.clone())
    _require(torch.is_tensor(got) and got.numel() == 1,
             "response_cross_entropy must return a scalar tensor (one number: the mean over response tokens)")
    got = got.float().reshape(())
    want = _reference_ce(logits, labels)
    if torch.allclose(got, want, atol=1e-4):
        return f"{got.item():.4f} equals F.cross_entropy over the shifted, unmasked positions"
    mask = labels[:, 1:] != IGNORE_INDEX
    n = int(mask.sum())
    unshifted = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    if torch.allclose(got, unshifted, atol=1e-4):
        raise CheckFailed("the logits at position t predict the token at t+1: compare logits[:, :-1] with "
                          "labels[:, 1:] (you compared each position with its own token)")
    if torch.allclose(got, want * n, atol=1e-3):
        raise CheckFailed(f"you returned the sum over the {n} response tokens; return their mean")
    all_pos = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].clamp(min=0).reshape(-1))
    if torch.allclose(got, all_pos, atol=1e-4):
        raise CheckFailed("positions whose label is -100 (prompt, padding) must not count: mask them out of both "
                          "the sum and the count")
    if torch.allclose(got, -want, atol=1e-4):
        raise CheckFailed("the sign is wrong: cross-entropy is the NEGATIVE mean log-probability of the labels")
    raise CheckFailed(f"expected {want.item():.4f} on a random test case, got {got.item():.4f}: take log_softmax "
                      "over the vocabulary, pick the label's log-probability at each shifted position, and average "
                      "-log p over the positions whose label is not -100")


# ex3: the training loop ---------------------------------------------------------------------------------------
def _tiny_setup(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                         tie_word_embeddings=True, pad_token_id=0, eos_token_id=0)
    model = LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(4):
        ids = torch.randint(1, 50, (3, 10), generator=g)
        labels = ids.clone()
        labels[:, :4] = IGNORE_INDEX
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return model, batches


def _optim(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    return optimizer, scheduler


def _reference_loop(model, batches, optimizer, scheduler, zero_grad=True, schedule=True):
    model.train()
    for batch in batches:
        if zero_grad:
            optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if schedule:
            scheduler.step()


def _same(a, b) -> bool:
    return all(torch.allclose(p, q, atol=1e-5) for p, q in zip(a.parameters(), b.parameters()))


def ex3(train_loop, seed: int = 0) -> str:
    model, batches = _tiny_setup(seed)
    start = copy.deepcopy(model)
    optimizer, scheduler = _optim(model)
    losses = train_loop(model, batches, optimizer, scheduler)
    _require(isinstance(losses, (list, tuple)) and len(losses) == len(batches),
             f"train_loop must return a list with one loss per batch ({len(batches)} batches), got {losses!r}")
    _require(all(isinstance(x, float) for x in losses),
             "return plain floats (loss.item()), not tensors: a list of tensors keeps every step's graph alive")
    _require(not _same(model, start), "the parameters did not change: call optimizer.step() after loss.backward()")
    _require(scheduler.last_epoch == len(batches),
             f"the learning-rate schedule was stepped {scheduler.last_epoch} times for {len(batches)} batches: call "
             "scheduler.step() once per optimizer step")
    variants = {}
    for name, kwargs in {"ok": {}, "no_zero": {"zero_grad": False}}.items():
        ref = copy.deepcopy(start)
        _reference_loop(ref, batches, *_optim(ref), **kwargs)
        variants[name] = ref
    if _same(model, variants["no_zero"]) and not _same(model, variants["ok"]):
        raise CheckFailed("gradients accumulate across steps: call optimizer.zero_grad() once per batch, before "
                          "loss.backward()")
    _require(_same(model, variants["ok"]),
             "after 4 steps the weights differ from those of the lecture's loop (zero_grad, forward, loss.backward(), "
             "optimizer.step(), scheduler.step() per batch); use model(**batch).loss as the loss")
    return "4 steps on a tiny model give the same weights as the lecture's loop"


# ex4: fine-tuning on step-by-step arithmetic ------------------------------------------------------------------
def ex4(before: float, after: float, history, *, floor: float) -> str:
    _require(history is not None and len(getattr(history, "loss", [])) > 1,
             "finetune must return the History that fit() returns (it records the loss of each step)")
    first, last = history.loss[0], history.final_loss
    _require(last < first / 2, f"the training loss went from {first:.3f} to only {last:.3f}: check that labels mask "
                               "only the prompt and that the learning rate and number of steps are the ones given")
    _require(after >= floor, f"held-out accuracy after fine-tuning is {after:.1%}, below the {floor:.0%} floor "
                             f"(before: {before:.1%}): train on the step-by-step solutions (' ' + solution), with "
                             "the plain prompt, for the given steps and learning rate")
    return f"held-out accuracy {before:.1%} -> {after:.1%}"


# ex5: random initialisation with the same config -------------------------------------------------------------
def ex5(random_init) -> str:
    model, _ = _tiny_setup(0)
    fresh = random_init(model)
    _require(isinstance(fresh, torch.nn.Module), "random_init must return a model (a torch.nn.Module)")
    _require(fresh is not model, "random_init must return a NEW model, not the one it was given")
    _require(type(fresh) is type(model), f"expected a {type(model).__name__}, got {type(fresh).__name__}: build the "
                                         "same class from model.config")
    shapes = [tuple(p.shape) for p in model.parameters()]
    _require([tuple(p.shape) for p in fresh.parameters()] == shapes,
             "the new model's parameter shapes differ: build it from the same config (type(model)(model.config))")
    _require(all(p.data_ptr() != q.data_ptr() for p, q in zip(fresh.parameters(), model.parameters())),
             "the new model shares weight tensors with the given one: do not copy or reuse its parameters")
    _require(not _same(fresh, model), "the new model has the same weights as the given one; it must be freshly "
                                      "(randomly) initialised")
    return "same config and shapes, fresh random weights"


# ex6: the data-efficiency sweep --------------------------------------------------------------------------------
def ex6(sizes, pretrained_losses, random_losses) -> str:
    sizes = list(sizes)
    for name, losses in (("pretrained", pretrained_losses), ("random", random_losses)):
        _require(len(losses) == len(sizes), f"{name}: expected one held-out loss per size ({len(sizes)}), "
                                            f"got {len(losses)}")
        _require(all(isinstance(x, float) and math.isfinite(x) for x in losses),
                 f"{name}: held-out losses must be finite floats, got {losses}")
    _require(all(x < math.log(50_000) * 1.2 for x in random_losses),
             "a random model's held-out loss should fall below that of guessing uniformly (ln 49152 = 10.8) once "
             "trained: is the model trained before it is measured?")
    losing = [n for n, p, r in zip(sizes, pretrained_losses, random_losses) if not p < r]
    _require(not losing, f"the pre-trained model does not win at sizes {losing}: both models must be trained the "
                         "same way on the same examples and measured on the same held-out set")
    return "pre-trained wins at every size: " + ", ".join(f"{n}: {p:.2f} vs {r:.2f}" for n, p, r in
                                                         zip(sizes, pretrained_losses, random_losses))


# ex7: KL(P || Q) by hand ------------------------------------------------------------------------------------
def ex7(token_kl, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(seed)
    logits_p, logits_q = torch.randn(2, 6, 11, generator=g) * 2, torch.randn(2, 6, 11, generator=g) * 2
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, -2:] = False
    got = token_kl(logits_p.clone(), logits_q.clone(), mask.clone())
    _require(torch.is_tensor(got) and got.numel() == 1, "token_kl must return a scalar tensor (the mean over "
                                                        "positions)")
    got = got.float().reshape(())
    logp, logq = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
    per_pos = (logp.exp() * (logp - logq)).sum(-1)
    want = per_pos[mask].mean()
    if torch.allclose(got, want, atol=1e-4):
        same = token_kl(logits_p, logits_p.clone(), mask).float().abs().item()
        _require(same < 1e-5, f"KL(P || P) must be 0, got {same:.4g}")
        return f"{got.item():.4f} equals the reference KL(P || Q)"
    reverse = (logq.exp() * (logq - logp)).sum(-1)[mask].mean()
    if torch.allclose(got, reverse, atol=1e-4):
        raise CheckFailed("you computed KL(Q || P): the expectation is under P (the fine-tuned model): "
                          "sum_v p(v) (log p(v) - log q(v))")
    if torch.allclose(got, per_pos.mean(), atol=1e-4):
        raise CheckFailed("positions where mask is False (padding) must not count: average over mask only")
    if torch.allclose(got, per_pos[mask].sum(), atol=1e-3):
        raise CheckFailed("you returned the sum over positions; return the mean over the masked positions")
    raise CheckFailed(f"expected {want.item():.4f} on a random test case, got {got.item():.4f}: use log_softmax of "
                      "both logits, sum p * (log p - log q) over the vocabulary, then average over masked positions")
