"""Moving a batch from a worker process to the parent through shared memory.

In (worker): any picklable batch. Its numpy arrays and CPU torch tensors of
     at least ``MIN_SHM_BYTES`` are copied into one shared-memory file per
     batch (``/dev/shm/<prefix>-<n>``); the rest of the batch is pickled with
     the arrays replaced by small references (pickle's ``persistent_id``).
Out (parent): the same structure, with arrays and tensors that are views of
     that memory. The parent unlinks the file as soon as it has mapped it, so
     the memory is released when the last array over it is freed and nothing
     stays in ``/dev/shm``.

Ownership: the worker creates and fills a file and hands its name over; from
then on the parent owns it. ``remove_leftovers(prefix)`` unlinks files of
batches that never reached the parent (dropped at shutdown, worker crash).
Where ``/dev/shm`` does not exist the whole batch is pickled.
"""

from __future__ import annotations

import glob
import io
import mmap
import os
import pickle
import sys
from itertools import count
from typing import Any

import numpy as np

MIN_SHM_BYTES = 4096
SHM_DIR = "/dev/shm"
_ALIGN = 64
_counter = count()


def shm_available() -> bool:
    """True where POSIX shared memory is a directory we can write to."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


class _ArrayPickler(pickle.Pickler):
    """Collects large arrays and tensors instead of pickling their bytes."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arrays: list[tuple[str, np.ndarray, Any]] = []
        self._torch = sys.modules.get("torch")

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            if obj.dtype.hasobject or obj.nbytes < MIN_SHM_BYTES:
                return None
            self.arrays.append(("numpy", obj, None))
            return len(self.arrays) - 1
        torch = self._torch
        if torch is not None and type(obj) is torch.Tensor:
            if (
                obj.device.type != "cpu"
                or obj.layout != torch.strided
                or obj.requires_grad
                or obj.is_quantized
                or obj.numel() * obj.element_size() < MIN_SHM_BYTES
            ):
                return None
            raw = obj.detach().contiguous().view(-1).view(torch.uint8).numpy()
            self.arrays.append(("torch", raw, (obj.dtype, tuple(obj.shape))))
            return len(self.arrays) - 1
        return None


def encode(batch: Any, prefix: str) -> tuple[bytes, str | None, list[tuple[str, int, Any, Any]]]:
    """Worker side: pickle ``batch`` with its large arrays in shared memory.

    Returns:
        ``(pickled, shm_name, layout)``; ``shm_name`` is ``None`` when no
        array went to shared memory. ``layout[i]`` is ``(kind, offset, dtype,
        shape)`` for the i-th array reference in ``pickled``.
    """
    buffer = io.BytesIO()
    pickler = _ArrayPickler(buffer)
    pickler.dump(batch)
    if not pickler.arrays:
        return buffer.getvalue(), None, []
    layout: list[tuple[str, int, Any, Any]] = []
    offset = 0
    for kind, array, meta in pickler.arrays:
        layout.append((kind, offset, array.dtype if kind == "numpy" else meta[0], array.shape if kind == "numpy" else meta[1]))
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    name = f"{prefix}-{os.getpid()}-{next(_counter)}"
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, offset)
        with mmap.mmap(fd, offset) as mapped:
            for (kind, array, _meta), (_, start, _dtype, _shape) in zip(pickler.arrays, layout):
                if array.nbytes:
                    target = np.frombuffer(mapped, dtype=np.uint8, count=array.nbytes, offset=start)
                    target[:] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
                    del target
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return buffer.getvalue(), name, layout


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, mapped: mmap.mmap | None, layout: list[tuple[str, int, Any, Any]]) -> None:
        super().__init__(file)
        self._mapped = mapped
        self._layout = layout

    def persistent_load(self, pid: Any) -> Any:
        kind, offset, dtype, shape = self._layout[pid]
        if kind == "numpy":
            count_ = int(np.prod(shape, dtype=np.int64))
            return np.frombuffer(self._mapped, dtype=dtype, count=count_, offset=offset).reshape(shape)
        import torch

        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        raw = np.frombuffer(self._mapped, dtype=np.uint8, count=nbytes, offset=offset)
        return torch.from_numpy(raw).view(dtype).reshape(shape)


def decode(pickled: bytes, shm_name: str | None, layout: list[tuple[str, int, Any, Any]]) -> Any:
    """Parent side: rebuild the batch and unlink its shared-memory file."""
    mapped = None
    if shm_name is not None:
        path = os.path.join(SHM_DIR, shm_name)
        fd = os.open(path, os.O_RDWR)
        try:
            os.unlink(path)  # the mapping stays valid; the name is gone from /dev/shm
            size = os.fstat(fd).st_size
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
    return _ArrayUnpickler(io.BytesIO(pickled), mapped, layout).load()


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
