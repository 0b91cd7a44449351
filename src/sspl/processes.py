"""Worker processes that never outlive the command that started them.

A command killed with SIGKILL (the OOM killer, ``kill -9``, a batch scheduler) runs no clean-up code, so
its worker processes must notice by themselves: each calls :func:`end_with` first, naming the command's
process. Once the workers are gone, multiprocessing's own helpers go too: a forkserver exits when no
process holds its "alive" pipe any more, and the resource tracker when no process holds its pipe.
:func:`init_worker` is the whole set-up of such a worker, for a pool's ``initializer``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import sys
import threading
import time

__all__ = ["end_with", "init_worker"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_SECONDS = 1.0


def end_with(command_pid: int) -> None:
    """End this process (SIGKILL) as soon as process ``command_pid`` ends.

    Two guards, for the two ways a worker is started: the parent-death signal (Linux) kills it when its
    parent dies, which covers a worker the command started itself and a worker forked from a forkserver
    when that server dies; a watchdog thread waits on ``command_pid`` itself, which covers a forkserver's
    worker when the command dies. Such a worker takes its server with it: the server would end by itself
    once no worker is left, but only after seconds of interpreter shutdown, holding its memory meanwhile.
    """
    _set_parent_death_signal()
    server = os.getppid() if os.getppid() != command_pid else None  # forked by a forkserver
    thread = threading.Thread(
        target=_watch, args=(command_pid, server), name="sspl-end-with-parent", daemon=True
    )
    thread.start()


def init_worker(command_pid: int) -> None:
    """Set up a worker process of command ``command_pid`` (a pool's ``initializer``).

    The worker ends with the command (:func:`end_with`), runs torch on one thread (the command starts
    one worker per core) and ignores Ctrl-C: that is the parent's to handle (it stops the pool and keeps
    what was finished), and workers printing their own tracebacks of the same KeyboardInterrupt would
    bury the one line that matters.
    """
    import torch  # here: the watchdog alone needs no torch

    end_with(command_pid)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no libc to call: the watchdog still guards the command
        return
    if os.getppid() != parent:  # the parent died before the signal was set
        _end()


def _watch(pid: int, server: int | None) -> None:
    """Wait until process ``pid`` has ended, then end this one (and its forkserver ``server``)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        _end(server)
    except (AttributeError, OSError):  # no pidfd (not Linux 5.3+): poll
        while _alive(pid):
            time.sleep(_POLL_SECONDS)
        _end(server)
    else:
        select.select([fd], [], [])  # readable once the process has ended (a zombie has ended)
        _end(server)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process stays a zombie until its parent reaps it; /proc (where there is one) tells.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _end(server: int | None = None) -> None:
    # The server is killed only while it is this process's parent: a live parent's pid is not reused.
    if server is not None and os.getppid() == server:
        os.kill(server, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
