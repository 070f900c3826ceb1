"""Moving a batch from a worker process to the parent through shared memory.

In (worker): any picklable batch. Its numpy arrays and CPU torch tensors of
     at least ``MIN_SHM_BYTES`` are copied into one shared-memory file per
     batch (``/dev/shm/<prefix>-<n>``); the rest of the batch is pickled with
     the arrays replaced by small references (pickle's ``persistent_id``).
     A smaller tensor that is its whole storage, contiguous (a collated
     batch's labels), travels as its raw bytes in the pickle.
Out (parent): the same structure, with arrays and tensors that are views of
     that memory. The parent unlinks the file as soon as it has mapped it, so
     the memory is released when the last array over it is freed and nothing
     stays in ``/dev/shm``.

A tensor that the worker already stacked into a shared-memory file of its own
(``_shm_collate``, the default collate in worker processes) is not copied:
the batch refers to that file by name, and the parent maps it too. A one-off
file is unlinked on receipt like a batch's file; a worker's recycled file
(``ShmArena``'s slots) stays, the parent keeps it mapped (``SlotTable``) and
marks it free again when the last tensor over it is freed.

Ownership: the worker creates and fills a file and hands its name over; from
then on the parent owns it. ``remove_leftovers(prefix)`` unlinks files of
batches that never reached the parent (dropped at shutdown, worker crash).
Where ``/dev/shm`` does not exist the whole batch is pickled.

Small tensors are not pickled the default way because a tensor's storage
pickles through ``torch.save`` (legacy format, which defines classes on every
call), a large share of a small batch's encoding on the worker's critical
path (the README gives the measurement). Raw bytes rebuild the same tensor:
dtype, shape, contiguous strides, writable memory; tensors of one batch that
each cover one storage whole still share it. Anything else about a tensor
(other strides or offsets, names, conjugate or negative bits, Python
attributes) keeps torch's pickling.
"""

from __future__ import annotations

import glob
import io
import mmap
import os
import pickle
import sys
import weakref
from itertools import count
from typing import Any, NamedTuple

import numpy as np

MIN_SHM_BYTES = 4096
FREE, IN_USE = 0, 1  # a recycled file's state byte: the worker may write it / a batch over it is in use
SHM_DIR = "/dev/shm"
_ALIGN = 64
_counter = count()


class RecycledFile(NamedTuple):
    """Where a tensor in one of a worker's recycled files travels (``_shm_collate.ShmArena``)."""

    name: str  # the file, in SHM_DIR
    state_name: str  # the worker's state file: one FREE / IN_USE byte per slot
    slot: int


