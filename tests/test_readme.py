"""The README's training-loop example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_training_loop_example_runs(tmp_path: object) -> None:
    with open(README, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    example = next(b for b in blocks if "__main__" in b)
    script = os.path.join(str(tmp_path), "example.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(example)
    result = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    mode = "process" if sys._is_gil_enabled() else "thread"  # type: ignore[attr-defined]
    assert result.stdout.splitlines() == [f"epoch 0: 32 batches in {mode} mode", f"epoch 1: 32 batches in {mode} mode"]
