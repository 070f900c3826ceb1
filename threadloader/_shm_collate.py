"""Collating straight into shared memory in a worker process, as torch's DataLoader does.

In:  a batch of samples, in a worker process whose loader uses the default
     ``collate_fn`` with torch installed.
Out: exactly what torch's ``default_collate`` returns, except that every
     stacked tensor of at least ``_shm.MIN_SHM_BYTES`` is written into a
     shared-memory file of its own (``/dev/shm/<prefix>-...``) and recorded in
     the worker's ``ShmArena``. ``_shm.encode`` then sends such a tensor by its
     file's name instead of copying it into the batch's file, so the batch's
     data is written once, by the stack itself.

Without this, a worker process collates into private memory and ``_shm``
copies the result: one more pass over every byte and twice the page faults,
about 0.3 ms a sample on the image workload (16 samples of 0.6 MB a batch).

Ownership: the arena belongs to one worker process. ``_shm.encode`` hands
the files it references to the parent (which unlinks them on receipt) and
the arena unlinks the rest (a batch that failed, or a tensor the batch did
not keep whole); ``_shm.remove_leftovers`` sweeps what a dead worker left.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from itertools import count
from typing import Any

import numpy as np

from . import _shm

_counter = count()


class ShmArena:
    """The shared-memory files one worker process made for the batch it is collating."""

    def __init__(self, prefix: str) -> None:
        """Args:
        prefix: the pool's file-name prefix (so the parent's sweep finds them).
        """
        self._prefix = prefix
        self.files: dict[int, tuple[str, int]] = {}  # data_ptr -> (file name, bytes) of this batch's tensors

    def tensor(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A new CPU tensor of ``shape`` and ``dtype`` over a new shared-memory file."""
        import torch

        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        name = f"{self._prefix}-{os.getpid()}-c{next(_counter)}"
        path = os.path.join(_shm.SHM_DIR, name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, nbytes)
            mapped = mmap.mmap(fd, nbytes)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        raw = np.frombuffer(mapped, dtype=np.uint8)  # keeps the mapping alive as long as the tensor
        result = torch.from_numpy(raw).view(dtype).reshape(shape)
        self.files[result.data_ptr()] = (name, nbytes)
        return result

    def take(self, tensor: Any) -> tuple[str, int] | None:
        """``(file name, bytes)`` if ``tensor`` is exactly one of this batch's files, which then leaves the arena."""
        if tensor.storage_offset() or not tensor.is_contiguous():
            return None
        entry = self.files.get(tensor.data_ptr())
        if entry is None or entry[1] != tensor.numel() * tensor.element_size():
            return None
        del self.files[tensor.data_ptr()]
        return entry

    def release(self) -> None:
        """Unlink the files no batch took (call after every batch, sent or failed)."""
        for name, _nbytes in self.files.values():
            _shm.discard(name)
        self.files.clear()


def make_collate(arena: ShmArena) -> Callable[[Any], Any]:
    """torch's ``default_collate`` with tensors stacked into ``arena``'s shared memory.

    Args:
        arena: the worker's arena.

    Returns:
        A collate function with torch's semantics (torch's own code for every
        type but tensors; tensors as torch does it in its worker processes).
    """
    import torch
    from torch.utils.data._utils.collate import collate, collate_tensor_fn, default_collate_fn_map

    def collate_tensors(batch: Any, *, collate_fn_map: Any = None) -> Any:
        elem = batch[0]
        shape = (len(batch), *elem.shape)
        if (
            elem.is_nested
            or elem.layout != torch.strided
            or elem.device.type != "cpu"
            or any(t.requires_grad or t.shape != elem.shape for t in batch)
            or elem.numel() * len(batch) * elem.element_size() < _shm.MIN_SHM_BYTES
        ):
            return collate_tensor_fn(batch, collate_fn_map=collate_fn_map)  # torch's errors and small batches
        return torch.stack(batch, 0, out=arena.tensor(shape, elem.dtype))  # elem's dtype, as torch's workers do

    fn_map = {**default_collate_fn_map, torch.Tensor: collate_tensors}

    def shm_collate(batch: Any) -> Any:
        return collate(batch, collate_fn_map=fn_map)

    return shm_collate
