"""Writing benchmark results: every file records when, where and with what it was measured."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch


def write_result(path: str | Path, benchmark: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON with the date, machine, library versions and the command."""
    script = Path(sys.argv[0])
    result = {
        "benchmark": benchmark,
        "command": shlex.join([f"{script.parent.name}/{script.name}", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        **payload,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
