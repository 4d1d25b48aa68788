"""anlp_ft.formatting: prompt/response and chats to input_ids + labels (-100 on prompt and padding), the loss they
give, the lecture's Llama 3 chat template, padding and packing."""
import pytest
import torch
import torch.nn.functional as F

from anlp_ft.data.chat import make_chats
from anlp_ft.formatting import (
    IGNORE_INDEX,
    LLAMA3_CHAT_TEMPLATE,
    encode_chat,
    encode_example,
    pack_examples,
    pad_batch,
    plain_prompt,
    render_llama3,
)

LECTURE = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>")
SUA = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]


def test_prompt_is_masked_and_response_kept(tokenizer):
    prompt = plain_prompt("What is 2 + 3?")
    ex = encode_example(tokenizer, prompt, " The answer is 5.")
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert ex["input_ids"][-1] == tokenizer.eos_token_id  # the model learns to stop
    assert tokenizer.decode(ex["input_ids"][n_prompt:-1]) == " The answer is 5."


def test_padding_is_masked(tokenizer):
    a = encode_example(tokenizer, "Q:", " a b c d e f")
    b = encode_example(tokenizer, "Q:", " a")
    batch = pad_batch([a, b], tokenizer.pad_token_id)
    n = len(b["input_ids"])
    assert (batch["labels"][1, n:] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][1, n:] == 0).all()
    left = pad_batch([a, b], tokenizer.pad_token_id, side="left")
    assert left["input_ids"][1, -n:].tolist() == b["input_ids"]
    assert left["attention_mask"][1, 0] == 0


def test_model_loss_equals_cross_entropy_over_response_tokens(tiny_model, tokenizer):
    examples = [encode_example(tokenizer, plain_prompt(q), r) for q, r in
                [("What is 2 + 3?", " 5"), ("Sort 3, 1, 2.", " 1, 2, 3 and a longer tail")]]
    batch = pad_batch(examples, tokenizer.pad_token_id)
    loss = tiny_model(**batch).loss
    # By hand: position t predicts token t+1; keep only positions whose target is a response token.
    logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = logits[:, :-1].log_softmax(-1)
    targets = batch["input_ids"][:, 1:]
    keep = batch["labels"][:, 1:] != IGNORE_INDEX
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[keep]
    n_response = sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples)
    assert keep.sum() == n_response  # no prompt or padding token carries loss
    assert torch.allclose(loss, nll.mean(), atol=1e-5)
    # The same as PyTorch's cross-entropy over the shifted labels, whose -100 entries are ignored.
    assert torch.allclose(loss, F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:]), atol=1e-5)


def test_assistant_only_labels_on_a_multi_turn_chat(tokenizer):
    messages = next(c for c in make_chats(20, seed=0, multi_turn=1.0))["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    ex = encode_chat(tokenizer, messages)
    labelled = [i for i, label in zip(ex["input_ids"], ex["labels"]) if label != IGNORE_INDEX]
    end = tokenizer.eos_token  # ChatML's <|im_end|>
    assert tokenizer.decode(labelled) == messages[2]["content"] + end + messages[4]["content"] + end
    full = encode_chat(tokenizer, messages, assistant_only=False)
    assert full["labels"] == full["input_ids"]
    assert tokenizer.decode(ex["input_ids"]).startswith("<|im_start|>system\n" + messages[0]["content"])


def test_assistant_labels_do_not_depend_on_the_tokenizers_eos(tokenizer):
    """The base SmolLM2-135M's tokenizer (Colab's default model) has eos <|endoftext|>, not ChatML's <|im_end|>:
    each turn's labels still end at <|im_end|>, because only the layout after it (a newline) is trimmed."""
    import copy

    base_like = copy.deepcopy(tokenizer)
    base_like.eos_token = "<|endoftext|>"
    assert base_like.eos_token_id != tokenizer.eos_token_id
    messages = next(c for c in make_chats(20, seed=0, multi_turn=1.0))["messages"]
    assert encode_chat(base_like, messages) == encode_chat(tokenizer, messages)


def test_llama3_template_renders_the_lecture_format(tokenizer):
    assert render_llama3(SUA) == LECTURE
    assert tokenizer.apply_chat_template(SUA, chat_template=LLAMA3_CHAT_TEMPLATE, tokenize=False) == LECTURE
    prompt = tokenizer.apply_chat_template(SUA[:2], chat_template=LLAMA3_CHAT_TEMPLATE, tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == render_llama3(SUA[:2], add_generation_prompt=True)
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_bad_chats_and_long_examples_are_named(tokenizer):
    with pytest.raises(ValueError, match="unknown role 'narrator'"):
        encode_chat(tokenizer, [{"role": "narrator", "content": "Once"}, {"role": "assistant", "content": "upon"}])
    with pytest.raises(ValueError, match="no assistant turn"):
        encode_chat(tokenizer, [{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="longer than max_length=4"):
        encode_example(tokenizer, "a long prompt with many words", " yes", max_length=4)


def test_packing_keeps_every_token_within_the_limit(tokenizer):
    examples = [encode_example(tokenizer, plain_prompt(f"What is {i} + {i}?"), f" {2 * i}") for i in range(20)]
    packed = pack_examples(examples, max_length=64)
    assert len(packed) < len(examples)
    assert all(len(p["input_ids"]) <= 64 for p in packed)
    assert sum(len(p["input_ids"]) for p in packed) == sum(len(e["input_ids"]) for e in examples)
    assert [t for p in packed for t in p["labels"]] == [t for e in examples for t in e["labels"]]
