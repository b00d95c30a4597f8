"""Benchmark: the end-to-end study that ``make run`` runs, timed from an empty directory.

Builds the standard zoo from scratch in a temporary directory (MNIST from
``WEIGHTSPACE_DATA``), trains every encoder on 3 seeds, evaluates and writes the report,
exactly as ``make run`` does after installing; records the total and every stage's time
against the 20-minute target, and the CPU time of the study's processes (utilisation: CPU
seconds per wall second, at most the number of cores; on Linux this process adopts the
study's orphaned descendants, the fork server and its pool workers, and reaps them, so
their CPU time is counted too). Each preset has its own result file
(``bench/results/make_run.json`` for ``standard``, ``make_run-<preset>.json`` otherwise),
which also lists the earlier measurements of that preset with their commits: the target
must hold on more than one run on these shared machines.

Usage:
    WEIGHTSPACE_DATA=../shared/data python bench/make_run.py [--preset standard]
    python bench/make_run.py --keep runs/standard-bench   # keep the study and its zoo
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_result

TARGET_SECONDS = {"standard": 1200.0, "tiny": 90.0}
KEPT_MEASUREMENTS = 6  # the latest measurements listed in the result file


def result_path(preset: str) -> Path:
    """Where the measurement of ``preset`` is recorded."""
    name = "make_run" if preset == "standard" else f"make_run-{preset}"
    return Path("bench/results") / f"{name}.json"


def commit() -> str:
    """The checked-out commit, with ``+changes`` when the work tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src"], capture_output=True)
    return head.stdout.strip() + ("+changes" if dirty.returncode else "")


_PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


def adopt_descendants() -> bool:
    """Makes this process the reaper of its orphaned descendants (Linux); True if it is.

    The study's pool workers are children of ``multiprocessing``'s fork server, which
    outlives the study by a moment: adopted and reaped here, their CPU time is part of
    ``RUSAGE_CHILDREN``; otherwise init reaps them and it is lost.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_descendants() -> None:
    """Waits for every child left, adopted ones included."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--keep", help="a new directory to write the study and its zoo into")
    args = parser.parse_args()
    if args.keep and Path(args.keep).exists():
        parser.error(f"--keep {args.keep}: exists; choose a new directory")
    place = contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()
    with place as tmp:
        out, zoo = Path(tmp) / "study", Path(tmp) / "zoo"
        command = [
            sys.executable,
            "-m",
            "weightspace",
            "experiment",
            "--preset",
            args.preset,
            "--out",
            str(out),
            "--zoo",
            str(zoo),
        ]
        if not adopt_descendants():
            print("note: cannot adopt the fork server's workers; their CPU time is not counted")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        reap_descendants()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        stages = json.loads((out / "results.json").read_text())["stage_seconds"]
    target = TARGET_SECONDS.get(args.preset)
    print(
        f"{args.preset} study: {seconds:.0f} s (target {target:.0f} s: "
        f"{'met' if target and seconds <= target else 'NOT met'}), CPU {cpu:.0f} s "
        f"(utilisation {cpu / seconds:.2f} cores)"
    )
    path = result_path(args.preset)
    earlier = json.loads(path.read_text()).get("measurements", []) if path.is_file() else []
    measurement = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit(),
        "seconds": seconds,
        "cpu_utilisation": cpu / seconds,
    }
    write_result(
        path,
        "make_run",
        {
            "preset": args.preset,
            "seconds": seconds,
            "target_seconds": target,
            "cpu_seconds": cpu,
            "cpu_utilisation": cpu / seconds,
            "stage_seconds": stages,
            "measurements": [*earlier, measurement][-KEPT_MEASUREMENTS:],
        },
    )


if __name__ == "__main__":
    main()
