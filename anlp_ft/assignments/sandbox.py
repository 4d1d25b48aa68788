"""Kernel launcher for grading: limits the kernel process, then becomes the kernel.

Run as ``python -m anlp_ft.assignments.sandbox --memory-mb M --pidfile F [--no-network] -- CMD...``.
It caps the address space (``RLIMIT_AS``: an allocation past it raises ``MemoryError`` in Python
instead of swapping the grading machine to death), the size of any file written (``RLIMIT_FSIZE``)
and core dumps, records its pid (so the grader can kill a kernel its client lost), optionally moves
into fresh user and network namespaces (no interface but a downed loopback: no network), and
finally ``exec``s ``CMD`` (ipykernel), which inherits all of it.

The kernel must then talk to the grader over ``ipc`` (Unix socket files), which a network namespace
does not cut; :mod:`.grade` starts its kernels that way.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
FILE_SIZE_LIMIT = 1 << 30  # 1 GiB per file: a student loop writing to disk must not fill it


def _set_limit(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def unshare_network() -> bool:
    """Enter new user + network namespaces; False where the OS refuses (then the network stays on)."""
    if not sys.platform.startswith("linux"):
        return False
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return False
    # Map our own ids so files the kernel writes keep their owner; a failure here is harmless.
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    except OSError:
        pass
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="anlp_ft.assignments.sandbox")
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space cap; 0: none")
    parser.add_argument("--pidfile", default=None)
    parser.add_argument("--no-network", action="store_true")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command to run")
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(str(os.getpid()))
    network = "on"
    if args.no_network:
        network = "off" if unshare_network() else "on (this OS refused a network namespace)"
    os.environ["ANLP_FT_GRADER_NETWORK"] = network
    if args.memory_mb > 0:
        _set_limit(resource.RLIMIT_AS, args.memory_mb << 20)
    _set_limit(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)
    _set_limit(resource.RLIMIT_CORE, 0)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
