"""The grading sandbox: what a submission's kernel can see and reach, and that nothing it starts outlives it.

Most tests run ``sandbox.py -- python -c CODE`` directly (a fraction of a second each); one runs a tiny
notebook through :func:`anlp_ft.assignments.grade_worker.run`. Tests that need Linux namespaces skip, with
the OS's reason, only where a probe independent of the sandbox shows the OS refuses them; where the probe
succeeds (this machine), the sandbox must apply them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook

from anlp_ft.assignments import grade_worker, sandbox

SANDBOX = Path(sandbox.__file__)
FLAGS = sandbox.CLONE_NEWUSER | sandbox.CLONE_NEWNS | sandbox.CLONE_NEWNET | sandbox.CLONE_NEWPID
PROBE = ("import ctypes, os, sys\n"
         "libc = ctypes.CDLL(None, use_errno=True)\n"
         f"sys.exit(0 if libc.unshare({FLAGS}) == 0 else os.strerror(ctypes.get_errno()))")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox's isolation is Linux-only")


@pytest.fixture(scope="module")
def namespaces() -> None:
    """Skip (saying why) where the OS refuses user+mount+network+PID namespaces; the sandbox is not asked."""
    probe = subprocess.run([sys.executable, "-I", "-c", PROBE], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"this OS refuses unprivileged user/mount/network/PID namespaces ({probe.stderr.strip()}); "
                    "the sandbox then reports the protections as not applied")


def sandboxed(args: list[str], code: str, *argv: str, module: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """``python sandbox.py ARGS -- python -c CODE ARGV...`` (or ``python -m anlp_ft.assignments.sandbox``)."""
    launcher = ["-m", "anlp_ft.assignments.sandbox"] if module else ["-I", str(SANDBOX)]
    return subprocess.run([sys.executable, *launcher, *args, "--", sys.executable, "-c", code, *argv],
                          capture_output=True, text=True, timeout=60, **kwargs)


def start(args: list[str], code: str) -> subprocess.Popen:
    """The sandbox as jupyter starts a kernel: a session of its own, signalled through its process group."""
    return subprocess.Popen([sys.executable, "-I", str(SANDBOX), *args, "--", sys.executable, "-c", code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)


def marked(marker: str) -> list[int]:
    """Pids of live processes (seen from here) running ``sleep MARKER``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in "ZX":
                    found.append(int(entry))
        except OSError:
            continue
    return found


def wait_for(marker: str, count: int, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(found := marked(marker)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def spawn_orphans(marker: str, then: str) -> str:
    """Code that starts 3 ``sleep`` processes in sessions of their own, prints ready, then runs ``then``."""
    return ("import subprocess, sys\n"
            f"procs = [subprocess.Popen(['sleep', {marker!r}], start_new_session=True, stdin=subprocess.DEVNULL,"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]\n"
            "print('ready', flush=True)\n" + then)


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_lab.ipynb").write_text("hidden tests")
    (tmp_path / "gradebook.csv").write_text("alice,100")
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "data.txt").write_text("open")
    return {"folder": tmp_path / "solutions", "file": tmp_path / "gradebook.csv", "public": tmp_path / "public"}


READ = """
import json, sys
def attempt(fn):
    try:
        return fn()
    except OSError as error:
        return type(error).__name__
folder, file, public = sys.argv[1:4]
print(json.dumps({
    "listing": attempt(lambda: __import__("os").listdir(folder)),
    "inside": attempt(lambda: open(folder + "/01_lab.ipynb").read()),
    "write": attempt(lambda: open(folder + "/planted.txt", "w").write("x")),
    "file": attempt(lambda: open(file).read()),
    "public": attempt(lambda: open(public + "/data.txt").read()),
}))
"""


def test_masked_folder_and_file_are_unreadable_while_others_stay_readable(namespaces, secrets, tmp_path) -> None:
    args = ["--mask", str(secrets["folder"]), "--mask", str(secrets["file"]), "--report", str(tmp_path / "r.json")]
    done = sandboxed(args, READ, str(secrets["folder"]), str(secrets["file"]), str(secrets["public"]))
    assert done.returncode == 0, done.stderr
    seen, report = json.loads(done.stdout), json.loads((tmp_path / "r.json").read_text())
    assert seen["listing"] == []  # an empty read-only tmpfs
    assert seen["inside"] == "FileNotFoundError"
    assert seen["write"] == "OSError"  # read-only file system
    assert seen["file"] == ""  # /dev/null
    assert seen["public"] == "open"
    assert report["masked"] == "applied to 2 paths"
    assert report["masked_paths"] == {str(secrets["folder"]): "empty read-only tmpfs",
                                      str(secrets["file"]): "/dev/null"}
    assert (secrets["folder"] / "01_lab.ipynb").read_text() == "hidden tests"  # only the kernel's view changed


