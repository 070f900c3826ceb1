"""Every Python example in the README runs as written (each block starts with ``# file: NAME.py``)."""

from __future__ import annotations

import os
import re
import sys

import pytest
from readme_examples import ROOT, examples, pages, run_example

from threadloader import autoscale

pytestmark = pytest.mark.timeout(180)

def _run(name: str, tmp_path: object, launcher: list[str] | None = None) -> list[str]:
    return run_example(name, tmp_path, launcher).stdout.splitlines()


def test_readme_has_the_examples() -> None:
    assert set(examples()) == {"training_loop.py", "reproducible.py", "resume.py", "ddp.py", "auto_workers.py"}


def test_auto_workers(tmp_path: object) -> None:
    lines = _run("auto_workers.py", tmp_path)
    if sys._is_gil_enabled():  # type: ignore[attr-defined]
        assert lines == []  # processes: a fixed pool
    else:
        start = autoscale.initial_workers()
        assert lines and f": {start} -> " in lines[0] and "workers (grow:" in lines[0] and "latency-bound" in lines[0]


def test_reproducibility(tmp_path: object) -> None:
    assert _run("reproducible.py", tmp_path) == ["identical for 1, 2 and 3 workers, in thread and in process mode"]


def test_resume(tmp_path: object) -> None:
    assert _run("resume.py", tmp_path) == [
        "resumed after 4 batches, 6 to go, same batches as an uninterrupted epoch"]


def test_torchrun(tmp_path: object) -> None:
    pytest.importorskip("torch.distributed.run")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert "2 ranks covered the dataset in every epoch" in _run("ddp.py", tmp_path, launcher)


def test_every_link_in_the_readme_and_the_guide_resolves() -> None:
    broken = []
    for page in pages():
        with open(page, encoding="utf-8") as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.DOTALL)  # code blocks hold no links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address, or a heading of the same page
            path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
            if not os.path.exists(path):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target}")
    assert not broken, broken
