"""Ctrl-C and SIGTERM as a request that a long-running command honours at points where nothing is half done.

Python raises KeyboardInterrupt between any two bytecodes of the main thread: inside an import, or between a
lock's acquire and the `try` that releases it (logging's module lock is one). Such an interrupt, even one that
a library's bare `except` swallows, leaves the lock held or the module half made: the process later hangs on
the lock or dies of a segmentation fault at exit (both seen in the random-kill test). So a sweep's driver only
records the first signal and raises at its stop points (`stop_point()`); a second signal stops it at once.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

_requested = threading.Event()
_NOTICE = (b"\n[emosweep] stopping at the next safe point (seconds; nothing finished is lost). "
           b"Ctrl-C again stops at once\n")


def _request(signum, frame) -> None:
    if _requested.is_set():
        raise KeyboardInterrupt
    _requested.set()
    os.write(2, _NOTICE)   # not print(): a handler that prints while the main thread prints raises


def _as_ctrl_c(signum, frame) -> None:
    """SIGTERM (Slurm, Kubernetes, systemd, `timeout`) does what Ctrl-C does now: Tune's handler while trials
    run (they stop resumably), ours otherwise."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


def defer() -> None:
    """From now on SIGINT and SIGTERM request a stop. Called again after ray.init, whose SIGTERM handler aborts
    the process with a native stack dump and leaves Ray's processes behind, and after Tune's fit, whose SIGINT
    handler stays installed when the fit ends."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _request)
    signal.signal(signal.SIGTERM, _as_ctrl_c)


@contextmanager
def deferred():
    """defer() for the time of a command run in-process (tests, notebooks): the caller's handlers come back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    if before[0] is not _request:   # else deferred since the start: a Ctrl-C during the imports still counts
        _requested.clear()
    defer()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
        _requested.clear()


def stop_point() -> None:
    """Raise KeyboardInterrupt here if a stop was requested: a place where no lock is held and no work is half
    written."""
    if _requested.is_set():
        raise KeyboardInterrupt
