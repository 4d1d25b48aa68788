"""Shared fixtures: the real tokenizer and SmolLM2 (offline), the one way to build a tiny model, and the small
solution notebook the assignment tests render."""
import os
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from transformers import LlamaConfig, LlamaForCausalLM

from anlp_ft.assignments.labspec import load_answers
from anlp_ft.assignments.sandbox import THREAD_VARIABLES
from anlp_ft.models import load_model, load_tokenizer


def worker_cores(worker: str, workers: int, cores: list[int]) -> list[int]:
    """The cores pytest-xdist worker `worker` ("gw0", "gw1", ...) of `workers` takes: every workers-th one from its
    index, or one core shared with other workers when there are more workers than cores."""
    index = int(worker.removeprefix("gw"))
    return cores[index::workers] or [cores[index % len(cores)]]


def pytest_configure(config):
    """`make test` runs two pytest-xdist workers. Each takes its own share of the cores (the CPU affinity, which the
    notebook and grading kernels it starts inherit) and that many threads, so the two never oversubscribe them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or not hasattr(os, "sched_setaffinity"):
        return
    share = worker_cores(worker, int(os.environ["PYTEST_XDIST_WORKER_COUNT"]), sorted(os.sched_getaffinity(0)))
    os.sched_setaffinity(0, share)
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(len(share))))
    torch.set_num_threads(len(share))


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def smollm():
    """The real (offline) SmolLM2-135M-Instruct, shared read-only by the tests that need real behaviour."""
    return load_model(device="cpu")


def solution_answers(number: str, **given) -> SimpleNamespace:
    """The reference answers of lab `number`, from its solution notebook (torch and nn provided)."""
    return load_answers(number, torch=torch, nn=torch.nn, **given)


def processes_with(mark: str) -> list[str]:
    """PIDs of this machine's processes whose command line contains `mark`: what a submission left running."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if mark.encode() in cmdline.read_bytes():
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


def tiny_config(**overrides) -> LlamaConfig:
    """A SmolLM2-shaped model small enough to train in a second; same vocabulary as the real tokenizer.

    Tests build models with the `tiny_model_factory` fixture; this function stays importable as
    `tests.conftest.tiny_config`, the form test_multiprocess.py and test_recipe.py use."""
    kw = dict(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=2,
              eos_token_id=2, bos_token_id=1)
    kw.update(overrides)
    return LlamaConfig(**kw)


@pytest.fixture(scope="session")  # stateless: module- and session-scoped fixtures can use it too
def tiny_model_factory():
    """`tiny_model_factory(seed=0, **config_overrides)`: a new LlamaForCausalLM of `tiny_config(**overrides)`,
    initialised after `torch.manual_seed(seed)` (`seed=None` leaves torch's generator as it is). Left in the mode
    transformers builds it in; call `.eval()` or `.train()` as the test needs."""

    def make(*, seed: int | None = 0, **overrides) -> LlamaForCausalLM:
        if seed is not None:
            torch.manual_seed(seed)
        return LlamaForCausalLM(tiny_config(**overrides))

    return make


@pytest.fixture
def tiny_model(tiny_model_factory):
    """The default tiny model, seeded with 0, in eval mode."""
    return tiny_model_factory().eval()


# A solution notebook with every kind of marker: rendered by test_assignments_markers.py, synced by
# test_assignments_sync.py.
@pytest.fixture
def solution_notebook():
    """`solution_notebook(answer="return x * 2")`: a new solution notebook whose ex1 answer is `answer`."""

    def build(answer: str = "return x * 2") -> nbformat.NotebookNode:
        kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb = new_notebook(metadata={"kernelspec": kernelspec, "papermill": {"duration": 1.0},
                                    "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}})
        nb.cells = [
            new_markdown_cell("# Lab 01\nIntro."),
            new_code_cell(
                "def double(x):\n"
                '    """Double x."""\n'
                "    # BEGIN SOLUTION\n"
                f"    {answer}\n"
                "    # END SOLUTION\n"
                "\n"
                "# BEGIN SOLUTION\n"
                "y = double(3)\n"
                "# END SOLUTION\n"
                "check('ex1', double)",
                metadata={
                    "anlp_ft": {"exercise": "ex1", "points": 2},
                    "execution": {"iopub.execute_input": "2025-01-01T00:00:00Z"},
                    "papermill": {"status": "completed"},
                },
                execution_count=7,
                outputs=[new_output("stream", name="stdout", text="✓ ex1 passed\n")],
            ),
            new_markdown_cell(
                "Why does this work?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->\nEnd."
            ),
            new_code_cell("assert double(2) == 4", metadata={"tags": ["hidden-tests"]}),
            new_code_cell(
                "z = 1\n### BEGIN HIDDEN TESTS\nassert double(5) == 10\n### END HIDDEN TESTS\nprint(z)"
            ),
            new_code_cell("w = 2\n### BEGIN HIDDEN TESTS\nassert w == 2\n### END HIDDEN TESTS"),
        ]
        return nb

    return build


@pytest.fixture
def leaking_saved_bytes():
    """The natural first attempt at lab 05's exercise 2 (the solution's saved_activation_bytes): pack returns t
    itself, so the saved tensors keep the graph alive after the call."""

    def measure(model, batch):
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen = {}

        def pack(t):
            if t.is_floating_point() and t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(**batch)
        return sum(seen.values())

    return measure
