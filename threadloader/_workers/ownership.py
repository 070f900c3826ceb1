"""A shared reference to every dict key of a dataset, so that worker threads look keys up on the fast path.

In:  a dataset, read (never changed) by one worker thread of a pool over the
     shared dataset, before its first ticket.
Out: ``share_keys(dataset)``: a list, made by the calling thread, holding
     every key and value of every dict (and every element of every set)
     reachable from the dataset through attributes and containers, within
     ``MAX_VISITS`` objects; the worker keeps it as long as it runs.

Why (``docs/ownership.md`` has the measurements): on free-threaded CPython
3.13 a dict lookup from a thread that did not make the dict takes a
reference to each stored key it compares without the dict's lock, and that
fails for a key whose only references are its maker's (its shared count is
zero). The lookup then retries under the lock, and in 3.13 ``dict.get``
already holds it, so the retry goes through the lock's slow path: a
vocabulary lookup with a word from ``split()`` ran at 1/140 of its speed in a
worker thread. A list made by another thread gives every key a shared
reference, so the lookup's reference succeeds and stays lock-free (0.7x of the
owner's speed, measured): one pointer per key, no copy of the dataset. A
value's first read from another thread takes the slow path once, to mark it
shared; holding the values too spares the first samples that.

The walk follows instance attributes (``__dict__`` and ``__slots__``), dict
values, and the items of lists, tuples, sets and frozensets of at most
``MAX_ITEMS`` items (a list of millions of records is the bulk a replica
shares too; its records' keys are usually the same few strings); it passes
over strings, numbers, arrays, tensors, modules, types and functions.

Ownership: the list belongs to the worker that made it (``WorkerRuntime``)
and goes with it; nothing here keeps state.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

from ..runtime import gil_enabled

#: The walk visits at most this many objects: a bound on the time a worker spends before its first ticket.
MAX_VISITS = 1_000_000
#: A list, tuple or set with more items than this is not walked into.
MAX_ITEMS = 65_536

_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), types.ModuleType, type,
           types.FunctionType, types.BuiltinFunctionType, types.MethodType, memoryview, range)


def _children(obj: Any) -> Iterator[Any]:
    """What the walk follows from ``obj``: values, items, attributes."""
    kind = type(obj)
    if issubclass(kind, dict):
        yield from dict.values(obj)
    elif issubclass(kind, (list, tuple, set, frozenset)):
        if len(obj) <= MAX_ITEMS:
            yield from obj
    else:
        attributes = getattr(obj, "__dict__", None)
        if type(attributes) is dict:
            yield from attributes.values()
        for name in getattr(kind, "__slots__", ()):
            value = getattr(obj, name, None) if isinstance(name, str) else None
            if value is not None:
                yield value


def _walked(kind: type) -> bool:
    if issubclass(kind, _LEAVES):
        return False
    module = kind.__module__
    return not (module.startswith("numpy") or module.startswith("torch"))  # arrays, tensors, their dtypes


def share_keys(dataset: Any) -> list[Any]:
    """Hold every dict key and set element reachable from ``dataset`` in a list made by the calling thread.

    Args:
        dataset: the shared dataset.

    Returns:
        The list (keep it while worker threads read the dataset); empty
        where the build has the GIL, which has no such slow path.
    """
    if gil_enabled():
        return []
    held: list[Any] = []
    seen: set[int] = set()
    stack = [dataset]
    visits = 0
    while stack and visits < MAX_VISITS:
        obj = stack.pop()
        if id(obj) in seen or not _walked(type(obj)):
            continue
        seen.add(id(obj))
        visits += 1
        try:
            # A dict's own views, not a subclass's overrides (a lazy dict's values() may load); whatever else
            # a user's container runs here may raise, and the walk, only a speed-up, goes on without it
            if isinstance(obj, dict):
                held.extend(dict.keys(obj))  # the keys, which a lookup compares
                held.extend(dict.values(obj))  # and the values: a value read the first time takes the slow path too
            elif isinstance(obj, (set, frozenset)) and len(obj) <= MAX_ITEMS:
                held.extend(obj)
            stack.extend(child for child in _children(obj) if _walked(type(child)))
        except Exception:  # noqa: BLE001,S112  (a user object's attributes may raise on access: walk on)
            continue
    return held
