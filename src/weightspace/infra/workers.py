"""Worker processes: a local spawn pool, and Ray tasks for the optional ``[ray]`` extra."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

__all__ = ["die_with_parent", "process_pool", "ray_imap"]

POLL_SECONDS = 0.5
"""How often the fallback thread checks that the parent is alive."""

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _set_parent_death_signal() -> bool:
    """Asks Linux to send this process SIGKILL when its parent dies; True if it agreed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc symbol table, or no prctl in it
        return False


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)  # the parent is gone: nobody will read our results


def die_with_parent(parent_pid: int | None = None) -> None:
    """Makes the calling (worker) process exit when its parent process dies.

    On Linux the kernel sends SIGKILL when the parent exits, however it exits (``kill -9``
    included); everywhere, a daemon thread also polls the parent's pid, which changes when
    the parent dies and the worker is re-parented. Give the parent's pid (taken in the
    parent) so that a parent that died before the worker started is noticed too. The
    parent-death signal is tied to the thread that started the worker: start pools from a
    thread that lives as long as the pool (the polling covers the rest).

    Args:
        parent_pid: The pid of the process to follow; default: the current parent.
    """
    parent = os.getppid() if parent_pid is None else parent_pid
    _set_parent_death_signal()
    if os.getppid() != parent:  # died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="die-with-parent", daemon=True).start()


def _start_worker(parent_pid: int, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    import torch  # the workers run torch code; one thread each keeps cores from thrashing

    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    workers: int, initializer: Callable[..., Any] | None = None, initargs: tuple = ()
) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes with one torch thread each.

    Spawned, not forked (the parent may hold threads); every worker dies with the parent
    (:func:`die_with_parent`), so a killed command leaves no worker behind. Use it as a
    context manager.

    Args:
        workers: number of processes.
        initializer: called in each worker after its setup, with ``initargs``.
    """
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


def ray_imap(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    workers: int,
    missing: Callable[[str], Exception],
) -> Iterator[tuple[int, Any]]:
    """``fn(*calls[k])`` as Ray tasks; yields ``(k, result)`` as each task finishes.

    Ray runs on the cluster at ``RAY_ADDRESS`` when set, else locally with ``workers``
    CPUs; a Ray started here is shut down afterwards.

    Args:
        fn: a picklable function.
        calls: the arguments of each call.
        workers: CPUs of a local Ray.
        missing: builds the error raised when Ray is not installed, from a message.
    """
    try:
        import ray
    except ImportError:
        raise missing(
            "--backend ray needs Ray: pip install 'weightspace[ray]' (or use --backend local)"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(fn)
        pending = {remote.remote(*args): k for k, args in enumerate(calls)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done[0]), ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()
