"""anlp_ft.assignments.probe: the harness the grader injects, run here in a real IPython shell."""
import json

import pytest
import torch

from anlp_ft.assignments.probe import injected_source


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def run(shell, capsys, parts: list[str]) -> dict:
    source = injected_source("cafe" * 8, "ex1", "anlp_ft.assignments.public.lab05", None, parts)
    shell.run_cell(source)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cafe" * 8 + " ")]
    assert len(lines) == 1
    return json.loads(lines[0].split(" ", 1)[1])


def test_each_part_reports_pass_or_fail_and_the_harness_leaves_no_names(shell, capsys):
    result = run(shell, capsys, ["x = 1\nassert x == 1", "assert x == 2, 'x is not 2'"])
    assert result["exercise"] == "ex1"
    assert result["parts"][0] == {"passed": True}
    assert result["parts"][1]["passed"] is False
    assert "x is not 2" in result["parts"][1]["error"]
    assert "_anlp_ft_hidden_tests" not in shell.user_ns


def test_hidden_tests_leave_the_random_state_as_they_found_it(shell, capsys):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    result = run(shell, capsys, ["import torch\ntorch.manual_seed(0)\n_ = torch.rand(100)"])
    assert result["parts"] == [{"passed": True}]
    assert torch.equal(torch.rand(3), expected)  # the lab's next cell draws what an ungraded run draws


def run_seeded(shell, capsys, parts: list[str], seed: int) -> dict:
    source = injected_source("cafe" * 8, "ex1", "anlp_ft.assignments.public.lab05", None, parts, seed)
    shell.run_cell(source)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cafe" * 8 + " ")]
    assert len(lines) == 1
    return json.loads(lines[0].split(" ", 1)[1])


def test_emit_hands_over_data_and_tensors_as_safetensors_with_the_grader_seed(shell, capsys):
    from anlp_ft.assignments.judge import decode

    result = run_seeded(shell, capsys, ["emit('seed', GRADER_SEED)\nemit('t', torch.arange(3))",
                                        "emit('nested', {'a': [1, 2.5, None]})"], seed=1234)
    first, second = result["parts"]
    assert first["passed"] and first["data"]["seed"] == 1234
    assert set(first["data"]["t"]) == {"__tensor__"}  # safetensors bytes, base64: data, not pickle
    assert torch.equal(decode(first["data"])["t"], torch.arange(3))
    assert second["data"] == {"nested": {"a": [1, 2.5, None]}}  # each part hands over its own values only
    assert "emit" not in shell.user_ns and "GRADER_SEED" not in shell.user_ns


def test_emit_refuses_objects_that_are_not_data(shell, capsys):
    result = run_seeded(shell, capsys, ["emit('f', object())"], seed=0)
    assert result["parts"][0]["passed"] is False
    assert "not data" in result["parts"][0]["error"]
