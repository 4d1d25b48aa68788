"""anlp_ft.data.chat: chats whose replies follow their system prompt's rule, the rule and format verifiers,
multi-turn recall chats and their control without the earlier turns, and message validation."""
import pytest

from anlp_ft.data import chat
from anlp_ft.data.chat import (
    RULES,
    follows_format,
    follows_rule,
    recall_chats,
    validate_messages,
    without_earlier_turns,
)


def test_chats_follow_their_rules_and_repeat():
    chats = chat.make_chats(40, seed=0, multi_turn=0.5)
    assert chats == chat.make_chats(40, seed=0, multi_turn=0.5)
    assert any(len(c["messages"]) > 3 for c in chats)
    for c in chats:
        assert c["messages"][0]["role"] == "system"
        assert chat.follows_rule(c["messages"][-1]["content"], c["rule"], c["answer"])
    assert not chat.follows_rule("the answer is 12", "uppercase", "12")
    assert not chat.follows_rule('{"answer": "13"}', "json", "12")


def test_unknown_role_is_rejected():
    with pytest.raises(ValueError, match="unknown role 'bot'"):
        chat.validate_messages([{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}])


@pytest.mark.parametrize("rule", list(RULES))
def test_follows_format_accepts_the_rules_own_replies_and_rejects_plain_text(rule):
    assert follows_format(RULES[rule].render("Paris"), rule)
    assert follows_format(RULES[rule].render("42"), rule)
    assert not follows_format("The capital of France is Paris.", rule)


def test_follows_format_ignores_correctness_and_rejects_unknown_rules():
    assert follows_format('{"answer": "wrong"}', "json")
    assert not follows_rule('{"answer": "wrong"}', "json", "7")
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
