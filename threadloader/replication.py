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
references (pickle's ``persistent_id``), then unpickled once per worker, in
the worker's own thread (``ReplicaTemplate.build``) so that thread owns the
new objects (biased reference counting makes the owner's updates cheap).
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any

import numpy as np


class _SharingPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arrays: list[Any] = []
        self._torch = sys.modules.get("torch")

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is np.ndarray and not obj.dtype.hasobject:
            self.arrays.append(obj)
            return len(self.arrays) - 1
        torch = self._torch
        if torch is not None and isinstance(obj, torch.Tensor) and type(obj) is torch.Tensor:
            self.arrays.append(obj)
            return len(self.arrays) - 1
        return None


class _SharingUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, arrays: list[Any]) -> None:
        super().__init__(file)
        self._arrays = arrays

    def persistent_load(self, pid: Any) -> Any:
        original = self._arrays[pid]
        if isinstance(original, np.ndarray):
            return original.view()  # a new array object over the same buffer
        return original.detach() if not original.requires_grad else original.view_as(original)


class ReplicaTemplate:
    """A dataset pickled once, from which each worker builds its replica."""

    def __init__(self, obj: Any) -> None:
        """Pickle ``obj`` with its arrays and tensors held by reference.

        Raises:
            TypeError: naming the object when part of it cannot be copied.
        """
        buffer = io.BytesIO()
        pickler = _SharingPickler(buffer)
        try:
            pickler.dump(obj)
        except Exception as exc:
            raise TypeError(
                f"threadloader: replicate=True copies the dataset by pickling it, but {obj!r:.200} cannot be "
                f"pickled ({type(exc).__name__}: {exc}). Pass replicate=callable to build each worker's "
                "replica yourself (for example reopening a file), or replicate=False."
            ) from exc
        self._payload = buffer.getvalue()
        self._arrays = pickler.arrays

    def build(self) -> Any:
        """Return a new replica (call it in the thread that will use it)."""
        return _SharingUnpickler(io.BytesIO(self._payload), self._arrays).load()


def replicate(obj: Any) -> Any:
    """Copy ``obj``'s Python objects, sharing the memory of its numpy arrays and torch tensors.

    Args:
        obj: a picklable object graph, typically a dataset.

    Returns:
        The replica. Containers, strings and plain objects are new objects;
        each array or tensor is a new object viewing the original's memory.
    """
    return ReplicaTemplate(obj).build()
