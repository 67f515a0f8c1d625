"""Run as a script before a child program: `python -I -S die_with_parent.py <parent pid>
<program> [args...]`. It asks the kernel to SIGKILL it when its parent dies (even by SIGKILL),
then replaces itself with the program; the setting survives execve (the program is not
set-uid).

Why a script and not subprocess's `preexec_fn`: the service forks from a process with threads
(the event loop's executor, the driver's), and Python documents preexec_fn as unsafe there: a
lock another thread held at fork time (the allocator's, the import lock) is never released
in the child, which can then hang before exec. Here everything happens after exec, in a fresh
interpreter. The kernel sends the signal when the *thread* that forked exits, so fork from a
thread that lives as long as the service (the event loop's does).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    parent, program = int(argv[1]), argv[2:]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL)) != 0:
        sys.exit(f"die_with_parent: prctl failed (errno {ctypes.get_errno()})")
    if os.getppid() != parent:  # the parent died before prctl: no signal would ever come
        sys.exit("die_with_parent: the parent is already gone")
    os.execvp(program[0], program)


def wrapped(program: list[str]) -> list[str]:
    """`program` run through this script on Linux (elsewhere as it is: no PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return program
    return [sys.executable, "-I", "-S", __file__, str(os.getpid()), *program]


if __name__ == "__main__":
    main(sys.argv)
