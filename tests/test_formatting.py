"""anlp_ft.formatting: prompt/response and chats to input_ids + labels (-100 on prompt and padding), the loss they
give, the marked chat templates, padding and packing."""
import copy

import pytest
import torch
import torch.nn.functional as F

from anlp_ft.data.chat import make_chats, recall_chats
from anlp_ft.formatting import (
    CHATML_TEMPLATE,
    IGNORE_INDEX,
    SMOLLM2_TEMPLATE,
    encode_chat,
    encode_example,
    pack_examples,
    pad_batch,
    plain_prompt,
    training_template,
)
from tests.conftest import solution_answers


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
    ex = encode_chat(tokenizer, messages, chat_template=training_template(tokenizer))
    labelled = [i for i, label in zip(ex["input_ids"], ex["labels"]) if label != IGNORE_INDEX]
    end = tokenizer.eos_token  # ChatML's <|im_end|>
    assert tokenizer.decode(labelled) == messages[2]["content"] + end + messages[4]["content"] + end
    full = encode_chat(tokenizer, messages, assistant_only=False)
    assert full["labels"] == full["input_ids"] == ex["input_ids"]
    text = tokenizer.apply_chat_template(messages, tokenize=False)  # the tokenizer's own template, unmarked
    assert ex["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_the_marked_templates_render_what_the_tokenizer_does(tokenizer):
    """SmolLM2's template is found to render like its marked copy, default system prompt included; an unmarked
    template is refused for assistant-only labels, with the fix named."""
    assert training_template(tokenizer) == SMOLLM2_TEMPLATE
    chats = [c["messages"] for c in make_chats(30, seed=1, multi_turn=0.5)]
    for messages in chats + [m[1:] for m in chats]:  # with and without a system message
        for n, generation in ((len(messages), False), (len(messages) - 1, True)):
            kwargs = dict(tokenize=False, add_generation_prompt=generation)
            assert (tokenizer.apply_chat_template(messages[:n], chat_template=SMOLLM2_TEMPLATE, **kwargs)
                    == tokenizer.apply_chat_template(messages[:n], **kwargs))
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = CHATML_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert training_template(plain) == CHATML_TEMPLATE
    with pytest.raises(ValueError, match=r"does not mark the assistant's turns .*training_template"):
        encode_chat(tokenizer, chats[0])
    other = copy.deepcopy(tokenizer)
    other.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    with pytest.raises(ValueError, match="renders differently from ChatML"):
        training_template(other)


def test_lab03s_prefix_rendering_agrees_with_transformers_assistant_mask(tokenizer):
    """The lab's way (exercise 2: render the chat up to and through each assistant turn) and the library's
    (return_assistant_tokens_mask on the marked template) label the same tokens, on 1- to 3-turn chats, chats
    without a system message, and with a tokenizer whose eos is the base SmolLM2's <|endoftext|>."""
    build_chat_example = solution_answers("03", IGNORE_INDEX=IGNORE_INDEX).build_chat_example
    base_like = copy.deepcopy(tokenizer)
    base_like.eos_token = "<|endoftext|>"
    assert base_like.eos_token_id != tokenizer.eos_token_id
    chats = [c["messages"] for c in make_chats(40, seed=2, multi_turn=0.5) + recall_chats(10, seed=3)]
    chats += [m[1:] for m in chats[:10]]
    assert {sum(m["role"] == "assistant" for m in c) for c in chats} >= {1, 2}
    for tok in (tokenizer, base_like):
        template = training_template(tok)
        for messages in chats:
            assert build_chat_example(tok, messages) == encode_chat(tok, messages, chat_template=template)
            assert (build_chat_example(tok, messages, assistant_only=False)
                    == encode_chat(tok, messages, assistant_only=False))


def test_bad_chats_and_long_examples_are_named(tokenizer):
    with pytest.raises(ValueError, match="unknown role 'narrator'"):
        encode_chat(tokenizer, [{"role": "narrator", "content": "Once"}, {"role": "assistant", "content": "upon"}],
                    chat_template=SMOLLM2_TEMPLATE)
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
