"""The README's Python examples, by file name, and a way to run one as a script.

Each example block in the README starts with ``# file: NAME.py``; tests run
them as written, in a child interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def examples() -> dict[str, str]:
    """``{file name: source}`` of every example in the README."""
    with open(README, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n# file: (\S+)[^\n]*\n(.*?)```", f.read(), re.DOTALL)
    return dict(blocks)


def run_example(
    name: str, directory: object, launcher: list[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Write example ``name`` into ``directory`` and run it; fail with its output if it exits non-zero."""
    script = os.path.join(str(directory), name)
    with open(script, "w", encoding="utf-8") as f:
        f.write(examples()[name])
    command = [sys.executable, *(launcher or []), script]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"} if env is None else env
    result = subprocess.run(command, capture_output=True, text=True, timeout=150, env=environment)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result
