"""Collating straight into shared memory in a worker process, as torch's DataLoader does.

In:  a batch of samples, in a worker process whose loader uses the default
     ``collate_fn`` with torch installed.
Out: exactly what torch's ``default_collate`` returns, except that every
     stacked tensor of at least ``_shm.MIN_SHM_BYTES`` is written into a
     shared-memory file of its own (``_shm.new_file``: no name), recycled
     from earlier batches where one is free, and recorded in the worker's
     ``ShmArena``. ``_shm.encode`` then sends such a tensor as its file
     instead of copying it into the batch's file, so the batch's data is
     written once, by the stack itself.

Without this, a worker process collates into private memory and ``_processes.shm``
copies the result: one more pass over every byte and twice the page faults,
which on image-sized samples is a visible share of a sample's cost.

Ownership: the arena belongs to one worker process and keeps its recycled
files mapped for the pool's life. It holds a file's descriptor until the file
has been handed to the parent once (``files_for``, then ``handed_over``):
``_shm.encode`` gives the descriptors of the files a batch references to the
caller, which sends and closes them; the parent keeps a recycled file mapped
and frees its slot when its tensors are gone. The arena frees the rest (a
batch that failed, a tensor the batch did not keep whole). Nothing has a
name, so a killed worker leaves nothing behind.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from itertools import chain
from typing import Any, NamedTuple

import numpy as np

from . import shm as _shm

#: Recycled files per worker process: enough for every batch a default pool keeps in flight and the few
#: the training loop holds; a worker whose files are all in use makes one-off files as before.
SLOTS = 16


class OwnFile(NamedTuple):
    """A one-off file that one stacked tensor was written into: its descriptor and size."""

    fd: int
    nbytes: int


class _Slot:
    """One recycled file: its mapping, and its descriptor until the parent has it (then ``None``)."""

    __slots__ = ("fd", "mapped", "nbytes")

    def __init__(self, fd: int, nbytes: int, mapped: mmap.mmap) -> None:
        self.fd: int | None = fd
        self.nbytes = nbytes
        self.mapped = mapped


class ShmArena:
    """The shared-memory files one worker process collates into, recycled once the parent is done with them.

    A stacked tensor goes into one of ``SLOTS`` files the worker keeps
    mapped, when one of the right size is free: rewriting pages that are
    already there costs a fraction of faulting in and zeroing new ones
    (the kernel zero-fills every new page on its first touch). Who may write a
    file is one byte per slot in a small state file: the worker sets it to
    ``IN_USE`` before writing and sends the file; the parent sets it back to
    ``FREE`` once no tensor over the file is left (``_shm.SlotTable``).
    Nobody else writes it, so no lock is needed.
    """

    def __init__(self, prefix: str, slots: int = SLOTS) -> None:
        """Args:
        prefix: the pool's prefix: it names this worker's table in the parent.
        slots: how many files to recycle.
        """
        self._prefix = prefix
        # data_ptr -> (where it travels, bytes) of this batch's tensors
        self.files: dict[int, tuple[OwnFile | int, int]] = {}  # a one-off file, or a recycled slot's number
        self.table = f"{prefix}-{os.getpid()}"
        self._state_fd: int | None
        self._state_fd, self._state = _shm.new_file(slots, prefix)
        self._slots: list[_Slot | None] = [None] * slots

    def tensor(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A new CPU tensor of ``shape`` and ``dtype`` over a free recycled file, or else a new one."""
        import torch

        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        slot = self._free_slot(nbytes)
        where: OwnFile | int
        if slot is None:
            fd, mapped = _shm.new_file(nbytes, self._prefix)
            where = OwnFile(fd, nbytes)
        else:
            entry = self._slots[slot]
            if entry is None or entry.nbytes != nbytes:
                if entry is not None and entry.fd is not None:
                    os.close(entry.fd)  # a file the parent never had; the old mapping goes with its tensors
                entry = self._slots[slot] = _Slot(*_file_and_size(nbytes, self._prefix))
            self._state[slot] = _shm.IN_USE
            where, mapped = slot, entry.mapped
        raw = np.frombuffer(mapped, dtype=np.uint8, count=nbytes)  # keeps the mapping alive as long as the tensor
        result = torch.from_numpy(raw).view(dtype).reshape(shape)
        self.files[result.data_ptr()] = (where, nbytes)
        return result

    def _free_slot(self, nbytes: int) -> int | None:
        """A free slot: one whose file has ``nbytes`` first, then an empty one, then any; ``None`` if all are in use."""
        free = [slot for slot in range(len(self._slots)) if self._state[slot] == _shm.FREE]
        sized = (slot for slot in free if (entry := self._slots[slot]) is not None and entry.nbytes == nbytes)
        empty = (slot for slot in free if self._slots[slot] is None)
        return next(chain(sized, empty, free), None)

    def take(self, tensor: Any) -> OwnFile | int | None:
        """Where ``tensor`` travels (its one-off file, or its slot) if it is exactly one of this batch's files.

        ``None`` otherwise.

        The file then belongs to the batch: a one-off file's descriptor goes
        with it (``files_for``), and the parent frees a recycled one.
        """
        if tensor.storage_offset() or not tensor.is_contiguous():
            return None
        entry = self.files.get(tensor.data_ptr())
        if entry is None or entry[1] != tensor.numel() * tensor.element_size():
            return None
        del self.files[tensor.data_ptr()]
        return entry[0]

    def files_for(self, where: OwnFile | int, carried: list[int]) -> list[tuple[_shm.FileHeader, int]]:
        """The files the parent needs for ``where`` and has not had yet, with their descriptors.

        Args:
            where: what ``take`` returned.
            carried: the descriptors the batch already carries (the state
                file goes once).

        A recycled file's and the state file's descriptors stay the arena's
        until ``handed_over``.
        """
        if isinstance(where, OwnFile):
            return [((_shm.OWN, where.nbytes, None, -1), where.fd)]
        needed: list[tuple[_shm.FileHeader, int]] = []
        if self._state_fd is not None and self._state_fd not in carried:
            needed.append(((_shm.STATE, len(self._slots), self.table, -1), self._state_fd))
        entry = self._slots[where]
        assert entry is not None  # a slot that a tensor was written into has a file
        if entry.fd is not None and entry.fd not in carried:
            needed.append(((_shm.SLOT, entry.nbytes, self.table, where), entry.fd))
        return needed

    def handed_over(self, files: tuple[_shm.FileHeader, ...]) -> None:
        """A batch was encoded with ``files``: their descriptors are the caller's to send and close now."""
        for role, _nbytes, _table, slot in files:
            if role == _shm.STATE:
                self._state_fd = None
            elif role == _shm.SLOT:
                entry = self._slots[slot]
                assert entry is not None
                entry.fd = None

    def give_back(self, where: OwnFile | int) -> None:
        """Free a file that ``take`` handed out but that was never sent (encoding the batch failed)."""
        if isinstance(where, OwnFile):
            os.close(where.fd)
        else:
            self._state[where] = _shm.FREE

    def release(self) -> None:
        """Free the files no batch took (call after every batch, sent or failed)."""
        for where, _nbytes in self.files.values():
            self.give_back(where)
        self.files.clear()


def _file_and_size(nbytes: int, prefix: str) -> tuple[int, int, mmap.mmap]:
    fd, mapped = _shm.new_file(nbytes, prefix)
    return fd, nbytes, mapped


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
