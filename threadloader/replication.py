"""Per-worker replicas of read-mostly datasets: private Python objects, shared array memory.

In:  a dataset (any picklable object graph).
Out: ``replicate(obj)``: a copy whose Python containers, strings and plain
     objects are new objects, while numpy arrays and torch tensors are new
     array objects over the same memory (no copy of the data).

Why: on free-threaded CPython every thread that touches a shared object
(a dict, its str keys, a list) updates the same reference counts, and the
cache line bounces between cores; a thread working on its own copy does not.
Worker processes get the same effect by copying everything, at the price of
memory; a replica copies only the Python objects.

How: the object graph is pickled once with arrays and tensors replaced by
references (pickle's ``reducer_override``), then unpickled once per worker, in
the worker's own thread (``ReplicaTemplate.build``) so that thread owns the
new objects (biased reference counting makes the owner's updates cheap).
"""

from __future__ import annotations

import io
import itertools
import pickle
import sys
import weakref
from typing import Any

import numpy as np


_shared_arrays: dict[int, list[Any]] = {}  # template token -> its arrays, while the template lives
_tokens = itertools.count()


def _shared_view(token: int, number: int) -> Any:
    """Unpickling side: a new array (or tensor) object over a template's original memory."""
    original = _shared_arrays[token][number]
    if isinstance(original, np.ndarray):
        return original.view()
    return original.detach() if not original.requires_grad else original.view_as(original)


class _SharingPickler(pickle.Pickler):
    """Pickles arrays and tensors as references to the originals.

    ``reducer_override`` is not called for exact ints, floats, strs, tuples,
    lists and dicts, so a dataset of millions of small records pickles at C
    speed (``persistent_id`` would be a Python call per object).
    """

    def __init__(self, file: io.BytesIO, token: int) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arrays: list[Any] = []
        self._token = token
        torch = sys.modules.get("torch")
        self._tensor_type = torch.Tensor if torch is not None else None

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if (kind is np.ndarray and not obj.dtype.hasobject) or (kind is self._tensor_type and kind is not None):
            self.arrays.append(obj)
            return _shared_view, (self._token, len(self.arrays) - 1)
        return NotImplemented


class ReplicaTemplate:
    """A dataset pickled once, from which each worker builds its replica."""

    def __init__(self, obj: Any) -> None:
        """Pickle ``obj`` with its arrays and tensors held by reference.

        Raises:
            TypeError: naming the object when part of it cannot be copied.
        """
        buffer = io.BytesIO()
        self._token = next(_tokens)
        pickler = _SharingPickler(buffer, self._token)
        try:
            pickler.dump(obj)
        except Exception as exc:
            raise TypeError(
                f"threadloader: replicate=True copies the dataset by pickling it, but {obj!r:.200} cannot be "
                f"pickled ({type(exc).__name__}: {exc}). Pass replicate=callable to build each worker's "
                "replica yourself (for example reopening a file), or replicate=False."
            ) from exc
        self._payload = buffer.getvalue()
        _shared_arrays[self._token] = pickler.arrays
        weakref.finalize(self, _shared_arrays.pop, self._token, None)

    def build(self) -> Any:
        """Return a new replica (call it in the thread that will use it)."""
        return pickle.loads(self._payload)


def replicate(obj: Any) -> Any:
    """Copy ``obj``'s Python objects, sharing the memory of its numpy arrays and torch tensors.

    Args:
        obj: a picklable object graph, typically a dataset.

    Returns:
        The replica. Containers, strings and plain objects are new objects;
        each array or tensor is a new object viewing the original's memory.
    """
    return ReplicaTemplate(obj).build()
