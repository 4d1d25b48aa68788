"""Kernel launcher for grading: limits and isolates the kernel process, then becomes (or starts) the kernel.

Run as::

    python -m anlp_ft.assignments.sandbox --memory-mb M --pidfile F [--no-network] [--mask PATH]...
        [--private-tmp DIR] [--no-pid-namespace] [--threads N] [--report FILE] -- CMD...

What it applies, in order (each step reports what it did in ``--report FILE``, a small JSON file written
before ``CMD`` starts and hidden from it, so the grader need not believe the kernel about its own cage):

* ``--pidfile``: its own pid (the grader kills it if its client lost the kernel; with a PID namespace that
  takes every process of the submission along).
* Fresh **user + mount (+ network) (+ PID) namespaces** (``unshare``), with the caller's own uid and gid
  mapped. The network namespace (``--no-network``) has no interface but a downed loopback: no network.
* Mounts made private, then ``--private-tmp DIR``: the temporary folder holding ``DIR`` (``/tmp``) shows
  only ``DIR`` (the kernel's sockets, connection file and scratch folder): no other kernel's sockets or
  scratch files, no grader's temporary files; the rest of the kernel's ``/tmp`` is ``DIR/tmp`` on disk.
  ``/dev/shm`` becomes a fresh, empty tmpfs.
* ``--mask PATH`` (repeatable): an empty read-only tmpfs over each existing folder, ``/dev/null`` over each
  existing file (solutions, the grader's runs, the submissions, the gradebook).
* With a PID namespace (the default; ``--no-pid-namespace`` turns it off) it forks: the child is PID 1 of the
  namespace, dies with this process (``PR_SET_PDEATHSIG``), mounts a fresh ``/proc`` (only its own
  processes visible) and execs ``CMD``; when it exits, the kernel kills every process left in the namespace
  (double forks and ``start_new_session=True`` included). This process stays as a thin parent: it forwards
  SIGINT (jupyter's interrupt), SIGTERM, SIGHUP and SIGQUIT to the kernel's process group (a SIGTERM
  that PID 1 ignores is followed by SIGKILL after a grace period) and exits with the kernel's status.
  Without a PID namespace the grading worker's subreaper sweep ends leftovers (:mod:`.grade_worker`).
* All capabilities dropped (bounding, ambient, inheritable, permitted and effective sets) and
  ``no_new_privs`` set, so the kernel cannot undo the mounts, mount anything or gain privileges from
  set-uid programs.
* ``RLIMIT_AS`` (an allocation past ``--memory-mb`` raises ``MemoryError`` in Python instead of swapping the
  grading machine to death), ``RLIMIT_FSIZE`` (1 GiB per file), no core dumps; ``--threads N`` sets
  ``OMP_NUM_THREADS`` and friends (torch, BLAS, tokenizers) so parallel gradings do not oversubscribe cores.

Where the OS refuses a step (not Linux, no unprivileged user namespaces, a container forbidding a fresh
``/proc``), the step is skipped and the report says so and why. The environment variable
``ANLP_FT_GRADER_NETWORK`` tells the kernel whether its network is ``off``.

The kernel must talk to the grader over ``ipc`` (Unix socket files in ``--private-tmp``), which a network
namespace does not cut; :mod:`.grade_worker` starts its kernels that way.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import select
import signal
import sys
from typing import Any, Callable, Sequence

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
FILE_SIZE_LIMIT = 1 << 30  # 1 GiB per file: a student loop writing to disk must not fill it
KILL_GRACE_S = 2  # after forwarding SIGTERM/SIGHUP/SIGQUIT, SIGKILL a kernel still alive
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS", "TORCH_NUM_THREADS",
                    "RAYON_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")

_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _why(error: OSError) -> str:
    return error.strerror or str(error)


def _prctl(option: int, arg: int = 0) -> int:
    zero = ctypes.c_ulong(0)
    return _libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), zero, zero, zero)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    _check(_libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def _set_limit(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


# --- namespaces ------------------------------------------------------------------------------------------------
def _map_ids(uid: int, gid: int) -> None:
    """Map our own ids so files the kernel writes keep their owner; a failure here is harmless."""
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    except OSError:
        pass


def unshare(network: bool, pid: bool) -> dict[str, Any]:
    """Enter new namespaces (user, mount, network unless ``network``, PID if ``pid``), as many as the OS allows.

    Returns which were entered (``user``, ``mount``, ``net``, ``pid``: bool) and ``why`` the others were not.
    A new PID namespace applies to the children forked afterwards, not to this process.
    """
    state: dict[str, Any] = {"user": False, "mount": False, "net": False, "pid": False, "why": {}}
    if not sys.platform.startswith("linux"):
        state["why"] = dict.fromkeys(("user", "mount", "net", "pid"), f"not Linux ({sys.platform})")
        return state
    uid, gid = os.getuid(), os.getgid()
    net = 0 if network else CLONE_NEWNET
    # Everything; then without a PID namespace; then without the network one (reported as on); then network only.
    full = CLONE_NEWUSER | CLONE_NEWNS | net | (CLONE_NEWPID if pid else 0)
    attempts = [full, full & ~CLONE_NEWPID, full & ~CLONE_NEWNET, full & ~CLONE_NEWNET & ~CLONE_NEWPID,
                *([CLONE_NEWUSER | net] if net else [])]
    attempts = list(dict.fromkeys(attempts))
    refused: list[str] = []
    for flags in attempts:
        if _libc().unshare(ctypes.c_int(flags)) == 0:
            _map_ids(uid, gid)
            state.update(user=True, mount=bool(flags & CLONE_NEWNS), net=bool(flags & CLONE_NEWNET),
                         pid=bool(flags & CLONE_NEWPID))
            break
        refused.append(f"{os.strerror(ctypes.get_errno())}")
    reason = f"this OS refused the namespace ({', '.join(dict.fromkeys(refused))})"
    for kind in ("user", "mount", "net", "pid"):
        if not state[kind]:
            state["why"][kind] = reason
    if not pid:
        state["why"]["pid"] = "turned off (--no-pid-namespace)"
    if network:
        state["why"]["net"] = "allowed by the job"
    return state


def unshare_network() -> bool:
    """Enter new user + network namespaces; False where the OS refuses (then the network stays on)."""
    return unshare(network=False, pid=False)["net"]


# --- mounts ----------------------------------------------------------------------------------------------------
def private_tmp(keep: str, also: Sequence[str] = ()) -> str:
    """Show only ``keep`` in the temporary folder holding it, backed by ``keep/tmp``; a fresh ``/dev/shm``.
    Folders in ``also`` that live in that temporary folder (the Python environment or the course, when they were
    installed there) are mounted back where they were, since the kernel cannot run without them."""
    keep = os.path.realpath(keep)
    root = os.path.dirname(keep)
    if root == "/":
        return f"not applied: {keep} is not inside a temporary folder"
    inner = os.path.join(keep, "tmp")
    os.makedirs(inner, mode=0o700, exist_ok=True)
    back = [p for p in dict.fromkeys(os.path.realpath(a) for a in also)
            if _inside(p, root) and not _inside(p, keep) and os.path.isdir(p)]
    fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in [keep, *back]}
    try:
        _mount(inner, root, None, MS_BIND)
        try:
            for path, fd in fds.items():  # each now a folder inside keep/tmp: its mount point
                os.makedirs(path, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        except OSError:
            _libc().umount2(os.fsencode(root), ctypes.c_int(MNT_DETACH))
            raise
    except OSError as error:
        return f"not applied: {_why(error)}"
    finally:
        for fd in fds.values():
            os.close(fd)
    shm = ""
    if os.path.isdir("/dev/shm"):
        try:
            _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
            shm = ", fresh /dev/shm"
        except OSError as error:
            shm = f", /dev/shm shared ({_why(error)})"
    shown = ", ".join([keep, *back])
    return f"{root} shows only {shown}{shm}"


def mask(paths: list[tuple[str, bool]], hidden_root: str | None, keep: Sequence[str]) -> tuple[int, dict[str, str]]:
    """Cover each existing path (``(realpath, is_dir)``, parents first) so the kernel sees nothing of it.

    A path under ``hidden_root`` (the private temporary folder) but not under ``keep`` is already out of
    sight. Returns how many paths are hidden and what happened to each.
    """
    done: list[str] = []
    how: dict[str, str] = {}
    for path, is_dir in paths:
        if hidden_root and _inside(path, hidden_root) and not any(_inside(path, k) for k in keep):
            how[path] = "hidden by the private temporary folder"
        elif any(_inside(path, d) for d in done):
            how[path] = "inside a masked folder"
        else:
            try:
                if is_dir:
                    _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                           "mode=0555,size=4k,nr_inodes=16")
                    how[path] = "empty read-only tmpfs"
                else:
                    _mount("/dev/null", path, None, MS_BIND)
                    how[path] = "/dev/null"
                done.append(path)
            except OSError as error:
                how[path] = f"failed: {_why(error)}"
    return sum(not h.startswith("failed") for h in how.values()), how


# --- privileges ------------------------------------------------------------------------------------------------
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capabilities_held() -> bool:
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith("Cap"))
    except OSError:
        return True
    return any(int(fields.get(k, "0").strip(), 16) for k in ("CapEff", "CapPrm", "CapInh", "CapAmb"))


def drop_bounding_set() -> str:
    """Set ``no_new_privs`` and empty the bounding and ambient sets; what is effective now stays until exec."""
    if not sys.platform.startswith("linux"):
        return f"kept: not Linux ({sys.platform})"
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 63
    failed = [cap for cap in range(last + 1) if _prctl(PR_CAPBSET_DROP, cap) != 0]
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    if failed and _capabilities_held():
        return f"kept: this OS refused to drop {len(failed)} capabilities ({os.strerror(ctypes.get_errno())})"
    return "dropped" if not failed else "none held"


def clear_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (the last privileged act before exec)."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _libc().capset(ctypes.byref(header), data)


# --- the kernel's process ----------------------------------------------------------------------------------------
def _exit_like(status: int) -> None:
    """Exit as the child did: the same code, or the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def run_as_init(cmd: list[str], prepare: Callable[[], None]) -> None:
    """Fork ``cmd`` as PID 1 of the (already unshared) PID namespace; forward signals; exit with its status."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    ready, alive = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(alive)
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_DFL)
            os.setpgid(0, 0)  # its own group: the parent forwards each signal once, to the whole group
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if select.select([ready], [], [], 0)[0]:  # the parent died before PDEATHSIG was armed
                os._exit(1)
            os.close(ready)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            prepare()
            os.execvp(cmd[0], cmd)
        except BaseException as error:  # never fall through into the parent's code
            try:
                os.write(2, f"anlp_ft sandbox: cannot start {cmd[0]}: {error}\n".encode())
            finally:
                os._exit(127)
    os.close(ready)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.killpg(pid, signum)
        except OSError:
            try:
                os.kill(pid, signum)
            except OSError:
                pass
        if signum != signal.SIGINT:
            signal.alarm(KILL_GRACE_S)  # PID 1 ignores signals it has no handler for

    def kill(_signum: int, _frame: Any) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.signal(signal.SIGALRM, kill)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 1 << 8
            break
    signal.alarm(0)  # its pid is free now: no late SIGKILL to whoever gets it next
    _exit_like(status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="anlp_ft.assignments.sandbox")
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space cap; 0: none")
    parser.add_argument("--pidfile", default=None)
    parser.add_argument("--no-network", action="store_true")
    parser.add_argument("--mask", action="append", default=[], metavar="PATH",
                        help="hide this file or folder from the kernel (repeatable; absolute)")
    parser.add_argument("--keep", action="append", metavar="DIR",
                        help="a folder the kernel needs that --private-tmp must not hide (repeatable)")
    parser.add_argument("--private-tmp", default=None, metavar="DIR",
                        help="the temporary folder holding DIR shows only DIR to the kernel")
    parser.add_argument("--no-pid-namespace", action="store_true",
                        help="exec the kernel directly (leftover processes are then the caller's to end)")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS and friends; 0: unchanged")
    parser.add_argument("--report", default=None, metavar="FILE", help="write what was applied here (JSON)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command to run")
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(str(os.getpid()))
    # Opened now: the report's folder may be out of sight once the mounts are in place.
    report_fd = (os.open(args.report, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                 if args.report else None)
    masks = sorted(dict.fromkeys(os.path.realpath(p) for p in args.mask), key=len)
    targets = [(p, os.path.isdir(p)) for p in masks if os.path.lexists(p)]
    absent = {p: "absent" for p in masks if not os.path.lexists(p)}
    cwd = os.getcwd()

    state = unshare(network=not args.no_network, pid=not args.no_pid_namespace)
    report: dict[str, Any] = {"network": "off" if state["net"] else f"on ({state['why']['net']})"}
    tmp_note = "not applied: not asked (--private-tmp)"
    if state["mount"]:
        try:
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
        except OSError as error:
            state.update(mount=False)
            state["why"]["mount"] = f"cannot make mounts private ({_why(error)})"
    if state["mount"]:
        keep = os.path.realpath(args.private_tmp) if args.private_tmp else None
        also = [os.path.realpath(k) for k in args.keep or []]
        if keep:
            tmp_note = private_tmp(keep, also)
        hidden_root = os.path.dirname(keep) if keep and not tmp_note.startswith("not") else None
        count, how = mask(targets, hidden_root, [k for k in [keep, *also] if k])
        failed = [f"{p} ({h})" for p, h in how.items() if h.startswith("failed")]
        report["masked"] = f"applied to {count} paths" + (f"; NOT to {', '.join(failed)}" if failed else "")
        report["masked_paths"] = {**how, **absent}
        try:
            os.chdir(cwd)  # the same path, seen through the new mounts
        except OSError as error:
            report["cwd"] = f"{cwd} is out of sight ({_why(error)})"
    else:
        report["masked"] = f"not applied: no mount namespace: {state['why']['mount']}"
        tmp_note = f"not applied: no mount namespace: {state['why']['mount']}"
    report["private_tmp"] = tmp_note
    report["pid_namespace"] = state["pid"]
    report["processes"] = "pid namespace" if state["pid"] else f"no pid namespace: {state['why']['pid']}"
    report["threads"] = args.threads or None
    os.environ["ANLP_FT_GRADER_NETWORK"] = ("off" if state["net"] else "on" if not args.no_network
                                            else "on (this OS refused a network namespace)")
    if args.threads > 0:
        os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(args.threads)))
    if args.memory_mb > 0:
        _set_limit(resource.RLIMIT_AS, args.memory_mb << 20)
    _set_limit(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)
    _set_limit(resource.RLIMIT_CORE, 0)

    def prepare() -> None:
        """The last steps, in the process that becomes the kernel: /proc, report, privileges."""
        if state["pid"]:
            try:
                _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                report["proc"] = "fresh (only the submission's processes)"
            except OSError as error:
                report["proc"] = f"the host's ({_why(error)})"
        else:
            report["proc"] = "the host's (no pid namespace)"
        report["capabilities"] = drop_bounding_set()
        if report_fd is not None:
            os.write(report_fd, json.dumps(report, indent=1, sort_keys=True).encode("utf-8"))
            os.close(report_fd)
            if state["mount"] and os.path.lexists(args.report):
                try:  # still in sight: hide it, so the kernel cannot rewrite what was applied
                    _mount("/dev/null", os.path.realpath(args.report), None, MS_BIND)
                except OSError:
                    pass
        if sys.platform.startswith("linux"):
            clear_capabilities()

    if state["pid"]:
        run_as_init(cmd, prepare)
    prepare()
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
