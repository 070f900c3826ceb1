"""The interpreter and machine a benchmark ran on, without the hostname.

In:  the running interpreter, ``/proc/cpuinfo``, psutil.
Out: a JSON-ready dict: Python version, free-threaded build or not, GIL
     enabled at run time, how a free-threaded interpreter was launched
     (``PYTHON_GIL=0``, ``-X gil=0`` or plain), torch's intra-op thread
     count at start, CPU model, core counts, memory, OS and architecture,
     package versions, and a one-line machine description.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from importlib import metadata
from typing import Any

import psutil

PACKAGES = (
    "threadloader", "torch", "torchdata", "spdl_core", "grain", "numpy", "pillow", "psutil", "tqdm", "matplotlib",
)  # fmt: skip


def cpu_model() -> str:
    """The CPU's ``model name`` from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gil_enabled() -> bool:
    """True when the GIL is enabled right now (always on builds without ``sys._is_gil_enabled``)."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def free_threaded_build() -> bool:
    """True on a free-threaded build (``Py_GIL_DISABLED``), whether or not the GIL is on now."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def launch() -> str | None:
    """How a free-threaded interpreter was told about the GIL at start-up; ``None`` on a build with the GIL.

    Returns:
        ``"-X gil=N"`` when given (it overrides the environment),
        ``"PYTHON_GIL=N"`` when set, else ``"plain"``: the GIL then stays off
        until an extension module without free-threading support is imported.
    """
    if not free_threaded_build():
        return None
    option = getattr(sys, "_xoptions", {}).get("gil")
    if option is not None:
        return f"-X gil={option}"
    value = os.environ.get("PYTHON_GIL")
    return f"PYTHON_GIL={value}" if value else "plain"


def torch_threads() -> int | None:
    """torch's intra-op thread count now, without importing torch (``None`` where it is not imported)."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages the benchmark uses (``None`` when missing)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions.get("threadloader") is None:  # running from the source tree, not installed
        try:
            import threadloader

            versions["threadloader"] = f"{threadloader.__version__} (source tree)"
        except ImportError:
            pass
    return versions


def describe() -> dict[str, Any]:
    """Everything about the interpreter and machine worth recording next to the numbers."""
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = logical
    physical = psutil.cpu_count(logical=False)
    memory_gib = psutil.virtual_memory().total / 2**30
    model = cpu_model()
    free_threaded = free_threaded_build()
    return {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "free_threaded_build": free_threaded,
        "gil_enabled": gil_enabled(),
        "launch": launch(),
        "torch_threads": torch_threads(),
        "cpu_model": model,
        "cpu_count_logical": logical,
        "cpu_count_usable": usable,
        "cpu_count_physical": physical,
        "memory_gib": round(memory_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "architecture": platform.machine(),
        "packages": package_versions(),
        "machine": (
            f"{platform.system()} {platform.machine()}, {model}, {usable} usable cores, {memory_gib:.1f} GiB RAM"
        ),
    }
