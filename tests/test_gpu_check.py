"""benchmarks/gpu_check.sh on a machine without a GPU: says so in one JSON line and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script runs every check")
def test_gpu_check_without_a_gpu_says_so_and_exits_0() -> None:
    env = {**os.environ, "PY": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert json.loads(line) == {
        "check": "gpu",
        "ok": True,
        "skipped": "no CUDA GPU on this machine: nothing to check",
    }


def test_gpu_check_without_torch_fails_naming_the_fix(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    done = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env={**os.environ, "PY": str(fake)}
    )
    assert done.returncode == 1
    assert "run make env first" in json.loads(done.stdout)["error"]