def shm_available() -> bool:
    """True where POSIX shared memory is a directory we can write to."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


class _ArrayPickler(pickle.Pickler):
    """Collects large arrays and tensors instead of pickling their bytes; small whole tensors go as raw bytes."""

    def __init__(self, file: io.BytesIO, arena: Any = None) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arrays: list[tuple[str, Any, Any]] = []
        self._torch = sys.modules.get("torch")
        self._arena = arena
        self._inlined: dict[int, int] = {}  # storage data_ptr -> its number, for tensors sharing one storage
        self._storages = 0  # small storages sent so far

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            if obj.dtype.hasobject or obj.nbytes < MIN_SHM_BYTES:
                return None
            self.arrays.append(("numpy", obj, None))
            return len(self.arrays) - 1
        torch = self._torch
        if torch is not None and type(obj) is torch.Tensor:
            if (
                obj.is_nested  # first: a nested tensor has no sizes to read; it pickles whole
                or obj.device.type != "cpu"
                or obj.layout != torch.strided
                or obj.requires_grad
                or obj.is_quantized
            ):
                return None
            nbytes = obj.numel() * obj.element_size()
            if nbytes < MIN_SHM_BYTES:
                return self._inline(obj, nbytes)
            owned = self._arena.take(obj) if self._arena is not None else None
            if owned is not None:  # already in a shared-memory file of its own: send where it is
                self.arrays.append(("torch_file", owned, (obj.dtype, tuple(obj.shape))))
                return len(self.arrays) - 1
            raw = obj.detach().contiguous().view(-1).view(torch.uint8).numpy()
            self.arrays.append(("torch", raw, (obj.dtype, tuple(obj.shape))))
            return len(self.arrays) - 1
        return None

    def _inline(self, tensor: Any, nbytes: int) -> Any:
        """``(number, bytes or None, dtype, shape)`` for a small tensor that is its whole storage, else ``None``.

        The bytes go with the first tensor over a storage; a later one over
        the same storage names its number only.
        """
        storage = tensor.untyped_storage()
        if (
            tensor.storage_offset()
            or storage.nbytes() != nbytes
            or not tensor.is_contiguous()
            or tensor.is_conj()
            or tensor.is_neg()
            or tensor.has_names()
            or tensor.__dict__
        ):
            return None
        key = storage.data_ptr()
        number = self._inlined.get(key) if key else None  # every empty storage has data_ptr 0: none is shared
        data = None
        if number is None:
            number = self._storages
            self._storages += 1
            if key:
                self._inlined[key] = number
            torch = self._torch
            assert torch is not None  # only a tensor comes here
            data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        return (number, data, tensor.dtype, tuple(tensor.shape))


def encode(
    batch: Any, prefix: str, arena: Any = None
) -> tuple[bytes, str | None, list[tuple[str, Any, Any, Any]]]:
    """Worker side: pickle ``batch`` with its large arrays in shared memory.

    Args:
        batch: the batch.
        prefix: the pool's file-name prefix.
        arena: the worker's ``_shm_collate.ShmArena``, whose tensors are sent
            by file name (``None``: copy every array).

    Returns:
        ``(pickled, shm_name, layout)``; ``shm_name`` is ``None`` when no
        array was copied to shared memory. ``layout[i]`` is ``(kind, where,
        dtype, shape)`` for the i-th array reference in ``pickled``: ``where``
        is the offset in ``shm_name``, or for kind ``"torch_file"`` the name
        of the tensor's own file, or a ``RecycledFile`` for one of a
        worker's recycled files.
    """
    buffer = io.BytesIO()
    pickler = _ArrayPickler(buffer, arena)
    try:
        pickler.dump(batch)
        return _write_batch_file(buffer.getvalue(), pickler.arrays, prefix)
    except BaseException:
        for kind, where, _meta in pickler.arrays:  # files taken from the arena go back to it
            if kind == "torch_file":
                arena.give_back(where)
        raise


def _write_batch_file(
    pickled: bytes, arrays: list[tuple[str, Any, Any]], prefix: str
) -> tuple[bytes, str | None, list[tuple[str, Any, Any, Any]]]:
    """Copy the arrays not already in a file of their own into one new file; return ``encode``'s result."""
    layout: list[tuple[str, Any, Any, Any]] = []
    offset = 0
    for kind, array, meta in arrays:
        if kind == "torch_file":
            layout.append((kind, array, meta[0], meta[1]))
            continue
        dtype, shape = (array.dtype, array.shape) if kind == "numpy" else meta
        layout.append((kind, offset, dtype, shape))
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    if not offset:  # every array copied here has at least MIN_SHM_BYTES
        return pickled, None, layout
    name = f"{prefix}-{os.getpid()}-{next(_counter)}"
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, offset)
        with mmap.mmap(fd, offset) as mapped:
            for (kind, array, _meta), (_, start, _dtype, _shape) in zip(arrays, layout):
                if kind != "torch_file" and array.nbytes:
                    target = np.frombuffer(mapped, dtype=np.uint8, count=array.nbytes, offset=start)
                    target[:] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
                    del target
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return pickled, name, layout


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, mapped: mmap.mmap | None, layout: list[tuple[str, Any, Any, Any]]) -> None:
        super().__init__(file)
        self._mapped = mapped
        self._layout = layout
        self._inlined: dict[int, np.ndarray] = {}  # a small storage's number -> its bytes

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is tuple:  # a small tensor's bytes (``_ArrayPickler._inline``); else an index in layout
            return self._inline(*pid)
        kind, where, dtype, shape = self._layout[pid]
        if kind == "torch_file":
            import torch

            if isinstance(where, RecycledFile):
                raw = SlotTable.of(where.state_name).view(where.slot, where.name)
            else:
                raw = np.frombuffer(_map_and_unlink(where), dtype=np.uint8)
            return torch.from_numpy(raw).view(dtype).reshape(shape)
        offset = where
        assert self._mapped is not None, "an array in the batch's file, but the batch has no file"
        if kind == "numpy":
            count_ = int(np.prod(shape, dtype=np.int64))
            return np.frombuffer(self._mapped, dtype=dtype, count=count_, offset=offset).reshape(shape)
        import torch

        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        raw = np.frombuffer(self._mapped, dtype=np.uint8, count=nbytes, offset=offset)
        return torch.from_numpy(raw).view(dtype).reshape(shape)

    def _inline(self, number: int, data: bytes | None, dtype: Any, shape: tuple[int, ...]) -> Any:
        """A small tensor from its raw bytes, over the same memory as earlier tensors of its storage."""
        import torch

        raw = self._inlined.get(number)
        if raw is None:
            # A bytearray: the tensor must be writable, as a pickled one is.
            raw = self._inlined[number] = np.frombuffer(bytearray(data or b""), dtype=np.uint8)
        return torch.from_numpy(raw).view(dtype).reshape(shape)


