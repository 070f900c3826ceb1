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
containers replaced by references, then unpickled once per worker, in the
worker's own thread (``ReplicaTemplate.build``) so that thread owns the new
objects (biased reference counting makes the owner's updates cheap). A
graph made of built-in containers, strings, numbers, arrays and plain
objects, none of them big, is pickled with a hook that pickle calls for
arrays and tensors only (``reducer_override``): the default mode makes a
template every epoch, and the general hook (``persistent_id``), which pickle
calls for every object, doubled the time of the pickle. A short walk of the
graph (``_plain_graph``, leaf-only containers scanned at C speed) decides;
anything it does not recognise takes the general hook.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import sys
import types
from typing import Any

import numpy as np

SHALLOW_ABOVE = 65_536
"""Default ``shallow_above``: a built-in container with more items than this is copied shallowly."""

_ATOMS = (type(None), bool, int, float, complex)  # never shared: pickled inline, cheapest to copy
_SIZED = (list, dict, tuple, set, frozenset, str, bytes)  # exact types that ``shallow_above`` applies to
_ARRAY, _SHALLOW = 0, 1  # reference tags: ints, which ``persistent_id`` passes over (a str tag could be long)

_SCALARS = frozenset(_ATOMS)
_TEXT = frozenset((str, bytes))
_LEAVES = _SCALARS | _TEXT
_SEQUENCES = frozenset((list, tuple, set, frozenset))
_TUPLES = {tuple}
_BY_NAME = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)  # pickled as references
#: Objects and containers that hold more than leaves, which ``_plain_graph`` visits before it gives up
#: (then the general hook pickles the graph): a walk of a graph of many small objects costs about what
#: the general hook does, so it is cut short.
WALK_LIMIT = 2_000
_OBJECT_REDUCE_EX: Any = object.__reduce_ex__
_OBJECT_REDUCE: Any = object.__reduce__
_OBJECT_GETSTATE: Any = getattr(object, "__getstate__", None)  # 3.11+


def _longest_text(elements: Any, kinds: set[type]) -> int:
    """The length of the longest str or bytes among ``elements`` (whose types are ``kinds``), 0 if none."""
    if not kinds & _TEXT:
        return 0
    if kinds <= _TEXT:
        return max(map(len, elements), default=0)
    return max((len(element) for element in elements if type(element) in _TEXT), default=0)


def _scan(elements: Any, stack: list[Any], shallow_above: int) -> bool:
    """Check a container's ``elements``; push those that need a visit onto ``stack``. False: a text too long.

    Leaf-only elements are checked in one C-level pass; so is each tuple of a
    container of tuples (records such as ``(path, label)``), which are not
    counted as visits.
    """
    kinds = set(map(type, elements))
    if kinds <= _LEAVES:
        return _longest_text(elements, kinds) <= shallow_above
    if kinds == _TUPLES:
        for element in elements:
            inner = set(map(type, element))
            if inner <= _LEAVES:
                if _longest_text(element, inner) > shallow_above:
                    return False
            else:
                stack.append(element)
        return True
    stack.extend(elements)
    return True


def _plain_object(kind: type) -> bool:
    """True for a class whose instances pickle as their ``__dict__`` and nothing else."""
    return (
        not issubclass(kind, _SIZED)  # a subclass of a built-in container pickles its items too
        and kind not in copyreg.dispatch_table
        and kind.__reduce_ex__ is _OBJECT_REDUCE_EX
        and kind.__reduce__ is _OBJECT_REDUCE
        and getattr(kind, "__getstate__", _OBJECT_GETSTATE) is _OBJECT_GETSTATE
        and not hasattr(kind, "__slots__")
        and not hasattr(kind, "__getnewargs_ex__")
        and not hasattr(kind, "__getnewargs__")
    )


def _plain_graph(obj: Any, shallow_above: int, tensor_type: type | None) -> bool:
    """True if ``obj``'s graph needs no hook but for arrays and tensors: nothing big, nothing unknown.

    Recognised: numbers, ``None``, str and bytes, exact built-in containers,
    arrays without Python objects, exact tensors, classes, functions and
    modules (pickled by name), and instances that pickle as their
    ``__dict__``. A container whose elements are all leaves is scanned in
    one C-level pass (``set(map(type, ...))``).
    """
    stack = [obj]
    seen: set[int] = set()
    visited = 0
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind in _TEXT:
            if len(item) > shallow_above:
                return False
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        visited += 1
        if visited > WALK_LIMIT:
            return False
        if kind in _SEQUENCES or kind is dict:
            if len(item) > shallow_above:
                return False
            for elements in (item.keys(), item.values()) if kind is dict else (item,):
                if not _scan(elements, stack, shallow_above):
                    return False
        elif isinstance(item, np.generic):  # a numpy scalar: no container inside
            if item.dtype.hasobject:
                return False
        elif kind is np.ndarray:
            if item.dtype.hasobject:
                return False
        elif kind is tensor_type or isinstance(item, _BY_NAME):
            continue
        elif _plain_object(kind) and type(getattr(item, "__dict__", None)) is dict:
            stack.append(item.__dict__)
        else:
            return False
    return True


