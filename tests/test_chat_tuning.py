"""anlp_ft.chat_tuning and the public checks of lab 03 (fast: tokenizer only, one tiny model)."""
import pytest
import torch
from transformers import LlamaForCausalLM

from anlp_ft.assignments.checks import CheckFailed
from anlp_ft.assignments.public import lab03
from anlp_ft.data.chat import follows_format, recall_chats, without_earlier_turns
from anlp_ft.formatting import LLAMA3_CHAT_TEMPLATE, render_llama3
from anlp_ft.data.chat import RULES, follows_rule, make_chats, validate_messages
from anlp_ft.evaluate import generate
from anlp_ft.formatting import IGNORE_INDEX, encode_chat

from conftest import tiny_config

LECTURE = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>")
SUA = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]


def test_llama3_template_renders_the_lecture_format(tokenizer):
    assert render_llama3(SUA) == LECTURE
    assert tokenizer.apply_chat_template(SUA, chat_template=LLAMA3_CHAT_TEMPLATE, tokenize=False) == LECTURE
    prompt = tokenizer.apply_chat_template(SUA[:2], chat_template=LLAMA3_CHAT_TEMPLATE, tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == render_llama3(SUA[:2], add_generation_prompt=True)
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize("rule", list(RULES))
def test_follows_format_accepts_the_rules_own_replies_and_rejects_plain_text(rule):
    assert follows_format(RULES[rule].render("Paris"), rule)
    assert follows_format(RULES[rule].render("42"), rule)
    assert not follows_format("The capital of France is Paris.", rule)


def test_follows_format_ignores_correctness_and_rejects_unknown_rules():
    assert follows_format('{"answer": "wrong"}', "json") and not follows_rule('{"answer": "wrong"}', "json", "7")
    assert not follows_format('{"answer": 1, "why": 2}', "json")
    assert not follows_format("12 + 5", "bare")
    with pytest.raises(ValueError, match="unknown rule"):
        follows_format("x", "shout")


def test_recall_chats_put_the_answer_only_in_the_earlier_turn():
    chats = recall_chats(12, seed=0)
    assert chats == recall_chats(12, seed=0)
    for c in chats:
        validate_messages(c["messages"])
        assert [m["role"] for m in c["messages"]] == ["system", "user", "assistant", "user", "assistant"]
        assert c["answer"] in c["messages"][1]["content"]
        assert follows_rule(c["messages"][-1]["content"], c["rule"], c["answer"])
        control = without_earlier_turns(c["messages"][:-1])
        assert [m["role"] for m in control] == ["system", "user"]
        assert all(c["answer"] not in m["content"] for m in control)


def _reference_builder(tokenizer, messages, assistant_only=True):
    return encode_chat(tokenizer, messages, assistant_only=assistant_only)


def test_lab03_ex1_accepts_the_library_template_and_explains_mistakes(tokenizer):
    lab03.ex1(lambda: LLAMA3_CHAT_TEMPLATE, tokenizer)
    no_bos = LLAMA3_CHAT_TEMPLATE.replace("{{ '<|begin_of_text|>' }}", "")
    with pytest.raises(CheckFailed, match="begin_of_text"):
        lab03.ex1(lambda: no_bos, tokenizer)
    no_gen = LLAMA3_CHAT_TEMPLATE.split("{% if")[0]
    with pytest.raises(CheckFailed, match="add_generation_prompt"):
        lab03.ex1(lambda: no_gen, tokenizer)
    with pytest.raises(CheckFailed, match="whitespace"):
        lab03.ex1(lambda: "\n" + LLAMA3_CHAT_TEMPLATE, tokenizer)


def test_lab03_ex2_accepts_encode_chat_and_names_common_label_mistakes(tokenizer):
    lab03.ex2(_reference_builder, tokenizer)

    def with_newline(tok, messages, assistant_only=True):
        out = encode_chat(tok, messages, assistant_only=assistant_only)
        labels = list(out["labels"])
        for i in range(1, len(labels)):
            if labels[i - 1] == tok.eos_token_id and labels[i] == IGNORE_INDEX and out["input_ids"][i - 1] == tok.eos_token_id:
                labels[i] = out["input_ids"][i]
        return {"input_ids": out["input_ids"], "labels": labels}

    with pytest.raises(CheckFailed, match="newline"):
        lab03.ex2(with_newline, tokenizer)

    def last_turn_only(tok, messages, assistant_only=True):
        out = encode_chat(tok, messages, assistant_only=assistant_only)
        if not assistant_only:
            return out
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        start = len(tok(tok.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True),
                        add_special_tokens=False)["input_ids"])
        return {"input_ids": out["input_ids"], "labels": [IGNORE_INDEX] * start + out["labels"][start:]}

    with pytest.raises(CheckFailed, match="every assistant turn"):
        lab03.ex2(last_turn_only, tokenizer)

    def no_whole(tok, messages, assistant_only=True):
        return encode_chat(tok, messages)

    with pytest.raises(CheckFailed, match="assistant_only=False"):
        lab03.ex2(no_whole, tokenizer)


def test_lab03_ex3_compares_with_greedy_generation(tokenizer):
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config()).eval()

    def right(m, chats):
        outs = generate(m, tokenizer, [c["messages"][:-1] for c in chats], max_new_tokens=3)
        return {"adherence": sum(follows_format(o, c["rule"]) for o, c in zip(outs, chats)) / len(chats),
                "accuracy": sum(follows_rule(o, c["rule"], c["answer"]) for o, c in zip(outs, chats)) / len(chats),
                "outputs": outs}

    lab03.ex3(right, model, tokenizer, n=3, max_new_tokens=3)

    def one_short(m, chats):
        return {**right(m, chats[:-1]), "adherence": 0.0}

    with pytest.raises(CheckFailed, match="one output per chat"):
        lab03.ex3(one_short, model, tokenizer, n=3, max_new_tokens=3)

    def wrong_rate(m, chats):
        out = right(m, chats)
        return {**out, "adherence": out["adherence"] + 0.5}

    with pytest.raises(CheckFailed, match="follows_format"):
        lab03.ex3(wrong_rate, model, tokenizer, n=3, max_new_tokens=3)


def test_lab03_ex4_needs_the_target():
    class H:
        loss = [2.0, 0.2]
        final_loss = 0.2

    assert "96.0%" in lab03.ex4(H(), 0.0, 0.96)
    with pytest.raises(CheckFailed, match="target"):
        lab03.ex4(H(), 0.0, 0.9)
