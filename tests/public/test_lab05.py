"""anlp_ft.assignments.public.lab05 (memory accounting): ex2's check names the graph leak of the natural first
attempt and passes the reference measurement."""
import pytest

from anlp_ft import memory_measure as MM
from anlp_ft.assignments.checks import CheckFailed
from anlp_ft.assignments.public import lab05


def test_lab05_check_names_the_graph_leak(leaking_saved_bytes):
    with pytest.raises(CheckFailed, match=r"return t\.detach\(\) from pack"):
        lab05.ex2(leaking_saved_bytes)
    assert "as expected" in lab05.ex2(MM.measure_saved_activation_bytes)
