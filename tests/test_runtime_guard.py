"""The free-threaded environment really runs without the GIL, with every dependency imported.

A dependency that silently re-enables the GIL (an extension module without
free-threading support) turns thread mode into a slow serial loop; these tests
make that fail CI. tox sets THREADLOADER_EXPECT_FREE_THREADED to 1 in the
3.13t environment and 0 in the 3.13 one.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

EXPECT_FREE_THREADED = os.environ.get("THREADLOADER_EXPECT_FREE_THREADED")

PROBE = """
import sys, sysconfig
import threadloader, numpy, PIL.Image, torch
print(sysconfig.get_config_var("Py_GIL_DISABLED"), sys._is_gil_enabled())
"""


def _probe(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_environment_matches_its_interpreter() -> None:
    build_free_threaded = bool(__import__("sysconfig").get_config_var("Py_GIL_DISABLED"))
    assert EXPECT_FREE_THREADED in ("0", "1"), "run the tests through tox (./run test), which sets the expectation"
    assert build_free_threaded == (EXPECT_FREE_THREADED == "1")


def test_gil_stays_disabled_after_importing_dependencies() -> None:
    flag, gil = _probe(PROBE)
    if EXPECT_FREE_THREADED == "1":
        assert flag == "1"
        assert gil == "False", "an imported dependency re-enabled the GIL"
    else:
        assert gil == "True"


def test_triton_reenables_gil_and_auto_mode_falls_back_to_processes() -> None:
    """``import triton`` (pulled in by torch.compile) re-enables the GIL; auto mode must notice."""
    if EXPECT_FREE_THREADED != "1" or importlib.util.find_spec("triton") is None:
        pytest.skip("needs the free-threaded environment with triton installed (torch's CUDA wheels bring it)")
    code = """
    import sys, warnings
    import triton
    import threadloader
    warnings.simplefilter("error", RuntimeWarning)
    try:
        iter(threadloader.DataLoader(list(range(4)), num_workers=1))
    except RuntimeWarning as w:
        print(sys._is_gil_enabled(), threadloader.gil_enabled(), "warned")
    """
    assert _probe(code) == ["True", "True", "warned"]
