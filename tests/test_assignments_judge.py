"""anlp_ft.assignments.judge: the verdict from the kernel's data, in the grader's process."""
import base64

import pytest
import torch

from anlp_ft.assignments.judge import decode, judge_parts, same, self_test
from anlp_ft.assignments.labspec import HiddenCell


def tensor_entry(t: torch.Tensor) -> dict:
    from safetensors.torch import save

    return {"__tensor__": base64.b64encode(save({"t": t})).decode("ascii")}


def test_decode_reads_tensors_from_safetensors_and_keeps_plain_data():
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    got = decode({"x": [1, 2.5, "a", None, True], "t": tensor_entry(t)})
    assert got["x"] == [1, 2.5, "a", None, True]
    assert torch.equal(got["t"], t)


def test_decode_refuses_anything_but_safetensors():
    with pytest.raises(ValueError):
        decode({"__tensor__": base64.b64encode(b"\x80\x04pickle").decode("ascii")})


@pytest.mark.parametrize("got, want", [
    (1.0 + 1e-9, 1.0), (3, 3.0), ({"a": [1, 2]}, {"a": [1, 2]}), (torch.ones(3), torch.ones(3) + 1e-9),
    (torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([1, 2], dtype=torch.uint8)), ("x", "x")])
def test_same_accepts_equal_values(got, want):
    same(got, want)


@pytest.mark.parametrize("got, want, message", [
    (1.1, 1.0, "differs from the reference"),
    ({"a": 1}, {"a": 1, "b": 2}, "keys"),
    ([1, 2], [1, 2, 3], "2 items"),
    (torch.ones(2, 3), torch.ones(3, 2), "shape"),
    (torch.ones(3) * 2, torch.ones(3), "3 of 3 values differ"),
    (torch.tensor([1, 3], dtype=torch.uint8), torch.tensor([1, 2], dtype=torch.uint8), "50.0% of the values"),
    ([1.0], 1.0, "expected a number"),
    (True, 1, "differs"),
    ("1", 1, "differs"),
])
def test_same_names_where_values_differ_without_showing_the_expected_one(got, want, message):
    with pytest.raises(AssertionError, match=message) as error:
        same(got, want, where="out")
    assert str(error.value).startswith("out")


def test_a_judged_part_passes_only_on_the_data_and_only_if_the_kernel_ran_it():
    hidden = HiddenCell("c", ("ex1",), ["emit('y', f(2))", "emit('z', 1)"],
                        judges=["same(submitted['y'], ref['y'])", ""])
    ref = [{"passed": True, "data": {"y": 4}}, {"passed": True, "data": {"z": 1}}]
    right = [{"passed": True, "data": {"y": 4}}, {"passed": True}]
    wrong = [{"passed": True, "data": {"y": 5}}, {"passed": False, "error": "boom"}]
    raised = [{"passed": False, "error": "ValueError: x", "data": {"y": 4}}, {"passed": True}]
    assert [v["passed"] for v in judge_parts(hidden, right, ref)] == [True, True]
    assert [v["passed"] for v in judge_parts(hidden, wrong, ref)] == [False, False]
    assert judge_parts(hidden, raised, ref)[0] == {"passed": False, "error": "ValueError: x"}
    # "passed" from the kernel alone never passes a judged part: no data, no points
    forged = judge_parts(hidden, [{"passed": True}, {"passed": True}], ref)
    assert forged[0]["passed"] is False and "KeyError" in forged[0]["error"]
    assert judge_parts(hidden, right, None)[0]["error"] == "grader: no reference data for this part"


def test_malformed_data_fails_the_part_with_a_reason():
    hidden = HiddenCell("c", ("ex1",), ["emit('y', 1)"], judges=["same(submitted['y'], ref['y'])"])
    bad = [{"passed": True, "data": {"y": {"__tensor__": "not base64!"}}}]
    verdict = judge_parts(hidden, bad, [{"passed": True, "data": {"y": 1}}])[0]
    assert verdict["passed"] is False and "malformed" in verdict["error"]


def test_self_test_runs_probes_and_judges_on_the_solution_itself():
    seed, emit, submitted, ref, check_same = self_test()
    emit("y", [1, 2])
    check_same(submitted["y"], ref["y"])
    assert seed == 0 and ref is submitted
