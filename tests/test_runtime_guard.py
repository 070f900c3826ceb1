"""The GIL on 3.13t: a real training script keeps it off when run as the README says, and says why when not.

Building any torch optimizer imports ``torch._dynamo``, which imports triton
(the CUDA torch wheel depends on it); triton's extension does not declare
free-threading support, so CPython turns the GIL back on unless the process
runs with ``PYTHON_GIL=0``. These tests run the README's training loop, a
small model with ``backward()`` and an optimizer step, in a child
interpreter both ways. tox sets THREADLOADER_EXPECT_FREE_THREADED to 1 in the
3.13t environment (which runs with PYTHON_GIL=0, as the README says) and 0 in
the 3.13 one.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from readme_examples import run_example

from threadloader import runtime

pytestmark = pytest.mark.timeout(120)

EXPECT_FREE_THREADED = os.environ.get("THREADLOADER_EXPECT_FREE_THREADED")
HAS_TRITON = importlib.util.find_spec("triton") is not None

PROBE = """
import sys, sysconfig
import threadloader, numpy, PIL.Image, torch
print(sysconfig.get_config_var("Py_GIL_DISABLED"), sys._is_gil_enabled())
"""


def _plain_env() -> dict[str, str]:
    """The environment of a user who launched with nothing set: no PYTHON_GIL."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _probe(code: str, env: dict[str, str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=100, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def _threadloader_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Warning: threadloader:" in line]


def test_environment_matches_its_interpreter() -> None:
    build_free_threaded = bool(__import__("sysconfig").get_config_var("Py_GIL_DISABLED"))
    assert EXPECT_FREE_THREADED in ("0", "1"), "run the tests through tox (./run test), which sets the expectation"
    assert build_free_threaded == (EXPECT_FREE_THREADED == "1")
    if build_free_threaded:
        assert os.environ.get("PYTHON_GIL") == "0", "the 3.13t environment runs as the README says: PYTHON_GIL=0"


def test_gil_stays_disabled_after_importing_dependencies() -> None:
    flag, gil = _probe(PROBE, _plain_env())  # importing torch alone must not turn the GIL on
    if EXPECT_FREE_THREADED == "1":
        assert flag == "1"
        assert gil == "False", "an imported dependency re-enabled the GIL"
    else:
        assert gil == "True"


def test_training_loop_as_the_readme_says_runs_threads_without_the_gil(tmp_path: object) -> None:
    env = _plain_env()
    if EXPECT_FREE_THREADED == "1":
        env["PYTHON_GIL"] = "0"  # only there: a build with the GIL refuses PYTHON_GIL=0 with a fatal error
    result = run_example("training_loop.py", tmp_path, env=env)
    mode = "thread" if EXPECT_FREE_THREADED == "1" else "process"
    lines = result.stdout.splitlines()
    assert [line.split(",")[0] for line in lines[:2]] == [f"epoch 0: 32 batches in {mode} mode",
                                                          f"epoch 1: 32 batches in {mode} mode"]
    assert lines[2] == f"GIL enabled: {EXPECT_FREE_THREADED != '1'}"
    assert _threadloader_warnings(result.stderr) == []


@pytest.mark.skipif(EXPECT_FREE_THREADED != "1" or not HAS_TRITON,
                    reason="needs the free-threaded environment with triton (torch's CUDA wheel brings it)")
def test_training_loop_launched_plainly_warns_once_naming_triton_and_the_fix(tmp_path: object) -> None:
    result = run_example("training_loop.py", tmp_path, env=_plain_env())
    lines = result.stdout.splitlines()
    assert [line.split(",")[0] for line in lines[:2]] == ["epoch 0: 32 batches in process mode",
                                                          "epoch 1: 32 batches in process mode"]
    assert lines[2] == "GIL enabled: True"
    warned = _threadloader_warnings(result.stderr)
    assert len(warned) == 1, result.stderr[-3000:]  # one per process, though two epochs started
    message = warned[0]
    assert "module 'triton._C.libtriton' switched it on" in message
    assert "building a torch optimizer" in message
    assert "mode='auto' runs worker processes" in message
    assert "PYTHON_GIL=0" in message and "-X gil=0" in message
    assert "training_loop.py" in message.split(":")[0]  # attributed to the script's iter(), not to threadloader


@pytest.mark.skipif(EXPECT_FREE_THREADED != "1" or not HAS_TRITON,
                    reason="needs the free-threaded environment with triton (torch's CUDA wheel brings it)")
def test_gil_cause_names_the_extension_that_turned_it_on() -> None:
    code = """
    import sys
    import triton
    from threadloader import runtime
    print(sys._is_gil_enabled(), runtime.modules_needing_gil()[0])
    """
    assert _probe(code, _plain_env()) == ["True", "triton._C.libtriton"]
    # with PYTHON_GIL=0 the module still has not declared support, but the GIL stays off
    assert _probe(code, {**_plain_env(), "PYTHON_GIL": "0"}) == ["False", "triton._C.libtriton"]


def test_gil_requested_at_start_up_is_named() -> None:
    if EXPECT_FREE_THREADED != "1":
        pytest.skip("-X gil exists on free-threaded builds only")
    code = "from threadloader import runtime; print(runtime.gil_cause().replace(' ', '_'))"
    result = subprocess.run([sys.executable, "-X", "gil=1", "-c", code], capture_output=True, text=True, timeout=100,
                            env=_plain_env())
    assert result.stdout.split() == ["the_GIL_was_requested_at_start-up_(-X_gil=1)"]


def test_no_module_needs_the_gil_in_the_test_process() -> None:
    # 3.13t runs with PYTHON_GIL=0 here, so a module may have loaded without turning the GIL on; the scan
    # must still only name modules loaded through the import system (not torch._C's own submodules).
    for name in runtime.modules_needing_gil():
        assert sys.modules[name].__spec__.name == name
    if EXPECT_FREE_THREADED == "0":
        assert runtime.modules_needing_gil() == []  # a GIL build has no such declaration to read
