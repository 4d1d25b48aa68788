"""anlp_ft.assignments.public.lab03 (chat tuning): each public check passes a right answer and fails a wrong one
with a message that says what to fix (fast: tokenizer only, one tiny model). The right answers come from the
solution notebook."""
import copy

import pytest

from anlp_ft.assignments.checks import CheckFailed
from anlp_ft.assignments.public import lab03
from anlp_ft.data.chat import follows_format, follows_rule, make_chats, recall_chats
from anlp_ft.evaluate import generate
from anlp_ft.formatting import IGNORE_INDEX, SMOLLM2_TEMPLATE, _chatml, training_template
from anlp_ft.formatting import encode_chat as package_encode_chat
from tests.conftest import solution_answers

SOL = solution_answers("03", IGNORE_INDEX=IGNORE_INDEX)
LLAMA3 = SOL.llama3_template()
encode_chat = SOL.build_chat_example


def test_lab03_expected_renderings_are_the_solutions(tokenizer):
    for name, messages in lab03.CASES.items():
        got = (tokenizer.apply_chat_template(messages, chat_template=LLAMA3, tokenize=False),
               tokenizer.apply_chat_template(messages[:-1], chat_template=LLAMA3, tokenize=False,
                                             add_generation_prompt=True))
        assert got == lab03.EXPECTED[name], f"EXPECTED[{name!r}] should be {got!r}"


def test_lab03_ex1_accepts_the_solution_and_explains_mistakes(tokenizer):
    lab03.ex1(SOL.llama3_template, tokenizer)
    no_bos = LLAMA3.replace("{{ '<|begin_of_text|>' }}", "")
    with pytest.raises(CheckFailed, match="begin_of_text"):
        lab03.ex1(lambda: no_bos, tokenizer)
    no_gen = LLAMA3.split("{% if")[0]
    with pytest.raises(CheckFailed, match="add_generation_prompt"):
        lab03.ex1(lambda: no_gen, tokenizer)
    with pytest.raises(CheckFailed, match="whitespace"):
        lab03.ex1(lambda: "\n" + LLAMA3, tokenizer)
    bos_per_message = LLAMA3.replace("{{ '<|begin_of_text|>' }}{% for message in messages %}",
                                     "{% for message in messages %}{{ '<|begin_of_text|>' }}")
    with pytest.raises(CheckFailed, match="once"):
        lab03.ex1(lambda: bos_per_message, tokenizer)


def test_lab03_ex2_accepts_the_solution_and_names_common_label_mistakes(tokenizer):
    assert "transformers' assistant mask" in lab03.ex2(encode_chat, tokenizer)

    def with_newline(tok, messages, assistant_only=True):
        out = encode_chat(tok, messages, assistant_only=assistant_only)
        labels = list(out["labels"])
        for i in range(1, len(labels)):
            if (labels[i - 1] == tok.eos_token_id and labels[i] == IGNORE_INDEX
                    and out["input_ids"][i - 1] == tok.eos_token_id):
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

    def no_end_of_turn(tok, messages, assistant_only=True):
        out = encode_chat(tok, messages, assistant_only=assistant_only)
        return {"input_ids": out["input_ids"],
                "labels": [IGNORE_INDEX if t == tok.eos_token_id else label
                           for t, label in zip(out["input_ids"], out["labels"])]}

    with pytest.raises(CheckFailed, match="end-of-turn token <\\|im_end\\|> must be labelled"):
        lab03.ex2(no_end_of_turn, tokenizer)

    def no_whole(tok, messages, assistant_only=True):
        return encode_chat(tok, messages)

    with pytest.raises(CheckFailed, match="assistant_only=False"):
        lab03.ex2(no_whole, tokenizer)


def test_lab03_ex2_refuses_labels_that_only_hold_for_smollm2s_template(tokenizer):
    # The course's own encoder, given SmolLM2's template marked, is right on SmolLM2 and nowhere else.
    def package(tok, messages, assistant_only=True):
        return package_encode_chat(tok, messages, chat_template=training_template(tok), assistant_only=assistant_only)

    with pytest.raises(CheckFailed, match="Qwen2's chat template .* raised ValueError"):
        lab03.ex2(package, tokenizer)

    def smollm2_text(tok, messages, assistant_only=True):
        return package_encode_chat(tok, messages, chat_template=SMOLLM2_TEMPLATE, assistant_only=assistant_only)

    with pytest.raises(CheckFailed, match="render with the tokenizer's own template"):
        lab03.ex2(smollm2_text, tokenizer)

    def fixed_offset(tok, messages, assistant_only=True):  # on Qwen2's template, each labelled run one token early
        out = encode_chat(tok, messages, assistant_only=assistant_only)
        if tok.chat_template != lab03.OTHER_TEMPLATE or not assistant_only:
            return out
        labels = out["labels"][1:] + [IGNORE_INDEX]
        return {"input_ids": out["input_ids"], "labels": [t if x != IGNORE_INDEX else x
                                                          for t, x in zip(out["input_ids"], labels)]}

    with pytest.raises(CheckFailed, match="labelled tokens read"):
        lab03.ex2(fixed_offset, tokenizer)


def test_lab03_other_template_is_labelled_the_same_by_transformers_mask(tokenizer):
    # The solution's labels on Qwen2's template equal transformers' from the same template with the replies marked.
    other = copy.deepcopy(tokenizer)
    other.chat_template = lab03.OTHER_TEMPLATE
    marked = _chatml("You are a helpful assistant.")
    for chat in make_chats(8, seed=3, multi_turn=0.5) + recall_chats(4, seed=3):
        for messages in (chat["messages"], [m for m in chat["messages"] if m["role"] != "system"]):
            assert encode_chat(other, messages) == package_encode_chat(other, messages, chat_template=marked)


def test_lab03_ex3_compares_with_greedy_generation(tokenizer, tiny_model):
    model = tiny_model

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
