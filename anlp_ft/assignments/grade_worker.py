"""Execute one assembled grading notebook with papermill in a limited kernel (one process per submission).

Run as ``python -m anlp_ft.assignments.grade_worker RUN_DIR`` with the job (notebook, nonce, limits) as
JSON on stdin: the nonce never touches the disk while the student's kernel runs. Writes
``RUN_DIR/executed.ipynb`` and ``RUN_DIR/result.json`` when the kernel is gone. :mod:`.grade` owns the
protocol; this module only executes and records.

The papermill engine ``anlp-ft-grader`` is papermill's nbclient engine with four changes:
the kernel starts through :mod:`.sandbox` (memory cap, no network) over ``ipc`` sockets; errors do not
stop the run (one broken exercise must not cost the others); every cell's timeout is what is left of
the submission's wall-clock budget; and outputs are capped, while the result lines of the grader's own
cells are read from the kernel's messages as they arrive (never from what student cells print).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import nbformat

CELL_OUTPUT_CAP = 1 << 20  # bytes of output kept per cell
NOTEBOOK_OUTPUT_CAP = 16 << 20  # and per notebook: a print loop must not exhaust the grader
GRADER_KEY = "anlp_ft_grader"  # metadata key of the cells the grader injected
_MEMORY_TEXT = re.compile(r"can't allocate memory|cannot allocate memory|out of memory|bad_alloc", re.I)


class RunState:
    """What the grader learns while a notebook runs; filled by the client, read after the kernel is gone."""

    def __init__(self, nonce: str, deadline_s: float) -> None:
        self.nonce = nonce
        self.deadline_s = deadline_s
        self.deadline: float | None = None  # set when the first cell starts (the kernel is up)
        self.results: dict[str, list[Any]] = {}  # injected cell id -> result payloads seen
        self.errors: list[dict[str, str]] = []  # error outputs of every cell, before any cap
        self.dropped_bytes = 0
        self.total_bytes = 0
        self.nb: nbformat.NotebookNode | None = None


def is_memory_error(ename: str, evalue: str) -> bool:
    return ename.endswith("MemoryError") or bool(_MEMORY_TEXT.search(evalue))


def _register_engine() -> None:
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines

    class GraderClient(PapermillNotebookClient):
        def __init__(self, nb_man: Any, state: RunState, **kw: Any) -> None:
            super().__init__(nb_man, **kw)
            self.state = state
            state.nb = self.nb
            self._cell_bytes: dict[int, int] = {}
            self.timeout_func = self._remaining

        def _remaining(self, cell: nbformat.NotebookNode) -> int:
            if self.state.deadline is None:
                self.state.deadline = time.monotonic() + self.state.deadline_s
            return max(1, int(self.state.deadline - time.monotonic() + 0.999))

        def output(self, outs, msg, display_id, cell_index):  # type: ignore[no-untyped-def]
            cell = self.nb.cells[cell_index]
            content = msg.get("content", {})
            kind = msg.get("msg_type")
            grader = cell.get("metadata", {}).get(GRADER_KEY)
            if grader and kind == "stream":
                # Only the grader's own cells can report results, and only with this run's nonce.
                for line in str(content.get("text", "")).splitlines():
                    if line.startswith(self.state.nonce + " "):
                        try:
                            payload = json.loads(line[len(self.state.nonce) + 1:])
                        except ValueError:
                            payload = None
                        self.state.results.setdefault(grader["cell"], []).append(payload)
            if kind == "error":
                self.state.errors.append({"cell": cell.get("id", str(cell_index)),
                                          "ename": str(content.get("ename", ""))[:200],
                                          "evalue": str(content.get("evalue", ""))[:500],
                                          "grader": bool(grader)})
            size = len(str(content.get("text", ""))) + sum(len(str(v)) for v in content.get("data", {}).values())
            size += sum(len(str(t)) for t in content.get("traceback", []))
            used = self._cell_bytes.get(cell_index, 0)
            if used + size > CELL_OUTPUT_CAP or self.state.total_bytes + size > NOTEBOOK_OUTPUT_CAP:
                if self.state.dropped_bytes == 0 or used <= CELL_OUTPUT_CAP:
                    outs.append(nbformat.v4.new_output(
                        "stream", name="stderr", text="[grader: output beyond the size cap dropped]\n"))
                self._cell_bytes[cell_index] = CELL_OUTPUT_CAP + 1
                self.state.dropped_bytes += size
                return None
            self._cell_bytes[cell_index] = used + size
            self.state.total_bytes += size
            return super().output(outs, msg, display_id, cell_index)

    class GraderEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,  # type: ignore[override]
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs.pop("input_path", None)
            return GraderClient(nb_man, kernel_name=kernel_name, startup_timeout=start_timeout,
                                log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file,
                                **kwargs).execute()

    papermill_engines.register("anlp-ft-grader", GraderEngine)


def _kernel_manager_class(memory_mb: int, pidfile: str, network: bool) -> type:
    # Async, as nbclient expects: with a blocking client, waiting for output would block its timeouts.
    from jupyter_client.manager import AsyncKernelManager

    class SandboxedKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd = super().format_kernel_cmd(extra_arguments)
            wrapper = [sys.executable, "-m", "anlp_ft.assignments.sandbox", "--memory-mb", str(memory_mb),
                       "--pidfile", pidfile]
            return [*wrapper, *([] if network else ["--no-network"]), "--", *cmd]

    return SandboxedKernelManager


def run(job: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Execute ``job["notebook"]`` and return what happened (see :class:`RunState`)."""
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError
    from traitlets.config import Config

    _register_engine()
    work = run_dir / "work"  # the kernel's cwd: nothing of the grader's in it
    work.mkdir(parents=True, exist_ok=True)
    nb = nbformat.from_dict(job["notebook"])
    state = RunState(job["nonce"], float(job["timeout"]))
    sockets = tempfile.mkdtemp(prefix="anlpft-")  # short path: Unix socket names are limited to ~100 bytes
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = os.path.join(sockets, "k")
    # The kernel inherits this process's environment: no course outcome file, fixed hash seed.
    os.environ.pop("ANLP_FT_RESULTS", None)
    os.environ["PYTHONHASHSEED"] = "0"
    os.environ["ANLP_FT_GRADING"] = "1"
    outcome, message = "ok", ""
    tic = time.monotonic()
    try:
        papermill.execute_notebook(
            nb, None, parameters=job["parameters"], engine_name="anlp-ft-grader", kernel_name="python3",
            cwd=str(work), progress_bar=False, request_save_on_cell_execute=False,
            start_timeout=int(job.get("start_timeout", 120)), state=state, allow_errors=True,
            shutdown_kernel="immediate", config=config,
            kernel_manager_class=_kernel_manager_class(int(job["memory_mb"]), str(run_dir / "kernel.pid"),
                                                       bool(job.get("network", False))),
        )
    except PapermillExecutionError:
        pass  # errors in cells are recorded in state.errors; the run itself went to the end
    except TimeoutError:
        outcome, message = "timeout", f"ran past {job['timeout']} s"
    except DeadKernelError:
        outcome, message = "died", "the kernel died"
    except Exception as error:  # the grader's own failure: recorded, the batch goes on
        outcome, message = "error", f"{type(error).__name__}: {error}"[:300]
        traceback.print_exc()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    executed = state.nb if state.nb is not None else nb
    nbformat.write(executed, str(run_dir / "executed.ipynb"))
    return {"outcome": outcome, "message": message, "results": state.results, "errors": state.errors,
            "dropped_bytes": state.dropped_bytes, "seconds": round(time.monotonic() - tic, 2)}


def main() -> None:
    run_dir = Path(sys.argv[1]).resolve()  # the kernel runs in run_dir/work: relative paths would break
    job = json.loads(sys.stdin.read())
    result = run(job, run_dir)
    (run_dir / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main()