class SlotTable:
    """The parent's side of one worker's recycled files: their state bytes and the parent's mappings of them.

    One per worker process, made when its first recycled file arrives, kept
    in ``_slot_tables`` until the pool shuts down (``forget_slot_tables``).
    A file stays mapped while it is the slot's file, so a new batch in it
    costs neither a new mapping nor page faults on either side.
    """

    def __init__(self, state_name: str) -> None:
        """Args:
        state_name: the worker's state file (``ShmArena.state_name``).
        """
        self._state = _map(state_name)
        self._maps: dict[int, tuple[str, mmap.mmap]] = {}  # slot -> (its file's name, the mapping)

    @classmethod
    def of(cls, state_name: str) -> SlotTable:
        """The table of the worker whose state file is ``state_name``."""
        table = _slot_tables.get(state_name)
        if table is None:
            table = _slot_tables.setdefault(state_name, cls(state_name))
        return table

    def view(self, slot: int, name: str) -> np.ndarray:
        """The bytes of ``slot``'s file ``name``; the slot is freed when this array (and every view of it) is."""
        entry = self._maps.get(slot)
        if entry is None or entry[0] != name:  # first use, or the worker made a new file for another size
            entry = self._maps[slot] = (name, _map(name))
        raw = np.frombuffer(entry[1], dtype=np.uint8)
        weakref.finalize(raw, _mark_free, self._state, slot).atexit = False
        return raw

    def free(self, slot: int) -> None:
        """Give ``slot`` back to its worker without reading it (a dropped or stale batch)."""
        _mark_free(self._state, slot)


_slot_tables: dict[str, SlotTable] = {}  # state file name -> table; read and written by consumers' threads


def _mark_free(state: mmap.mmap, slot: int) -> None:
    """Let the worker write ``slot`` again (runs when the last tensor over its file is freed)."""
    try:
        state[slot] = FREE
    except ValueError:  # closed: the pool and its worker are gone
        pass


def forget_slot_tables(prefix: str) -> None:
    """Drop the parent's tables of the pool ``prefix`` (at shutdown; tensors still alive keep their mappings)."""
    for state_name in [name for name in _slot_tables if name.startswith(f"{prefix}-")]:
        _slot_tables.pop(state_name, None)


def _map(name: str) -> mmap.mmap:
    """Map the whole of ``/dev/shm/<name>``, readable and writable."""
    fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _map_and_unlink(name: str) -> mmap.mmap:
    """Map a worker's file and unlink it: the mapping stays valid, the name is gone from /dev/shm."""
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_RDWR)
    try:
        os.unlink(path)
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def decode(pickled: bytes, shm_name: str | None, layout: list[tuple[str, Any, Any, Any]]) -> Any:
    """Parent side: rebuild the batch and unlink its shared-memory files."""
    mapped = _map_and_unlink(shm_name) if shm_name is not None else None
    try:
        return _ArrayUnpickler(io.BytesIO(pickled), mapped, layout).load()
    except BaseException:
        discard_encoded(pickled, shm_name, layout)  # files that the failed load did not reach yet
        raise


def discard_encoded(pickled: bytes, shm_name: str | None, layout: list[tuple[str, Any, Any, Any]]) -> None:
    """Unlink every file of an encoded batch without reading it (a dropped or stale batch)."""
    discard(shm_name)
    for kind, where, _dtype, _shape in layout:
        if kind != "torch_file":
            continue
        if isinstance(where, RecycledFile):
            try:
                SlotTable.of(where.state_name).free(where.slot)
            except FileNotFoundError:  # the pool was swept: the worker is gone
                pass
        else:
            discard(where)


def discard(shm_name: str | None) -> None:
    """Unlink a batch's file without reading it (a dropped or stale batch)."""
    if shm_name is not None:
        try:
            os.unlink(os.path.join(SHM_DIR, shm_name))
        except FileNotFoundError:
            pass


def remove_leftovers(prefix: str) -> int:
    """Unlink every file of ``prefix`` left in /dev/shm; return how many."""
    removed = 0
    for path in glob.glob(os.path.join(SHM_DIR, f"{glob.escape(prefix)}-*")):
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed
