"""Runtime facts about the interpreter, and the choice of execution mode.

In:  the mode a user asked for (``"auto" | "thread" | "process"``) and the
     number of workers.
Out: the mode that runs (``"serial" | "thread" | "process"``), decided when an
     iteration starts, because an extension module imported late (``triton``,
     pulled in by ``torch.compile``) can re-enable the GIL at run time.
"""

from __future__ import annotations

import sys
import sysconfig
import warnings
from typing import Literal

RequestedMode = Literal["auto", "thread", "process"]
RunningMode = Literal["serial", "thread", "process"]
REQUESTED_MODES: tuple[str, ...] = ("auto", "thread", "process")


def free_threaded_build() -> bool:
    """Return True when this interpreter was built with ``--disable-gil``."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    """Return True when the GIL is enabled right now.

    On a free-threaded build the GIL can be switched on at run time by an
    extension module that does not declare free-threading support, so this is
    checked at every iteration start, not once at import.
    """
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def resolve_mode(requested: str, num_workers: int) -> RunningMode:
    """Pick the execution mode for one iteration.

    Args:
        requested: ``"auto"``, ``"thread"`` or ``"process"``.
        num_workers: worker count; 0 runs in the calling thread.

    Returns:
        ``"serial"`` for ``num_workers == 0``, otherwise the forced mode, or
        for ``"auto"`` threads when the GIL is off and processes when it is on.
    """
    if num_workers == 0:
        return "serial"
    if requested == "thread":
        return "thread"
    if requested == "process":
        return "process"
    if not gil_enabled():
        return "thread"
    if free_threaded_build():
        warnings.warn(
            "threadloader: this is a free-threaded Python build but the GIL was re-enabled "
            "at run time (an extension module without free-threading support, for example "
            "triton via torch.compile); mode='auto' uses worker processes. Pass mode='thread' "
            "to force threads.",
            RuntimeWarning,
            stacklevel=3,
        )
    return "process"
