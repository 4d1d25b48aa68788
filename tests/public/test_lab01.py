"""anlp_ft.assignments.public.lab01 (fine-tuning basics): each public check passes a right answer (built from the
library and torch) and fails a plausible mistake with a message that names it."""
import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaModel

from anlp_ft.assignments.checks import CheckFailed
from anlp_ft.assignments.public import lab01
from anlp_ft.formatting import IGNORE_INDEX, encode_example
from anlp_ft.train import History


# ex1: input_ids and labels, prompt masked ----------------------------------------------------------------------------
def _tuple(tokenizer, prompt, response):
    ex = encode_example(tokenizer, prompt, response)
    return ex["input_ids"], ex["labels"]


def _no_eos(tokenizer, prompt, response):
    return encode_example(tokenizer, prompt, response, add_eos=False)


def _eos_not_labelled(tokenizer, prompt, response):
    ex = encode_example(tokenizer, prompt, response)
    return {"input_ids": ex["input_ids"], "labels": ex["labels"][:-1]}


def _prompt_not_masked(tokenizer, prompt, response):
    ex = encode_example(tokenizer, prompt, response)
    return {"input_ids": ex["input_ids"], "labels": list(ex["input_ids"])}


def _labels_shifted(tokenizer, prompt, response):
    ex = encode_example(tokenizer, prompt, response)
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return {"input_ids": ex["input_ids"], "labels": ex["labels"][:n] + ex["input_ids"][n + 1:] + [IGNORE_INDEX]}


def _with_bos(tokenizer, prompt, response):
    ex = encode_example(tokenizer, prompt, response)
    return {"input_ids": [tokenizer.bos_token_id] + ex["input_ids"], "labels": [IGNORE_INDEX] + ex["labels"]}


def test_lab01_ex1_accepts_encode_example(tokenizer):
    assert "prompt tokens masked" in lab01.ex1(encode_example, tokenizer)


@pytest.mark.parametrize("build, message", [
    (_tuple, "must return a dict with the keys 'input_ids' and 'labels'"),
    (_no_eos, "input_ids must end with tokenizer.eos_token_id"),
    (_eos_not_labelled, "they must line up one to one"),
    (_prompt_not_masked, r"labels \(the prompt\) must all be -100"),
    (_labels_shifted, "Do not shift them yourself"),
    (_with_bos, "tokenize prompt and response separately with add_special_tokens=False"),
], ids=["tuple", "no-eos", "eos-not-labelled", "prompt-not-masked", "labels-shifted", "extra-bos"])
def test_lab01_ex1_names_the_mistake(tokenizer, build, message):
    with pytest.raises(CheckFailed, match=message):
        lab01.ex1(build, tokenizer)


# ex2: cross-entropy over the response tokens -------------------------------------------------------------------------
def _torch_ce(logits, labels, **kw):
    """Cross-entropy of the shifted labels; torch ignores the -100 positions."""
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], **kw)


def test_lab01_ex2_accepts_torch_cross_entropy():
    assert "equals F.cross_entropy" in lab01.ex2(_torch_ce)


def _masked_but_divided_by_all(logits, labels):
    per_token = _torch_ce(logits, labels, reduction="none")
    return per_token.sum() / per_token.numel()


@pytest.mark.parametrize("loss, message", [
    (lambda logits, labels: F.cross_entropy(logits.transpose(1, 2), labels), "position t predict the token at t\\+1"),
    (lambda logits, labels: _torch_ce(logits, labels, reduction="sum"), "you returned the sum over the .* tokens"),
    (lambda logits, labels: _torch_ce(logits, labels.clamp(min=0)), "positions whose label is -100 .* must not count"),
    (lambda logits, labels: -_torch_ce(logits, labels), "the sign is wrong"),
    (lambda logits, labels: _torch_ce(logits, labels, reduction="none"), "must return a scalar tensor"),
    (_masked_but_divided_by_all, "expected .* on a random test case"),
], ids=["unshifted", "sum", "unmasked", "sign", "not-reduced", "mean-over-all-positions"])
def test_lab01_ex2_names_the_mistake(loss, message):
    with pytest.raises(CheckFailed, match=message):
        lab01.ex2(loss)


# ex3: the training loop ----------------------------------------------------------------------------------------------
def _loop(model, batches, optimizer, scheduler, zero_grad=True, step=True, schedule=True, item=True):
    model.train()
    losses = []
    for batch in batches:
        if zero_grad:
            optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        if step:
            optimizer.step()
        if schedule:
            scheduler.step()
        losses.append(loss.item() if item else loss)
    return losses


def test_lab01_ex3_accepts_the_lecture_loop():
    assert "same weights as the lecture's loop" in lab01.ex3(_loop)


