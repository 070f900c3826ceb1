"""Every Python example in the README runs as written (each block starts with ``# file: NAME.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from threadloader import autoscale

pytestmark = pytest.mark.timeout(180)

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _examples() -> dict[str, str]:
    with open(README, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n# file: (\S+)[^\n]*\n(.*?)```", f.read(), re.DOTALL)
    return dict(blocks)


def _run(name: str, tmp_path: object, launcher: list[str] | None = None) -> list[str]:
    script = os.path.join(str(tmp_path), name)
    with open(script, "w", encoding="utf-8") as f:
        f.write(_examples()[name])
    command = [sys.executable, *(launcher or []), script]
    result = subprocess.run(command, capture_output=True, text=True, timeout=150,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout.splitlines()


def test_readme_has_the_examples() -> None:
    assert set(_examples()) == {"training_loop.py", "reproducible.py", "resume.py", "ddp.py", "auto_workers.py"}


def test_auto_workers(tmp_path: object) -> None:
    lines = _run("auto_workers.py", tmp_path)
    if sys._is_gil_enabled():  # type: ignore[attr-defined]
        assert lines == []  # processes: a fixed pool
    else:
        start = autoscale.initial_workers()
        assert lines and f"{start} -> {2 * start} workers (grow:" in lines[0] and "latency-bound" in lines[0]


def test_training_loop(tmp_path: object) -> None:
    mode = "process" if sys._is_gil_enabled() else "thread"  # type: ignore[attr-defined]
    assert _run("training_loop.py", tmp_path) == [f"epoch 0: 32 batches in {mode} mode",
                                                  f"epoch 1: 32 batches in {mode} mode"]


def test_reproducibility(tmp_path: object) -> None:
    assert _run("reproducible.py", tmp_path) == ["identical for 0, 2 and 4 workers"]


def test_resume(tmp_path: object) -> None:
    assert _run("resume.py", tmp_path) == [
        "resumed after 4 batches, 6 to go, same batches as an uninterrupted epoch"]


def test_torchrun(tmp_path: object) -> None:
    pytest.importorskip("torch.distributed.run")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert "2 ranks covered the dataset in every epoch" in _run("ddp.py", tmp_path, launcher)
