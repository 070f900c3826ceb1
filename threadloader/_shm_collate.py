"""Collating straight into shared memory in a worker process, as torch's DataLoader does.

In:  a batch of samples, in a worker process whose loader uses the default
     ``collate_fn`` with torch installed.
Out: exactly what torch's ``default_collate`` returns, except that every
     stacked tensor of at least ``_shm.MIN_SHM_BYTES`` is written into a
     shared-memory file of its own (``/dev/shm/<prefix>-...``), recycled
     from earlier batches where one is free, and recorded in the worker's
     ``ShmArena``. ``_shm.encode`` then sends such a tensor by its
     file's name instead of copying it into the batch's file, so the batch's
     data is written once, by the stack itself.

Without this, a worker process collates into private memory and ``_shm``
copies the result: one more pass over every byte and twice the page faults,
which on image-sized samples is a visible share of a sample's cost.

Ownership: the arena belongs to one worker process and keeps its recycled
files for the pool's life. ``_shm.encode`` hands the files a batch references
to the parent, which unlinks a one-off file on receipt and frees a recycled
one when its tensors are gone; the arena frees the rest (a batch that
failed, or a tensor the batch did not keep whole). ``_shm.remove_leftovers``
sweeps every file of the pool when it shuts down, and what a dead worker left.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from itertools import chain, count
from typing import Any

import numpy as np

from . import _shm

_counter = count()


#: Recycled files per worker process: enough for every batch a default pool keeps in flight and the few
#: the training loop holds; a worker whose files are all in use makes one-off files as before.
SLOTS = 16


class ShmArena:
    """The shared-memory files one worker process collates into, recycled once the parent is done with them.

    A stacked tensor goes into one of ``SLOTS`` files the worker keeps
    mapped, when one of the right size is free: rewriting pages that are
    already there costs a fraction of faulting in and zeroing new ones
    (the kernel zero-fills every new page on its first touch). Who may write a
    file is one byte per slot in a small state file (``<prefix>-<pid>-slots``):
    the worker sets it to ``IN_USE`` before writing and sends the file's
    name; the parent sets it back to ``FREE`` once no tensor over the file is
    left (``_shm.SlotTable``). Nobody else writes it, so no lock is needed.
    """

    def __init__(self, prefix: str, slots: int = SLOTS) -> None:
        """Args:
        prefix: the pool's file-name prefix (so the parent's sweep finds them).
        slots: how many files to recycle.
        """
        self._prefix = prefix
        # data_ptr -> (where it travels, bytes) of this batch's tensors
        self.files: dict[int, tuple[str | _shm.RecycledFile, int]] = {}
        self.state_name = f"{prefix}-{os.getpid()}-slots"
        self._state = _new_file(self.state_name, slots)
        self._slots: list[tuple[str, int, mmap.mmap] | None] = [None] * slots

    def tensor(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A new CPU tensor of ``shape`` and ``dtype`` over a free recycled file, or else a new one."""
        import torch

        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        slot = self._free_slot(nbytes)
        where: str | _shm.RecycledFile
        if slot is None:
            where = f"{self._prefix}-{os.getpid()}-c{next(_counter)}"
            mapped = _new_file(where, nbytes)
        else:
            entry = self._slots[slot]
            if entry is None or entry[1] != nbytes:
                if entry is not None:
                    _shm.discard(entry[0])  # the parent maps a file only while the slot is in use
                name = f"{self._prefix}-{os.getpid()}-s{next(_counter)}"
                entry = self._slots[slot] = (name, nbytes, _new_file(name, nbytes))
            self._state[slot] = _shm.IN_USE
            where, mapped = _shm.RecycledFile(entry[0], self.state_name, slot), entry[2]
        raw = np.frombuffer(mapped, dtype=np.uint8, count=nbytes)  # keeps the mapping alive as long as the tensor
        result = torch.from_numpy(raw).view(dtype).reshape(shape)
        self.files[result.data_ptr()] = (where, nbytes)
        return result

    def _free_slot(self, nbytes: int) -> int | None:
        """A free slot: one whose file has ``nbytes`` first, then an empty one, then any; ``None`` if all are in use."""
        free = [slot for slot in range(len(self._slots)) if self._state[slot] == _shm.FREE]
        sized = (slot for slot in free if (entry := self._slots[slot]) is not None and entry[1] == nbytes)
        empty = (slot for slot in free if self._slots[slot] is None)
        return next(chain(sized, empty, free), None)

    def take(self, tensor: Any) -> str | _shm.RecycledFile | None:
        """Where ``tensor`` travels (``_shm``'s file reference) if it is exactly one of this batch's files.

        ``None`` otherwise.

        The file then belongs to the batch: the parent unlinks a one-off file
        and frees a recycled one.
        """
        if tensor.storage_offset() or not tensor.is_contiguous():
            return None
        entry = self.files.get(tensor.data_ptr())
        if entry is None or entry[1] != tensor.numel() * tensor.element_size():
            return None
        del self.files[tensor.data_ptr()]
        return entry[0]

    def give_back(self, where: str | _shm.RecycledFile) -> None:
        """Free a file that ``take`` handed out but that was never sent (encoding the batch failed)."""
        if isinstance(where, _shm.RecycledFile):
            self._state[where.slot] = _shm.FREE
        else:
            _shm.discard(where)

    def release(self) -> None:
        """Free the files no batch took (call after every batch, sent or failed)."""
        for where, _nbytes in self.files.values():
            self.give_back(where)
        self.files.clear()


def _new_file(name: str, nbytes: int) -> mmap.mmap:
    """Create ``/dev/shm/<name>`` of ``nbytes`` zero bytes and map it."""
    path = os.path.join(_shm.SHM_DIR, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, nbytes)
        return mmap.mmap(fd, nbytes)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


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
