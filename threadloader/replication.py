"""Per-worker replicas of read-mostly datasets: private hot objects, shared bulk and array memory.

In:  a dataset (any picklable object graph).
Out: ``replicate(obj)``: a copy whose Python containers, strings and plain
     objects are new objects, except that numpy arrays and torch tensors
     are new array objects over the same memory (no copy of the data), and
     a built-in container with more than ``shallow_above`` items is a new
     container over the same elements (a string or bytes that long is
     shared as it is).

Why: on free-threaded CPython every thread that touches a shared object
(a dict, its str keys, a list) updates the same reference counts, and the
cache line bounces between cores; a thread working on its own copy does not.
Worker processes get the same effect by copying everything, at the price of
memory. A replica copies what is touched all the time, the small containers
(a vocabulary, a lookup table, the dataset's own attributes), and shares
the bulk: the elements of a list of millions of records are each read a few
times an epoch by one thread, so sharing them costs no contention, while
copying them would cost the memory of a worker process. The big container
itself is still private (it is the object every sample touches).

How: the object graph is pickled once with arrays, tensors and big
containers replaced by references (pickle's ``persistent_id``), then
unpickled once per worker, in the worker's own thread
(``ReplicaTemplate.build``) so that thread owns the new objects (biased
reference counting makes the owner's updates cheap).
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any

import numpy as np

SHALLOW_ABOVE = 65_536
"""Default ``shallow_above``: a built-in container with more items than this is copied shallowly."""

_ATOMS = (type(None), bool, int, float, complex)  # never shared: pickled inline, cheapest to copy
_SIZED = (list, dict, tuple, set, frozenset, str, bytes)  # exact types that ``shallow_above`` applies to
_ARRAY, _SHALLOW = 0, 1  # reference tags: ints, which ``persistent_id`` passes over (a str tag could be long)


def _shallow_copy(original: Any) -> Any:
    """A new container holding ``original``'s elements (strings and bytes: ``original`` itself)."""
    kind = type(original)
    if kind is list:
        return list(original)
    if kind is dict:
        return dict(original)
    if kind is set:
        return set(original)
    if kind is tuple:
        return tuple(iter(original))  # tuple(a_tuple) would return the same object
    if kind is frozenset:
        return frozenset(iter(original))
    return original  # str, bytes: immutable, and a new object would be a full copy


def _array_view(original: Any) -> Any:
    """A new array (or tensor) object over ``original``'s memory."""
    if isinstance(original, np.ndarray):
        return original.view()
    return original.detach() if not original.requires_grad else original.view_as(original)


class _ReplicaPickler(pickle.Pickler):
    """Pickles arrays, tensors and big containers as references to the originals."""

    def __init__(self, file: io.BytesIO, shallow_above: int) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared: list[Any] = []
        self._numbers: dict[int, int] = {}  # id(original) -> its index in ``shared``
        self._shallow_above = shallow_above
        torch = sys.modules.get("torch")
        self._tensor_type = torch.Tensor if torch is not None else None

    def persistent_id(self, obj: Any) -> Any:
        """Pickle's hook, called for every object: a reference for what is shared, else ``None``."""
        kind = type(obj)
        if kind in _ATOMS:
            return None
        if kind in _SIZED:
            if len(obj) <= self._shallow_above:
                return None
            tag = _SHALLOW
        elif (kind is np.ndarray and not obj.dtype.hasobject) or (kind is self._tensor_type and kind is not None):
            tag = _ARRAY
        else:
            return None
        number = self._numbers.get(id(obj))
        if number is None:
            number = self._numbers[id(obj)] = len(self.shared)
            self.shared.append(obj)  # holds the original alive, so its id stays unique
        return tag, number


class _ReplicaUnpickler(pickle.Unpickler):
    """Resolves the pickler's references: one view or shallow copy per original and replica."""

    def __init__(self, payload: bytes, shared: list[Any]) -> None:
        super().__init__(io.BytesIO(payload))
        self._shared = shared
        self._made: dict[int, Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        """Pickle's hook: the view or shallow copy that a reference stands for, made once per replica."""
        tag, number = pid
        made = self._made.get(number)
        if made is None:
            original = self._shared[number]
            made = self._made[number] = _array_view(original) if tag == _ARRAY else _shallow_copy(original)
        return made


class ReplicaTooBig(ValueError):
    """A replica's pickle grew past the ``max_bytes`` its template was given."""


class _LimitedBuffer(io.BytesIO):
    """A pickle's buffer that refuses to grow past ``limit`` bytes, so a replica too big stops early."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self._limit:
            raise ReplicaTooBig(f"a replica would take more than {self._limit:,} bytes pickled")
        return super().write(data)


class ReplicaTemplate:
    """A dataset pickled once, from which each worker builds its replica."""

    def __init__(self, obj: Any, shallow_above: int = SHALLOW_ABOVE, max_bytes: int | None = None) -> None:
        """Pickle ``obj`` with its arrays, tensors and big containers held by reference.

        Args:
            obj: the object graph to replicate.
            shallow_above: built-in containers (exact ``list``, ``dict``,
                ``tuple``, ``set``, ``frozenset``) with more items than this
                are copied shallowly, and ``str`` or ``bytes`` that long are
                shared.
            max_bytes: give up once the pickle passes this size (``None``:
                no limit); pickling stops there, so the attempt costs at
                most that much.

        Raises:
            ValueError: when ``shallow_above`` is negative.
            ReplicaTooBig: when the pickle passes ``max_bytes``.
            TypeError: naming the object when part of it cannot be copied.
        """
        if isinstance(shallow_above, bool) or not isinstance(shallow_above, int) or shallow_above < 0:
            raise ValueError(f"shallow_above should be a non-negative integer, but got shallow_above={shallow_above!r}")
        buffer = io.BytesIO() if max_bytes is None else _LimitedBuffer(max_bytes)
        pickler = _ReplicaPickler(buffer, shallow_above)
        try:
            pickler.dump(obj)
        except ReplicaTooBig:
            raise
        except Exception as exc:
            raise TypeError(
                f"threadloader: replicate=True copies the dataset by pickling it, but {obj!r:.200} cannot be "
                f"pickled ({type(exc).__name__}: {exc}). Pass replicate=callable to build each worker's "
                "replica yourself (for example reopening a file), or replicate=False."
            ) from exc
        self._payload = buffer.getvalue()
        self._shared = pickler.shared

    def build(self) -> Any:
        """Return a new replica (call it in the thread that will use it)."""
        return _ReplicaUnpickler(self._payload, self._shared).load()


def replicate(obj: Any, *, shallow_above: int = SHALLOW_ABOVE) -> Any:
    """Copy ``obj``'s Python objects, sharing array memory and the elements of big containers.

    Args:
        obj: a picklable object graph, typically a dataset.
        shallow_above: a built-in container (exact ``list``, ``dict``,
            ``tuple``, ``set`` or ``frozenset``) with more items than this
            becomes a new container over the same elements, and a ``str``
            or ``bytes`` that long is shared; pass ``sys.maxsize`` to copy
            everything.

    Returns:
        The replica. Containers, strings and plain objects are new objects;
        each array or tensor is a new object viewing the original's memory.

    Raises:
        ValueError: when ``shallow_above`` is negative.
        TypeError: naming the object when part of it cannot be pickled.
    """
    return ReplicaTemplate(obj, shallow_above).build()
