"""Worker processes: a local process pool, and Ray tasks for the optional ``[ray]`` extra.

Pool workers are forked from a fork server (``multiprocessing``'s ``forkserver`` start
method, where the platform has it; spawned elsewhere). The server is one clean process,
started on the first pool, that imports :data:`PRELOAD` once; every later worker is a fork of
it with those modules already imported. A spawned worker instead imports torch and the
package afresh, several seconds per worker and per pool: the study opens four pools. Fork
server workers take the environment of the process that opens the pool, as spawned ones do
(the server's own was fixed when it started).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from typing import Any

__all__ = ["die_with_parent", "process_pool", "ray_imap"]

PRELOAD = ("__main__", "weightspace")
"""Modules the fork server imports once for all its workers: the main module (as a spawned
worker would) and this package, which imports torch."""

POLL_SECONDS = 0.5
"""How often the waiting thread checks that the owner is alive where there is no pidfd."""

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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


def _owner_alive(owner: int, is_parent: bool) -> bool:
    """A parent is gone once this process is re-parented; another owner once its pid is."""
    return os.getppid() == owner if is_parent else _alive(owner)


def _watch(owner: int, is_parent: bool) -> None:
    """Waits for ``owner`` to exit (a pidfd where Linux has them, else polling), then exits."""
    try:
        pidfd = os.pidfd_open(owner)
    except (AttributeError, OSError):  # no pidfd here, or the owner is already gone
        pidfd = None
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable once the owner has exited
    else:
        while _owner_alive(owner, is_parent):
            time.sleep(POLL_SECONDS)
    os._exit(1)  # the owner is gone: nobody will read our results


def die_with_parent(parent_pid: int | None = None) -> None:
    """Makes the calling (worker) process exit when the process that owns it dies.

    The owner is the parent unless ``parent_pid`` names another process (a worker forked by
    the fork server names the process that opened its pool). When the owner is the parent,
    Linux sends SIGKILL as it exits, however it exits (``kill -9`` included); everywhere, a
    daemon thread also waits for the owner's exit. Give the owner's pid (taken in the owner)
    so that an owner that died before the worker started is noticed too. The parent-death
    signal is tied to the thread that started the worker: start pools from a thread that
    lives as long as the pool (the waiting thread covers the rest).

    Args:
        parent_pid: The pid of the process to follow; default: the current parent.
    """
    owner = os.getppid() if parent_pid is None else parent_pid
    is_parent = owner == os.getppid()
    if is_parent:
        _set_parent_death_signal()
    if not _owner_alive(owner, is_parent):  # it died before we watched
        os._exit(1)
    threading.Thread(
        target=_watch, args=(owner, is_parent), name="die-with-parent", daemon=True
    ).start()


def _start_worker(
    owner_pid: int,
    environ: dict[str, str],
    initializer: Callable[..., Any] | None,
    initargs: tuple,
) -> None:
    die_with_parent(owner_pid)
    os.environ.clear()
    os.environ.update(environ)
    import torch  # the workers run torch code; one thread each keeps cores from thrashing

    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    workers: int, initializer: Callable[..., Any] | None = None, initargs: tuple = ()
) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes with one torch thread each.

    Forked from the fork server (see the module docstring), never from the parent itself,
    which may hold threads; spawned where there is no fork server. Every worker dies with
    the process that opened the pool (:func:`die_with_parent`), so a killed command leaves
    no worker behind. Use it as a context manager.

    Args:
        workers: number of processes.
        initializer: called in each worker after its setup, with ``initargs``.
    """
    context: BaseContext
    if "forkserver" in get_all_start_methods():
        server = get_context("forkserver")
        server.set_forkserver_preload(list(PRELOAD))  # read when the server first starts
        context = server
    else:
        context = get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(os.getpid(), dict(os.environ), initializer, initargs),
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