CAGE = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
unmount = libc.umount2(sys.argv[1].encode(), 2)
print(json.dumps({"caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
                  "no_new_privs": status["NoNewPrivs"].strip(), "umount": os.strerror(ctypes.get_errno()) if unmount
                  else "unmounted", "pid": os.getpid()}))
"""


def test_the_kernel_holds_no_capability_and_cannot_unmount_a_mask(namespaces, secrets) -> None:
    done = sandboxed(["--mask", str(secrets["folder"])], CAGE, str(secrets["folder"]))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["caps"] == ["0000000000000000"] * 5
    assert seen["no_new_privs"] == "1"
    assert seen["umount"] == "Operation not permitted"
    assert seen["pid"] == 1  # PID 1 of its own namespace


def test_private_tmp_shows_only_the_kernels_folder(namespaces, tmp_path) -> None:
    keep = Path(tempfile.mkdtemp(prefix="anlpft-test-"))
    try:
        code = ("import os, json\nopen('/tmp/scratch.txt', 'w').write('x')\n"
                f"print(json.dumps([sorted(os.listdir('/tmp')), os.path.exists({str(tmp_path)!r}), os.getcwd(),"
                " sorted(os.listdir('/dev/shm'))]))")
        # What the kernel runs on stays visible even when installed in /tmp (a CI checkout there, say).
        needed = [sys.prefix, sys.base_prefix, str(Path(grade_worker.__file__).resolve().parents[2])]
        done = sandboxed(["--private-tmp", str(keep), *(a for n in needed for a in ("--keep", n))], code, cwd=keep)
        assert done.returncode == 0, done.stderr
        listing, sees_pytest_tmp, cwd, shm = json.loads(done.stdout)
        root = keep.parent
        kept = {Path(n).resolve().relative_to(root).parts[0] for n in needed if Path(n).resolve().is_relative_to(root)}
        assert listing == sorted({keep.name, "scratch.txt", *kept})
        assert not sees_pytest_tmp  # nor any other kernel's sockets and scratch files
        assert cwd == str(keep)
        assert shm == []
        assert (keep / "tmp" / "scratch.txt").read_text() == "x"  # the kernel's /tmp is on disk, in its folder
    finally:
        grade_worker._remove_tree(keep)


def test_network_is_cut_and_only_when_asked(namespaces) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        code = ("import os, socket\ntry:\n"
                f"    socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=5).close()\n"
                "    print('connected', os.environ['ANLP_FT_GRADER_NETWORK'])\n"
                "except OSError as error:\n    print(type(error).__name__, os.environ['ANLP_FT_GRADER_NETWORK'])")
        cut = sandboxed(["--no-network"], code)
        allowed = sandboxed([], code)
    finally:
        server.close()
    assert cut.stdout.split()[1:] == ["off"]
    assert cut.stdout.split()[0] != "connected"  # OSError: network unreachable (only a downed loopback)
    assert allowed.stdout.split() == ["connected", "on"]


def test_orphans_end_with_the_pid_namespace(namespaces) -> None:
    marker = f"300.{uuid.uuid4().int % 10**9}"
    proc = start(["--report", "/dev/null"], spawn_orphans(marker, "sys.stdin.readline()"))
    try:
        assert proc.stdout.readline() == "ready\n"
        assert len(wait_for(marker, 3)) == 3  # running, in sessions of their own
        proc.stdin.close()  # the kernel's command returns
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert marked(marker) == []  # ended with PID 1, without any sweep


def test_orphans_end_with_the_subreaper_sweep_without_a_pid_namespace() -> None:
    marker = f"300.{uuid.uuid4().int % 10**9}"
    reaper = grade_worker.Reaper()
    try:
        assert reaper.subreaper
        done = sandboxed(["--no-pid-namespace"], spawn_orphans(marker, ""))
        assert done.stdout == "ready\n"
        orphans = wait_for(marker, 3)
        assert len(orphans) == 3  # alive after the command ended: the fallback is needed
        assert {int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in orphans} == {
            os.getpid()}  # reparented to the subreaper
        assert reaper.sweep() == 3
    finally:
        reaper.close()
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)
    assert marked(marker) == []


def test_report_says_what_was_applied_and_the_kernel_cannot_read_it(namespaces, secrets, tmp_path) -> None:
    report = tmp_path / "report.json"
    code = ("import os, json\n"
            f"print(json.dumps([open({str(report)!r}).read(), os.environ['OMP_NUM_THREADS'],"
            " os.environ['MKL_NUM_THREADS'], os.environ['ANLP_FT_GRADER_NETWORK']]))")
    done = sandboxed(["--no-network", "--threads", "3", "--mask", str(secrets["folder"]), "--report", str(report)],
                     code, module=True)  # as `python -m anlp_ft.assignments.sandbox`
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["", "3", "3", "off"]
    applied = json.loads(report.read_text())
    assert {k: applied[k] for k in ("network", "masked", "processes", "pid_namespace", "threads", "capabilities")} == {
        "network": "off", "masked": "applied to 1 paths", "processes": "pid namespace", "pid_namespace": True,
        "threads": 3, "capabilities": "dropped"}
    assert applied["proc"].startswith("fresh")


def test_report_names_the_fallback_when_the_pid_namespace_is_off(tmp_path) -> None:
    report = tmp_path / "report.json"
    done = sandboxed(["--no-pid-namespace", "--report", str(report)], "print('hi')")
    assert done.stdout == "hi\n"
    applied = json.loads(report.read_text())
    assert (applied["pid_namespace"], applied["processes"]) == (False, "no pid namespace: turned off "
                                                                       "(--no-pid-namespace)")


INTERRUPTIBLE = ("import sys, time\nprint('ready', flush=True)\n"
                 "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('interrupted', flush=True)\n"
                 "    sys.exit(7)\n")


def test_interrupt_reaches_the_kernel_once_and_terminate_ends_it(namespaces) -> None:
    proc = start([], INTERRUPTIBLE)
    try:
        assert proc.stdout.readline() == "ready\n"
        os.killpg(proc.pid, signal.SIGINT)  # how jupyter_client interrupts a kernel
        assert proc.wait(timeout=30) == 7
        assert proc.stdout.read() == "interrupted\n"
    finally:
        proc.kill()
    proc = start([], INTERRUPTIBLE)  # PID 1 ignores a SIGTERM it has no handler for: SIGKILL follows
    try:
        assert proc.stdout.readline() == "ready\n"
        tic = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert time.monotonic() - tic < sandbox.KILL_GRACE_S + 5
    finally:
        proc.kill()


def test_memory_cap_raises_memory_error(namespaces) -> None:
    code = "try:\n    b = bytearray(1 << 30)\nexcept MemoryError:\n    print('capped')"
    done = sandboxed(["--memory-mb", "512"], code)
    assert done.stdout == "capped\n"


def test_masks_that_would_hide_what_the_kernel_needs_are_refused(tmp_path) -> None:
    needed = {"scratch and socket folder": "/tmp/anlpft-abc"}
    assert "would hide the kernel's scratch" in grade_worker.mask_conflict(["/tmp"], needed)
    assert "absolute" in grade_worker.mask_conflict(["solutions"], needed)
    assert grade_worker.mask_conflict(["/tmp/anlpft-abc-other", str(tmp_path)], needed) is None
    result = grade_worker.run({"notebook": new_notebook(), "nonce": "0" * 32, "timeout": 10, "memory_mb": 512,
                               "parameters": {}, "mask_paths": [sys.prefix]}, tmp_path / "run")
    assert (result["outcome"], result["message"].split(" would")[0]) == ("error", f"mask_paths entry {sys.prefix}")
    assert result["protections"]["masked"].startswith("not applied: the kernel was not started")


NONCE = "ab" * 16


def test_grade_worker_runs_a_notebook_with_every_protection(namespaces, secrets, tmp_path) -> None:
    marker = f"300.{uuid.uuid4().int % 10**9}"
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        new_code_cell(spawn_orphans(marker, (
            "import os\nopen('evidence.txt', 'w').write('left by the kernel')\n"
            f"print(os.path.exists({str(secrets['folder'])!r}), os.path.exists({str(tmp_path)!r}),"
            " os.environ['OMP_NUM_THREADS'], os.getcwd())"))),
        new_code_cell(f"print({NONCE!r} + ' ' + '{{\"passed\": true}}')",
                      metadata={grade_worker.GRADER_KEY: {"cell": "hidden", "exercise": "ex1"}}),
    ]
    job = {"notebook": nb, "nonce": NONCE, "timeout": 60, "memory_mb": 2048, "parameters": {},
           "mask_paths": [str(secrets["folder"]), str(secrets["file"])], "threads": 2}
    env_before = dict(os.environ)
    result = grade_worker.run(job, tmp_path / "runs" / "alice")
    assert dict(os.environ) == env_before  # the caller's environment (ANLP_FT_RESULTS, say) is left as it was
    assert (result["outcome"], result["results"]) == ("ok", {"hidden": [{"passed": True}]}), result
    printed = result_text(tmp_path / "runs" / "alice")
    assert printed[:4] == ["ready", "False", "False", "2"]  # no secret, no grader folder; threads reached the kernel
    assert not Path(printed[4]).parent.exists()  # the scratch folder is gone
    assert (tmp_path / "runs" / "alice" / "work" / "evidence.txt").read_text() == "left by the kernel"
    assert marked(marker) == []
    protections = result["protections"]
    assert {k: protections[k] for k in ("network", "masked", "processes", "swept", "threads")} == {
        "network": "off", "masked": "applied to 3 paths", "processes": "pid namespace", "swept": 0, "threads": 2}


def result_text(run_dir: Path) -> list[str]:
    import nbformat

    executed = nbformat.read(str(run_dir / "executed.ipynb"), as_version=4)
    texts = ["".join(o.get("text", "") for o in c.get("outputs", [])) for c in executed.cells]
    return next(t for t in texts if t.startswith("ready")).split()

