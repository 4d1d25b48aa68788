"""anlp_ft.assignments.public.lab05 (memory accounting): each public check passes the solution's answer and fails a
wrong one with a message that says what to fix; its stored values are the solution's. The right answers come from
the solution notebook."""
import pytest

from anlp_ft import memory
from anlp_ft.assignments.checks import CheckFailed
from anlp_ft.assignments.public import lab05
from anlp_ft.memory import GB, GPUS, MODELS
from tests.conftest import solution_answers

SOL = solution_answers("05", memory=memory, GB=GB, GPUS=GPUS, MODELS=MODELS)


def test_lab05_stored_values_are_the_solutions():
    for (precision, optimizer), per_parameter in lab05.BYTES_PER_PARAMETER.items():
        assert tuple(SOL.state_bytes(1.0, precision, optimizer)[k] for k in lab05.KEYS) == per_parameter
    for stage, expected in lab05.ZERO_ON_8.items():
        assert SOL.zero_per_gpu(dict(lab05.ZERO_PARTS), stage, 8) == pytest.approx(expected), stage


def test_lab05_ex1_accepts_the_solution_and_names_the_wrong_part():
    assert "SGD, momentum and Adam" in lab05.ex1(SOL.state_bytes)
    with pytest.raises(CheckFailed, match="master weights should be 4 bytes"):
        lab05.ex1(lambda n, precision, optimizer: {**SOL.state_bytes(n, precision, optimizer), "master weights": 0})
    with pytest.raises(CheckFailed, match="momentum: optimizer states should be 4 bytes.*carry"):
        lab05.ex1(lambda n, precision, optimizer: SOL.state_bytes(n, precision, "sgd" if optimizer == "momentum"
                                                                      else optimizer))
    with pytest.raises(CheckFailed, match="missing the keys"):
        lab05.ex1(lambda n, precision, optimizer: {"parameters": 4 * n})


def test_lab05_ex2_names_the_graph_leak(leaking_saved_bytes):
    with pytest.raises(CheckFailed, match=r"return t\.detach\(\) from pack"):
        lab05.ex2(leaking_saved_bytes)
    assert "as expected" in lab05.ex2(SOL.saved_activation_bytes)


def test_lab05_ex3_accepts_the_solution_and_names_the_rule():
    assert "stages 0-3" in lab05.ex3(SOL.zero_per_gpu)

    def gradients_whole(parts, stage, n):  # stage 2 forgets the gradients
        split = SOL.zero_per_gpu(parts, min(stage, 1), n)
        return {**split, "parameters": parts["parameters"] / n} if stage == 3 else split

    with pytest.raises(CheckFailed, match="stage 2 on 8 GPUs: gradients"):
        lab05.ex3(gradients_whole)


def test_lab05_ex4_accepts_the_solution_and_checks_the_boundary():
    assert "one more sequence does not" in lab05.ex4(SOL.largest_batch)
    with pytest.raises(CheckFailed, match="fits too"):
        lab05.ex4(lambda *case: max(SOL.largest_batch(*case) - 1, 0))
    with pytest.raises(CheckFailed, match="does not fit"):
        lab05.ex4(lambda *case: SOL.largest_batch(*case) + 1)
    with pytest.raises(CheckFailed, match="an int >= 0"):
        lab05.ex4(lambda *case: float(SOL.largest_batch(*case)))