@pytest.mark.parametrize("mistake, message", [
    ({"zero_grad": False}, "gradients accumulate across steps"),
    ({"schedule": False}, "the learning-rate schedule was stepped 0 times for 4 batches"),
    ({"item": False}, r"return plain floats \(loss.item\(\)\)"),
    ({"step": False}, r"the parameters did not change: call optimizer.step\(\)"),
], ids=["no-zero-grad", "no-scheduler-step", "tensors", "no-optimizer-step"])
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_lab01_ex3_names_the_mistake(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        lab01.ex3(lambda *args: _loop(*args, **mistake))


# ex4: fine-tuning on step-by-step arithmetic -------------------------------------------------------------------------
TRAINED = History(steps=[0, 1, 2, 3], loss=[2.0, 1.2, 0.7, 0.4])


def test_lab01_ex4_accepts_a_trained_model_above_the_floor():
    assert lab01.ex4(0.109, 0.781, TRAINED, floor=0.7) == "held-out accuracy 10.9% -> 78.1%"


@pytest.mark.parametrize("before, after, history, message", [
    (0.109, 0.781, None, "finetune must return the History that fit\\(\\) returns"),
    (0.109, 0.781, History(steps=[0, 1, 2, 3], loss=[2.0, 1.9, 1.8, 1.7]), "went from 2.000 to only 1.700"),
    (0.109, 0.5, TRAINED, "held-out accuracy after fine-tuning is 50.0%, below the 70% floor"),
], ids=["no-history", "loss-barely-falls", "below-floor"])
def test_lab01_ex4_names_the_mistake(before, after, history, message):
    with pytest.raises(CheckFailed, match=message):
        lab01.ex4(before, after, history, floor=0.7)


# ex5: the same configuration, random weights -------------------------------------------------------------------------
def _shares_layers(model):
    fresh = type(model)(model.config)
    fresh.model.layers = model.model.layers  # new embeddings, but the given model's decoder layers
    return fresh


def test_lab01_ex5_accepts_a_fresh_model_of_the_same_config():
    assert lab01.ex5(lambda model: type(model)(model.config)) == "same config and shapes, fresh random weights"


@pytest.mark.parametrize("random_init, message", [
    (lambda model: model, "must return a NEW model"),
    (copy.deepcopy, "the new model has the same weights as the given one"),
    (lambda model: LlamaModel(model.config), "expected a LlamaForCausalLM, got LlamaModel"),
    (_shares_layers, "shares weight tensors with the given one"),
], ids=["same-model", "deepcopy", "model-without-head", "shared-layers"])
def test_lab01_ex5_names_the_mistake(random_init, message):
    with pytest.raises(CheckFailed, match=message):
        lab01.ex5(random_init)


# ex6: the data-efficiency sweep --------------------------------------------------------------------------------------
SIZES = [16, 64, 256]
PRETRAINED, RANDOM = [1.49, 1.2, 1.05], [4.35, 3.9, 3.1]


def test_lab01_ex6_accepts_a_pretrained_model_winning_at_every_size():
    assert lab01.ex6(SIZES, PRETRAINED, RANDOM).startswith("pre-trained wins at every size: 16: 1.49 vs 4.35")


@pytest.mark.parametrize("pretrained, random, message", [
    (PRETRAINED[:2], RANDOM, r"pretrained: expected one held-out loss per size \(3\), got 2"),
    (PRETRAINED, [torch.tensor(x) for x in RANDOM], "random: held-out losses must be finite floats"),
    ([2.718 ** x for x in PRETRAINED], [2.718 ** x for x in RANDOM], "below that of guessing uniformly"),
    ([1.49, 1.2, 3.5], RANDOM, r"does not win at sizes \[256\]"),
], ids=["one-size-missing", "tensors", "perplexity-not-loss", "loses-at-one-size"])
def test_lab01_ex6_names_the_mistake(pretrained, random, message):
    with pytest.raises(CheckFailed, match=message):
        lab01.ex6(SIZES, pretrained, random)


# ex7: KL(P || Q) -----------------------------------------------------------------------------------------------------
def _torch_kl(logits_p, logits_q, mask, reduce=True, swap=False, masked=True):
    """KL(P || Q) per position with torch's kl_div(input=log q, target=log p)."""
    logp, logq = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
    if swap:
        logp, logq = logq, logp
    per_position = F.kl_div(logq, logp, log_target=True, reduction="none").sum(-1)
    if not reduce:
        return per_position
    return per_position[mask].mean() if masked else per_position.mean()


def test_lab01_ex7_accepts_torch_kl_div():
    assert "equals the reference KL(P || Q)" in lab01.ex7(_torch_kl)


@pytest.mark.parametrize("mistake, message", [
    ({"swap": True}, r"you computed KL\(Q \|\| P\)"),
    ({"masked": False}, "positions where mask is False .* must not count"),
    ({"reduce": False}, "must return a scalar tensor"),
], ids=["reversed", "unmasked", "not-reduced"])
def test_lab01_ex7_names_the_mistake(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        lab01.ex7(lambda p, q, m: _torch_kl(p, q, m, **mistake))


def test_lab01_ex7_names_a_sum_over_positions():
    with pytest.raises(CheckFailed, match="you returned the sum over positions"):
        lab01.ex7(lambda p, q, m: _torch_kl(p, q, m, reduce=False)[m].sum())
