"""The infrastructure: pool workers die with their parent; atomic writes; manifests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from weightspace.infra import files, workers
from weightspace.zoo import build

PARENT = textwrap.dedent(
    """
    import os
    import sys
    import time

    from weightspace.infra import workers


    def without_prctl():
        workers._set_parent_death_signal = lambda: False  # only the polling thread is left


    if __name__ == "__main__":
        initializer = without_prctl if sys.argv[1] == "poll" else None
        with workers.process_pool(1, initializer) as pool:
            print(pool.submit(os.getpid).result(), flush=True)
            time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process model")
@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["prctl", "poll"])
def test_worker_dies_with_its_killed_parent(tmp_path: Path, mechanism: str) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), mechanism], stdout=subprocess.PIPE, text=True
    )
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), "the worker did not start"
        worker = int(line)
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_die_with_parent_exits_at_once_if_the_parent_is_already_gone() -> None:
    code = (
        "import os, weightspace.infra.workers as w\n"
        "w.die_with_parent(os.getppid() + 10**6)\n"  # not our parent: it is 'gone'
        "print('still here')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "still here" not in run.stdout


def test_die_with_parent_leaves_a_living_parent_alone() -> None:
    code = (
        "import time, weightspace.infra.workers as w\n"
        "w.POLL_SECONDS = 0.01\n"
        "w.die_with_parent()\n"
        "time.sleep(0.2)\n"
        "print('still here')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "still here" in run.stdout


def test_build_workers_come_from_the_pool_that_dies_with_its_parent(monkeypatch) -> None:
    used = []

    class Pool:
        def __init__(self, n):
            used.append(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(build, "process_pool", Pool)
    assert list(build._execute([], "local", 2)) == []
    assert used == [2]


def test_pool_workers_use_one_thread() -> None:
    with workers.process_pool(1) as pool:
        assert pool.submit(_torch_threads).result() == 1


def test_pool_workers_take_the_environment_of_the_pool_opener(monkeypatch) -> None:
    with workers.process_pool(1) as pool:  # starts the fork server (once per session)
        assert pool.submit(os.getenv, "WEIGHTSPACE_POOL_PROBE").result() is None
    monkeypatch.setenv("WEIGHTSPACE_POOL_PROBE", "after the server started")
    with workers.process_pool(1) as pool:
        assert pool.submit(os.getenv, "WEIGHTSPACE_POOL_PROBE").result() == (
            "after the server started"
        )


def test_pool_workers_are_forked_by_the_fork_server_where_there_is_one() -> None:
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform")
    with workers.process_pool(1) as pool:
        server = pool.submit(os.getppid).result()
    assert server != os.getpid()  # not our child: the fork server's
    with workers.process_pool(1) as pool:
        assert pool.submit(os.getppid).result() == server  # the same server for every pool


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    files.atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert files.read_manifest(target) == {"a": [1, 2], "b": 1}

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_write(target, fail)
    assert files.read_manifest(target) == {"a": [1, 2], "b": 1}  # the old file, unchanged
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_temporary_names_are_unique_and_recognised(tmp_path: Path, monkeypatch) -> None:
    names = []
    real_open = open

    def spy(path, mode="r", *args, **kwargs):
        names.append(Path(path).name)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    files.atomic_write_bytes(tmp_path / "x", b"1")
    files.atomic_write_bytes(tmp_path / "x", b"2")
    assert len(set(names)) == 2 and all(files.is_temporary(n) for n in names)
    assert not files.is_temporary("model.safetensors")


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "missing"), ("{", "not valid JSON"), ("[1]", "expected a JSON object")],
)
def test_manifest_errors_are_one_line(tmp_path: Path, content, reason) -> None:
    path = tmp_path / "m.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(files.ManifestError, match=reason) as info:
        files.read_manifest(path)
    assert "\n" not in str(info.value)
