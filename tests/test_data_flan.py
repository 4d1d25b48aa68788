"""anlp_ft.data.flan: FLAN-style task families with several templates each, their verifier, and mixtures."""
import pytest

from anlp_ft.data import flan


def test_flan_families_have_templates_and_verifiable_answers():
    assert len(flan.FAMILIES) >= 6
    for name, family in flan.FAMILIES.items():
        assert len(family.templates) >= 3, name
        examples = flan.task_examples(name, 30, seed=0)
        assert examples == flan.task_examples(name, 30, seed=0)
        assert {e["template"] for e in examples} == set(range(len(family.templates)))
        for e in examples:
            assert flan.verify(e["answer"], e["answer"]), (name, e)
            assert flan.verify(f"{e['answer']}.", e["answer"]), (name, e)


def test_flan_verifier_strict_and_lenient():
    assert not flan.verify("The bigger one is 812", "812")
    assert flan.verify("The bigger one is 812", "812", strict=False)
    assert not flan.verify("The bigger one is 8120", "812", strict=False)
    assert not flan.verify("413", "812", strict=False)


def test_flan_mixture_and_template_subsets():
    mix = flan.task_mixture(["sorting", "median"], 10, seed=0, templates=[0])
    assert len(mix) == 20
    assert {e["template"] for e in mix} == {0}
    with pytest.raises(ValueError, match="unknown task family"):
        flan.task_examples("poetry", 1, seed=0)
