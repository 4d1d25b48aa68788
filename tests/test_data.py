import pytest

from anlp_ft.data import arithmetic, chat, flan
from anlp_ft.data.hub import SOURCES, load_lecture_dataset


def test_arithmetic_reproducible_under_seed():
    assert arithmetic.arithmetic_problems(20, seed=1) == arithmetic.arithmetic_problems(20, seed=1)
    assert arithmetic.arithmetic_problems(20, seed=1) != arithmetic.arithmetic_problems(20, seed=2)


def test_step_by_step_solutions_are_right():
    p = arithmetic.make_problem(23, "+", 45)
    assert p["solution"] == "Let's think step-by-step. 23 + 40 = 63. 63 + 5 = 68. The answer is 68."
    for p in arithmetic.arithmetic_problems(200, seed=0, ops=("+", "-", "*")):
        assert arithmetic.is_correct(p["solution"], p["answer"], strict=True)
        assert str(eval(p["question"].removeprefix("What is ").rstrip("?"))) == p["answer"]


def test_train_and_test_are_disjoint():
    train, test = arithmetic.train_test_problems(500, 100, seed=0)
    assert not {p["question"] for p in train} & {p["question"] for p in test}


def test_too_many_problems_is_an_error():
    with pytest.raises(ValueError, match="only 100 exist"):
        arithmetic.arithmetic_problems(101, seed=0, digits=1)


def test_arithmetic_verifier_rejects_wrong_answers():
    assert not arithmetic.is_correct("The answer is 67.", "68")
    assert not arithmetic.is_correct("no number here", "68")
    assert arithmetic.is_correct("23 + 45 is 68", "68")  # lenient: the last number
    assert not arithmetic.is_correct("23 + 45 is 68", "68", strict=True)  # strict: the trained format only
    assert not arithmetic.is_correct("The answer is 68. Also 12.", "68")


def test_flan_families_have_templates_and_verifiable_answers():
    assert len(flan.FAMILIES) >= 6
    for name, family in flan.FAMILIES.items():
        assert len(family.templates) >= 3, name
        examples = flan.task_examples(name, 30, seed=0)
        assert examples == flan.task_examples(name, 30, seed=0)
        assert {e["template"] for e in examples} == set(range(len(family.templates)))
        for e in examples:
            assert flan.verify(e["answer"], e["answer"]) and flan.verify(f"{e['answer']}.", e["answer"])


def test_flan_verifier_strict_and_lenient():
    assert not flan.verify("The bigger one is 812", "812")
    assert flan.verify("The bigger one is 812", "812", strict=False)
    assert not flan.verify("The bigger one is 8120", "812", strict=False)
    assert not flan.verify("413", "812", strict=False)


def test_flan_mixture_and_template_subsets():
    mix = flan.task_mixture(["sorting", "median"], 10, seed=0, templates=[0])
    assert len(mix) == 20 and {e["template"] for e in mix} == {0}
    with pytest.raises(ValueError, match="unknown task family"):
        flan.task_examples("poetry", 1, seed=0)


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


def test_lecture_datasets_offline_keep_the_hub_schema(capsys):
    expected = {"scientific_papers": {"article", "abstract"}, "competition_math": {"problem", "solution", "level", "type"},
                "openorca": {"system_prompt", "question", "response"}, "lmsys_chat": {"conversation", "turn"}}
    for name in SOURCES:
        rows = load_lecture_dataset(name, 3)
        assert len(rows) == 3 and expected[name] <= set(rows[0])
        assert "generated rows in the same schema" in capsys.readouterr().out
