"""Execute one assembled grading notebook with papermill in a limited kernel (one process per submission).

Run as ``python -m anlp_ft.assignments.grade_worker RUN_DIR`` with the job (notebook, nonce, limits) as
JSON on stdin: the nonce never touches the disk while the student's kernel runs. Writes
``RUN_DIR/executed.ipynb`` and ``RUN_DIR/result.json`` when the kernel is gone. :mod:`.grade` owns the
protocol; this module only executes and records.

The papermill engine ``anlp-ft-grader`` is papermill's nbclient engine with four changes:
the kernel starts through :mod:`.sandbox` over ``ipc`` sockets; errors do not stop the run (one broken
exercise must not cost the others); every cell's timeout is what is left of the submission's wall-clock
budget; and outputs are capped, while the result lines of the grader's own cells are read from the
kernel's messages as they arrive (never from what student cells print).

Isolation (see :mod:`.sandbox`, which reports what it applied in ``RUN_DIR/sandbox.json``): the kernel's
sockets, connection file and scratch working folder live in one fresh temporary folder, the only thing its
``/tmp`` shows; ``job["mask_paths"]`` and ``RUN_DIR`` are hidden from it (a mask that would hide what the
kernel needs fails the run instead); it has no network unless ``job["network"]``; it is PID 1 of its own PID
namespace, so every process it starts dies with it. Whatever the namespace cannot catch, this process
(a child subreaper while the kernel runs) kills once the kernel is gone. Small files the kernel left in its
scratch folder are copied to ``RUN_DIR/work``; the folder is then deleted. ``result.json["protections"]``
says what was applied.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
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
EVIDENCE_FILE_CAP = 1 << 20  # files the kernel wrote in its scratch folder, kept in RUN_DIR/work: each at most
EVIDENCE_TOTAL_CAP = 8 << 20  # ... this much in all
EVIDENCE_FILES = 200
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SANDBOX = Path(__file__).resolve().with_name("sandbox.py")
PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
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


def _kernel_manager_class(memory_mb: int, pidfile: str, network: bool, sandbox_args: list[str]) -> type:
    # Async, as nbclient expects: with a blocking client, waiting for output would block its timeouts.
    from jupyter_client.manager import AsyncKernelManager

    class SandboxedKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd = super().format_kernel_cmd(extra_arguments)
            # The sandbox runs as a script in isolated mode: importing the package would cost seconds per kernel.
            wrapper = [sys.executable, "-I", str(SANDBOX), "--memory-mb", str(memory_mb), "--pidfile", pidfile]
            return [*wrapper, *([] if network else ["--no-network"]), *sandbox_args, "--", *cmd]

    return SandboxedKernelManager


# --- processes the submission leaves behind ----------------------------------------------------------------------
def _process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, start time) of every process, from /proc; empty where there is no /proc."""
    table: dict[int, tuple[int, str, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                line = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        fields = line[line.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
        if len(fields) > 19:
            table[int(entry)] = (int(fields[1]), fields[0], fields[19])
    return table


def _descendants(root: int, table: dict[int, tuple[int, str, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Reaper:
    """Make this process a child subreaper (orphans of the kernel become its children) and kill leftovers.

    Also makes this process non-dumpable while it holds the nonce, so a process of the same user cannot
    read its memory. Both settings are restored by :meth:`close`. Processes that were already descendants
    when it started are left alone (the grader's own, when :func:`run` is called in-process).
    """

    def __init__(self) -> None:
        self.linux = sys.platform.startswith("linux")
        self.subreaper = False
        self._saved: tuple[int, int] | None = None
        if self.linux:
            import ctypes

            self._libc = ctypes.CDLL(None, use_errno=True)
            was_reaper = ctypes.c_int(0)
            self._libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(was_reaper), 0, 0, 0)
            self._saved = (was_reaper.value, self._libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
            self.subreaper = self._libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            self._libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        table = _process_table()
        self.before = {(pid, table[pid][2]) for pid in _descendants(os.getpid(), table)}

    def sweep(self, rounds: int = 200, grace_s: float = 0.25) -> int:
        """SIGKILL every new descendant until none is left; how many were killed.

        A process already dying (a PID namespace's init whose parent was killed) is given ``grace_s``
        to go by itself before it is counted.
        """
        killed: set[tuple[int, str]] = set()
        me = os.getpid()
        deadline = time.monotonic() + grace_s
        for _ in range(rounds):
            table = _process_table()
            new = [pid for pid in _descendants(me, table) if (pid, table[pid][2]) not in self.before]
            for pid in new:
                if table[pid][0] == me and table[pid][1] in "ZX":
                    try:
                        os.waitpid(pid, os.WNOHANG)  # an orphan that died: reparented to us, reap it
                    except ChildProcessError:
                        pass
            alive = [pid for pid in new if table[pid][1] not in "ZX"]
            if not alive and not any(table[pid][0] == me for pid in new):
                break  # zombies left are children of older processes: theirs to reap
            if alive and not killed and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add((pid, table[pid][2]))
                except OSError:
                    pass
            time.sleep(0.02)
        return len(killed)

    def close(self) -> None:
        if self._saved is not None:
            self._libc.prctl(PR_SET_CHILD_SUBREAPER, self._saved[0], 0, 0, 0)
            self._libc.prctl(PR_SET_DUMPABLE, self._saved[1], 0, 0, 0)
            self._saved = None


# --- what the kernel may see ---------------------------------------------------------------------------------
def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def mask_conflict(masks: list[str], needed: dict[str, str]) -> str | None:
    """Why these masks cannot be applied (one hides something the kernel needs), or None."""
    for path in masks:
        if not os.path.isabs(path):
            return f"mask_paths must be absolute paths, not {path!r}"
        real = os.path.realpath(path)
        for what, need in needed.items():
            if _inside(os.path.realpath(need), real):
                return f"mask_paths entry {path} would hide the kernel's {what} ({need}); refusing to run"
    return None


def _keep_evidence(scratch: Path, dest: Path) -> None:
    """Copy the small regular files the kernel left in its scratch folder (never following links)."""
    total = files = 0
    for folder, dirs, names in os.walk(scratch):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(folder, d)))
        for name in sorted(names):
            source = os.path.join(folder, name)
            try:
                info = os.lstat(source)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_size > EVIDENCE_FILE_CAP:
                continue
            if files >= EVIDENCE_FILES or total + info.st_size > EVIDENCE_TOTAL_CAP:
                return
            target = dest / os.path.relpath(source, scratch)
            try:
                fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
                with os.fdopen(fd, "rb") as f:
                    data = f.read(EVIDENCE_FILE_CAP + 1)[:EVIDENCE_FILE_CAP]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            except OSError:
                continue
            total += len(data)
            files += 1


def _remove_tree(path: Path) -> None:
    """Delete a folder the kernel wrote into, even where it took the permissions off its own folders."""
    def open_up(folder: str) -> None:
        try:
            if not os.path.islink(folder):
                os.chmod(folder, 0o700)
        except OSError:
            pass

    open_up(str(path))
    for root, dirs, _ in os.walk(path):  # top-down: each folder is opened up before the walk lists it
        for name in dirs:
            open_up(os.path.join(root, name))
    shutil.rmtree(path, ignore_errors=True)


def protections(report_file: Path, threads: int | None, swept: int, reaper: Reaper | None,
                started: bool = True) -> dict[str, Any]:
    """The ``protections`` entry of result.json, from the sandbox's report (written before the kernel ran)."""
    try:
        report = json.loads(report_file.read_text(encoding="utf-8"))
        if not isinstance(report, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as error:
        why = "the kernel was not started" if not started else f"the sandbox wrote no report ({type(error).__name__})"
        report = {"network": f"unknown: {why}", "masked": f"not applied: {why}", "processes": why}
    if report.get("pid_namespace") is True:
        processes = "pid namespace"
    elif reaper is not None and reaper.subreaper:
        processes = f"subreaper sweep only: {report.get('processes', 'no pid namespace')}"
    else:
        processes = f"none: {report.get('processes', 'no pid namespace')}; not Linux, no subreaper sweep"
    return {"network": str(report.get("network")), "masked": str(report.get("masked")), "processes": processes,
            "swept": swept, "threads": report.get("threads", threads),
            **{key: report[key] for key in ("private_tmp", "proc", "capabilities", "masked_paths") if key in report}}


def run(job: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Execute ``job["notebook"]`` and return what happened (see :class:`RunState`).

    Job keys: ``notebook``, ``nonce``, ``timeout``, ``memory_mb``, ``parameters``, optional ``start_timeout``
    (120), ``network`` (False), ``mask_paths`` (absolute paths the kernel must not see; ``run_dir`` is
    always added), ``threads`` (OMP_NUM_THREADS and friends in the kernel) and ``pid_namespace`` (True).
    """
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError
    from traitlets.config import Config

    _register_engine()
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.from_dict(job["notebook"])
    state = RunState(job["nonce"], float(job["timeout"]))
    threads = int(job["threads"]) if job.get("threads") else None
    # One short private folder (Unix socket names are limited to ~100 bytes) holds all the kernel needs: its
    # sockets, its connection file and its scratch working folder; the kernel's /tmp shows only this folder.
    base = Path(tempfile.mkdtemp(prefix="anlpft-"))
    scratch = base / "work"
    scratch.mkdir()
    report_file = run_dir / "sandbox.json"  # run_dir is masked: the kernel can neither read nor rewrite it
    report_file.unlink(missing_ok=True)
    masks = [str(p) for p in job.get("mask_paths") or []] + [str(run_dir)]
    needed = {"scratch and socket folder": str(base), "Python environment": sys.prefix,
              "Python installation": sys.base_prefix, "anlp_ft package": str(PACKAGE_DIR)}
    sandbox_args = [arg for path in masks for arg in ("--mask", path)]
    sandbox_args += ["--private-tmp", str(base), "--report", str(report_file)]
    # What the kernel runs on, kept visible when it was installed in the temporary folder (a CI checkout in /tmp).
    sandbox_args += [arg for path in (sys.prefix, sys.base_prefix, str(PACKAGE_DIR.parent)) for arg in ("--keep", path)]
    sandbox_args += ["--threads", str(threads)] if threads else []
    sandbox_args += [] if job.get("pid_namespace", True) else ["--no-pid-namespace"]
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(base / "k")
    config.KernelManager.connection_file = str(base / "kernel.json")
    # The kernel inherits this process's environment: no course outcome file, fixed hash seed. Restored afterwards,
    # so a caller running this in its own process (a test) keeps its environment.
    saved_env = {k: os.environ.get(k) for k in ("ANLP_FT_RESULTS", "PYTHONHASHSEED", "ANLP_FT_GRADING")}
    os.environ.pop("ANLP_FT_RESULTS", None)
    os.environ["PYTHONHASHSEED"] = "0"
    os.environ["ANLP_FT_GRADING"] = "1"
    outcome, message = "ok", ""
    tic = time.monotonic()
    conflict = mask_conflict(masks, needed)
    reaper = Reaper()
    swept = 0
    try:
        if conflict:
            outcome, message = "error", conflict
        else:
            papermill.execute_notebook(
                nb, None, parameters=job["parameters"], engine_name="anlp-ft-grader", kernel_name="python3",
                cwd=str(scratch), progress_bar=False, request_save_on_cell_execute=False,
                start_timeout=int(job.get("start_timeout", 120)), state=state, allow_errors=True,
                shutdown_kernel="immediate", config=config,
                kernel_manager_class=_kernel_manager_class(int(job["memory_mb"]), str(run_dir / "kernel.pid"),
                                                           bool(job.get("network", False)), sandbox_args),
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
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        swept = reaper.sweep()  # the kernel is gone: whatever it started goes too
        reaper.close()
        _remove_tree(run_dir / "work")  # evidence of an earlier run into the same folder
        _keep_evidence(scratch, run_dir / "work")
        _remove_tree(base)
    executed = state.nb if state.nb is not None else nb
    nbformat.write(executed, str(run_dir / "executed.ipynb"))
    return {"outcome": outcome, "message": message, "results": state.results, "errors": state.errors,
            "dropped_bytes": state.dropped_bytes, "seconds": round(time.monotonic() - tic, 2),
            "protections": protections(report_file, threads, swept, reaper, started=not conflict)}


def main() -> None:
    run_dir = Path(sys.argv[1]).resolve()  # masked by its absolute path
    job = json.loads(sys.stdin.read())
    result = run(job, run_dir)
    (run_dir / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main()