def _shared_reference(tag: int, number: int) -> Any:
    """Stands in a fast template for an array or tensor; the unpickler resolves it (never called)."""
    raise RuntimeError("threadloader: a replica's shared reference was unpickled outside ReplicaTemplate.build()")


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


def _shared_array(obj: Any, tensor_type: type | None) -> bool:
    """Whether ``obj`` is an array or tensor whose memory replicas share: a plain ndarray of no objects, a tensor."""
    kind = type(obj)
    return (kind is np.ndarray and not obj.dtype.hasobject) or (kind is tensor_type and kind is not None)


class _ReplicaPickler(pickle.Pickler):
    """Pickles arrays, tensors and big containers as references to the originals."""

    def __init__(self, file: io.BytesIO, shallow_above: int, tensor_type: type | None) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared: list[Any] = []
        self._numbers: dict[int, int] = {}  # id(original) -> its index in ``shared``
        self._shallow_above = shallow_above
        self._tensor_type = tensor_type

    def persistent_id(self, obj: Any) -> Any:
        """Pickle's hook, called for every object: a reference for what is shared, else ``None``."""
        kind = type(obj)
        if kind in _ATOMS:
            return None
        if kind in _SIZED:
            if len(obj) <= self._shallow_above:
                return None
            tag = _SHALLOW
        elif _shared_array(obj, self._tensor_type):
            tag = _ARRAY
        else:
            return None
        number = self._numbers.get(id(obj))
        if number is None:
            number = self._numbers[id(obj)] = len(self.shared)
            self.shared.append(obj)  # holds the original alive, so its id stays unique
        return tag, number


class _ArrayOnlyPickler(pickle.Pickler):
    """Pickles arrays and tensors as references, for a graph with no big container (``_plain_graph``).

    Pickle calls ``reducer_override`` for objects of other than its own
    built-in types only, so strings, numbers and containers cost no call.
    """

    def __init__(self, file: io.BytesIO, tensor_type: type | None) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared: list[Any] = []
        self._tensor_type = tensor_type

    def reducer_override(self, obj: Any) -> Any:
        """Pickle's hook for non-built-in objects: a shared reference for an array or tensor."""
        if _shared_array(obj, self._tensor_type):
            self.shared.append(obj)  # pickle memoizes the object, so each original comes here once
            return _shared_reference, (_ARRAY, len(self.shared) - 1)
        return NotImplemented


class _ReplicaUnpickler(pickle.Unpickler):
    """Resolves the pickler's references: one view or shallow copy per original and replica."""

    def __init__(self, payload: bytes, shared: list[Any]) -> None:
        super().__init__(io.BytesIO(payload))
        self._shared = shared
        self._made: dict[int, Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        """Pickle's hook: the view or shallow copy that a reference stands for, made once per replica."""
        tag, number = pid
        return self._resolve(tag, number)

    def _resolve(self, tag: int, number: int) -> Any:
        """The view or shallow copy of shared original ``number``, made once per replica."""
        made = self._made.get(number)
        if made is None:
            original = self._shared[number]
            made = self._made[number] = _array_view(original) if tag == _ARRAY else _shallow_copy(original)
        return made

    def find_class(self, module: str, name: str) -> Any:
        """Pickle's lookup of a global: a fast template's shared reference resolves here."""
        if name == "_shared_reference" and module == __name__:
            return self._resolve
        return super().find_class(module, name)


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
        torch = sys.modules.get("torch")
        tensor_type = torch.Tensor if torch is not None else None
        pickler: _ReplicaPickler | _ArrayOnlyPickler
        if _plain_graph(obj, shallow_above, tensor_type):
            pickler = _ArrayOnlyPickler(buffer, tensor_type)
        else:
            pickler = _ReplicaPickler(buffer, shallow_above, tensor_type)
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
