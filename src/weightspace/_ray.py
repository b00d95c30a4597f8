"""Running independent tasks as Ray tasks (the optional ``[ray]`` extra)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any


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
