"""The Python examples of the README and the guide, by file name, and a way to run one as a script.

Each example block in ``README.md`` or ``docs/*.md`` starts with ``# file: NAME.py``; tests run
them as written, in a child interpreter.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pages() -> list[str]:
    """The README and the guide's pages, as paths."""
    docs = os.path.join(ROOT, "docs")
    return [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(docs, "*.md")))]


def examples() -> dict[str, str]:
    """``{file name: source}`` of every example in the README and the guide; a name used twice is an error."""
    found: dict[str, str] = {}
    for page in pages():
        with open(page, encoding="utf-8") as f:
            for name, source in re.findall(r"```python\n# file: (\S+)[^\n]*\n(.*?)```", f.read(), re.DOTALL):
                assert name not in found, f"two examples are named {name}; the second is in {page}"
                found[name] = source
    return found


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
