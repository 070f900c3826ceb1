"""Runtime facts about the interpreter, and the choice of execution mode.

In:  the mode a user asked for (``"auto" | "thread" | "process"``) and the
     number of workers.
Out: the mode that runs (``"serial" | "thread" | "process"``), decided when an
     iteration starts, because an extension module imported late can switch
     the GIL back on at run time; and, once per process, a warning that says
     which module did it, what it costs and how to keep the GIL off. For
     process mode, the start method (``resolve_context``): the platform's
     default, as torch's DataLoader uses it, unless the user names one.

On a free-threaded build CPython turns the GIL on when it imports an
extension module that does not declare free-threading support, unless the
process runs with ``PYTHON_GIL=0`` (``-X gil=0``). In an ordinary training
script that module is triton: building any torch optimizer imports
``torch._dynamo``, which imports it (so does ``import lightning``).

Version-specific knowledge lives here and nowhere else: where a module
object keeps its GIL declaration (``_MODULE_GIL_SLOT``), and where every
object keeps the id of the thread that made it (``_OBJECT_TID_WORD``), each
checked at run time against the fields around it before it is trusted.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import sys
import sysconfig
import threading
import warnings
from importlib.machinery import ExtensionFileLoader
from typing import Literal

RequestedMode = Literal["auto", "thread", "process"]
RunningMode = Literal["serial", "thread", "process"]
REQUESTED_MODES: tuple[str, ...] = ("auto", "thread", "process")

#: The fix we tell users, in the words CPython's own warning uses.
GIL_FIX = "run with PYTHON_GIL=0 (or python -X gil=0)"

# PyModuleObject on free-threaded CPython 3.13 and 3.14: after PyObject_HEAD come md_dict, md_def,
# md_state, md_weaklist, md_name and md_gil, one pointer each. md_gil is Py_MOD_GIL_USED (NULL) for an
# extension module that did not declare free-threading support. The head's size is not assumed: the
# word holding id(module.__dict__) is md_dict, and the word four after it must hold id(module.__name__).
_VERIFIED_LAYOUTS = ((3, 13), (3, 14))
_MODULE_GIL_SLOT = 5  # md_gil, in pointers after md_dict
_MODULE_NAME_SLOT = 4  # md_name, in pointers after md_dict
_HEAD_WORDS_SEARCHED = 8

# PyObject on free-threaded CPython 3.13 and 3.14: ob_tid (the id of the thread that made the object, 0 once
# its counts were merged or for an immortal object), one word of flags, mutex, GC bits and local count,
# ob_ref_shared, ob_type. Trusted only where a fresh object's ob_type word holds id(its type).
_OBJECT_TID_WORD = 0
_OBJECT_TYPE_WORD = 3

_FREE_THREADED_BUILD = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))  # the layouts above exist only there
_warned = False
_warned_lock = threading.Lock()


def free_threaded_build() -> bool:
    """Return True when this interpreter was built with ``--disable-gil``."""
    return _FREE_THREADED_BUILD


def gil_enabled() -> bool:
    """Return True when the GIL is enabled right now.

    On a free-threaded build the GIL can be switched on at run time by an
    extension module that does not declare free-threading support, so this is
    checked at every iteration start, not once at import.
    """
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def _declares_no_gil(module: object) -> bool | None:
    """Whether an extension module declared free-threading support; ``None`` if it cannot be read here."""
    if sys.version_info[:2] not in _VERIFIED_LAYOUTS or not _FREE_THREADED_BUILD:
        return None
    namespace = getattr(module, "__dict__", None)
    name = namespace.get("__name__") if isinstance(namespace, dict) else None
    if name is None:
        return None
    size = type(module).__basicsize__ // ctypes.sizeof(ctypes.c_void_p)  # never read past the object
    words = (ctypes.c_void_p * size).from_address(id(module))
    for start in range(min(_HEAD_WORDS_SEARCHED, size - _MODULE_GIL_SLOT)):
        if words[start] == id(namespace) and words[start + _MODULE_NAME_SLOT] == id(name):
            return words[start + _MODULE_GIL_SLOT] is not None  # NULL reads as None: Py_MOD_GIL_USED
    return None


def _object_layout_known() -> bool:
    if sys.version_info[:2] not in _VERIFIED_LAYOUTS or not _FREE_THREADED_BUILD:
        return False
    probe = object()
    return bool((ctypes.c_size_t * 4).from_address(id(probe))[_OBJECT_TYPE_WORD] == id(object))


_OBJECT_LAYOUT_KNOWN = _object_layout_known()


def _maker_thread(obj: object) -> int:
    return int(ctypes.c_size_t.from_address(id(obj) + _OBJECT_TID_WORD * ctypes.sizeof(ctypes.c_size_t)).value)


def made_by_another_thread(obj: object) -> bool | None:
    """Whether a thread other than the calling one made ``obj`` and still owns its reference count.

    On free-threaded CPython such an object is where the slow paths of
    ``docs/ownership.md`` start for the calling thread. ``False`` for an
    object the calling thread made, an immortal one or one whose counts
    were merged (no thread owns it); ``None`` where this interpreter's object
    layout is not one verified here (a build with the GIL has no owner).
    """
    if not _OBJECT_LAYOUT_KNOWN:
        return None
    maker = _maker_thread(obj)
    return maker != 0 and maker != _maker_thread(object())  # a fresh object is the calling thread's


def modules_needing_gil() -> list[str]:
    """Extension modules imported so far that did not declare free-threading support, in import order.

    Only modules the import system loaded from a file count: CPython checks
    those, and on a free-threaded build the first of them to load turned the
    GIL on (unless ``PYTHON_GIL=0`` kept it off). Submodules an extension
    makes for itself (``torch._C._autograd``) were never checked. Empty on
    other builds, or where this interpreter's module layout is not one this
    code has verified.
    """
    names = []
    for name, module in list(sys.modules.items()):  # insertion order: the order imports finished
        spec = getattr(module, "__spec__", None)
        if spec is None or not isinstance(spec.loader, ExtensionFileLoader) or spec.name != name:
            continue
        if _declares_no_gil(module) is False:
            names.append(name)
    return names


def gil_cause() -> str:
    """One sentence on why the GIL is on in this free-threaded process."""
    requested = getattr(sys.flags, "gil", None)
    if requested == 1:
        how = "-X gil=1" if "gil" in getattr(sys, "_xoptions", {}) else "PYTHON_GIL=1"
        return f"the GIL was requested at start-up ({how})"
    culprits = modules_needing_gil()
    if not culprits:
        return "an extension module without free-threading support switched it on when it was imported"
    first = culprits[0]
    text = f"module '{first}' switched it on when it was imported (it does not declare free-threading support)"
    if _is_triton(first):
        text += "; building a torch optimizer or calling torch.compile imports it through torch._dynamo"
    others = len(culprits) - 1
    if others:
        text += f"; {others} more such module{'s' if others > 1 else ''} loaded since"
    return text


def _is_triton(module_name: str) -> bool:
    return module_name.split(".")[0] == "triton"


def _warn_gil_on(requested: str) -> None:
    """Warn, once per process, that a free-threaded build runs with the GIL on, why, and the fix."""
    global _warned
    with _warned_lock:
        if _warned:
            return
        _warned = True
    if requested == "thread":
        cost = "mode='thread' keeps worker threads, but only one of them runs Python code at a time"
    else:
        cost = "mode='auto' runs worker processes instead of threads"
    fix = (
        f"To keep the GIL off and load with threads, {GIL_FIX}, at your own risk for modules that did not "
        "declare support"
    )
    culprits = modules_needing_gil()
    if culprits and _is_triton(culprits[0]):
        fix += "; for CPU-only training an environment without triton avoids it too"
    warnings.warn(
        f"threadloader: this free-threaded Python is running with the GIL on: {gil_cause()}. {cost}. {fix}.",
        RuntimeWarning,
        stacklevel=4,  # the training loop's iter()
    )


def reset_gil_warning() -> None:
    """Allow the once-per-process GIL warning again (for tests)."""
    global _warned
    with _warned_lock:
        _warned = False


def resolve_mode(requested: str, num_workers: int) -> RunningMode:
    """Pick the execution mode for one iteration.

    Args:
        requested: ``"auto"``, ``"thread"`` or ``"process"``.
        num_workers: worker count; 0 runs in the calling thread.

    Returns:
        ``"serial"`` for ``num_workers == 0``, otherwise the forced mode, or
        for ``"auto"`` threads when the GIL is off and processes when it is on.
        On a free-threaded build whose GIL is on, the first call with threads
        or auto warns (once per process).
    """
    if num_workers == 0:
        return "serial"
    if requested == "process":
        return "process"
    gil = gil_enabled()
    if gil and free_threaded_build():
        _warn_gil_on(requested)
    if requested == "thread" or not gil:
        return "thread"
    return "process"


def resolve_context(context: object) -> multiprocessing.context.BaseContext:
    """Turn the user's ``multiprocessing_context`` (None, a name, a context) into a context.

    ``None`` is multiprocessing's default context, which torch's DataLoader
    uses too: ``fork`` on Linux up to Python 3.13 (workers inherit the
    dataset, lambdas and local classes included, and start in milliseconds),
    ``forkserver`` from 3.14, ``spawn`` on macOS and Windows; and whatever
    ``multiprocessing.set_start_method`` chose.

    Raises:
        ValueError: for a name that is not a start method of this platform.
        TypeError: for anything else that is not a context.
    """
    if context is None:
        return multiprocessing.get_context()
    if isinstance(context, str):
        methods = multiprocessing.get_all_start_methods()
        if context not in methods:
            raise ValueError(
                f"multiprocessing_context option should specify a valid start method in {methods!r}, "
                f"but got multiprocessing_context={context!r}"
            )
        return multiprocessing.get_context(context)
    if not isinstance(context, multiprocessing.context.BaseContext):
        raise TypeError(
            "multiprocessing_context option should be a valid context object or a string specifying "
            f"the start method, but got multiprocessing_context={context!r}"
        )
    return context
