"""threadloader without torch: plain classes, numpy batches, both modes, in an interpreter where torch cannot import.

Where torch is installed threadloader derives its classes from torch's; these
tests hide torch from a child interpreter (an import hook refuses it) and
check that everything still works as before, with nothing of torch loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(90)

_HIDE_TORCH = """
import importlib.abc, sys

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is hidden from this interpreter ({name})")
        return None

sys.meta_path.insert(0, _NoTorch())
"""


def _run_without_torch(body: str) -> list[str]:
    code = _HIDE_TORCH + textwrap.dedent(body)
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=80, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()


def test_classes_are_plain_and_generic_without_torch() -> None:
    out = _run_without_torch("""
    import sys, threadloader
    from threadloader import DataLoader, RandomSampler, BatchSampler, SequentialSampler
    print("torch" in sys.modules, threadloader._torch.data is None)
    print([c.__name__ for c in DataLoader.__mro__], DataLoader[int].__origin__ is DataLoader)
    print([c.__name__ for c in RandomSampler.__mro__], BatchSampler.__mro__[1].__name__,
          SequentialSampler.__mro__[1].__name__)
    """)
    # TorchAttributes (threadloader._facade.compat) holds torch's attributes; it derives from nothing of torch's
    assert out == ["False", "True", "['DataLoader',", "'TorchAttributes',", "'_WithoutTorch',", "'Generic',",
                   "'object']", "True", "['RandomSampler',", "'object']", "object", "object"]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_loading_without_torch(mode: str) -> None:
    out = _run_without_torch(f"""
    import pickle, sys
    import numpy as np
    from sample_datasets import ArrayDataset
    from threadloader import DataLoader, get_worker_info

    class Stream:
        def __iter__(self):
            info = get_worker_info()
            return iter(range(info.id, 10, info.num_workers))

    if __name__ == "__main__":
        loader = DataLoader(ArrayDataset(10), batch_size=4, shuffle=True, num_workers=2, mode={mode!r}, seed=3)
        it = iter(loader)
        batches = list(it)
        labels = sorted(int(i) for b in batches for i in b["y"])
        print(it.mode, type(batches[0]["x"]).__name__, ",".join(str(i) for i in labels))
        copy = pickle.loads(pickle.dumps(loader))
        print(len(list(copy)), "torch" in sys.modules)
        stream = DataLoader(Stream(), batch_size=2, num_workers=2, mode={mode!r})
        print(",".join(str(i) for i in sorted(int(i) for b in stream for i in b)))
    """)
    every = ",".join(str(i) for i in range(10))
    assert out == [mode, "ndarray", every, "3", "False", every]
