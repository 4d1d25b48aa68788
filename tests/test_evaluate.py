"""anlp_ft.evaluate: batched and sampled generation, accuracy through a verifier, perplexity, KL between two
models."""
import copy
import math

import pytest
import torch

from anlp_ft.evaluate import EvalResult, accuracy, generate, kl_divergence, perplexity
from anlp_ft.formatting import encode_example, pad_batch


def test_batched_generation_matches_one_by_one(smollm, tokenizer):
    prompts = ["Question: What is 2 + 2?\nAnswer:", "The capital of Italy is", "1, 2, 3,"]
    batched = generate(smollm, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    single = [generate(smollm, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single  # left padding does not change what a row generates


def test_sampling_is_seeded_and_varied(smollm, tokenizer):
    kw = dict(max_new_tokens=8, do_sample=True, temperature=1.0, num_samples=4, seed=1)
    a = generate(smollm, tokenizer, ["Once upon a time"], **kw)
    assert a == generate(smollm, tokenizer, ["Once upon a time"], **kw)
    assert len(a[0]) == 4
    assert len(set(a[0])) > 1
    with pytest.raises(ValueError, match="needs do_sample=True"):
        generate(smollm, tokenizer, ["x"], num_samples=2)


def test_accuracy_grades_with_the_verifier(smollm, tokenizer):
    chats = [[{"role": "user", "content": "What is the capital of France?"}]] * 2
    result = accuracy(smollm, tokenizer, chats, ["Paris", "Berlin"], lambda out, ans: ans in out, max_new_tokens=12)
    assert result.correct == [True, False]
    assert result.accuracy == 0.5


def test_split_gives_each_prompt_set_its_own_result():
    result = EvalResult(0.5, [True, True, False, False, True, False], ["a", "b", "c", "d", "e", "f"])
    first, second, third = result.split(2)
    assert (first.accuracy, first.correct, first.outputs) == (1.0, [True, True], ["a", "b"])
    assert (second.accuracy, third.accuracy, third.outputs) == (0.0, 0.5, ["e", "f"])
    with pytest.raises(ValueError, match="size must divide"):
        result.split(4)


def test_perplexity_is_exp_of_the_loss(tiny_model, tokenizer):
    ex = encode_example(tokenizer, "Q:", " some response text")
    loss = tiny_model(**pad_batch([ex], tokenizer.pad_token_id)).loss
    ppl = perplexity(tiny_model, [ex], pad_token_id=tokenizer.pad_token_id)
    assert ppl == pytest.approx(math.exp(loss.item()), rel=1e-4)


def test_kl_is_zero_for_the_same_model_and_grows_with_change(tiny_model, tokenizer):
    texts = ["hello there", "What is 2 + 2?"]
    assert kl_divergence(tiny_model, tiny_model, tokenizer, texts) == pytest.approx(0.0, abs=1e-6)
    moved = copy.deepcopy(tiny_model)
    with torch.no_grad():
        moved.lm_head.weight.add_(0.5 * torch.randn_like(moved.lm_head.weight))
    assert kl_divergence(moved, tiny_model, tokenizer, texts) > 1e-3
