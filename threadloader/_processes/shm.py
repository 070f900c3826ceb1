"""Moving a batch from a worker process to the parent through shared memory that has no name.

In (worker): any picklable batch. Its numpy arrays and CPU torch tensors of
     at least ``MIN_SHM_BYTES`` are copied into one shared-memory file per
     batch; the rest of the batch is pickled with the arrays replaced by
     small references (pickle's ``persistent_id``). A smaller tensor that is
     its whole storage, contiguous (a collated batch's labels), travels as
     its raw bytes in the pickle.
Out (parent): the same structure, with arrays and tensors that are views of
     that memory, which is released when the last array over it is freed.

No file has a name. ``new_file`` makes anonymous shared memory
(``os.memfd_create``); a file travels as its descriptor, passed over the
worker's Unix socket (``SCM_RIGHTS``: ``send_files``, ``receive_files``)
before the message that refers to it, and the parent maps it and closes the
descriptor. So nothing in ``/dev/shm`` outlives the processes: when the
worker and the parent are gone, killed or not, the kernel frees every file,
including those still in flight in a socket. Where ``memfd_create`` is
missing (or refused) a file is made in ``/dev/shm`` and unlinked at once, by
the worker, two system calls later (``remove_leftovers`` sweeps the one a
kill may leave between them); where neither works, or descriptors cannot be
passed, the whole batch is pickled.

A tensor that the worker already stacked into a shared-memory file of its own
(``_processes.shm_collate``, the default collate in worker processes) is not copied:
it travels as that file, a one-off one or one of the worker's recycled files
(``ShmArena``'s slots). A recycled file's descriptor travels once, with the
first batch in it; the parent keeps it mapped (``SlotTable``) and marks the
slot free again in the worker's state file (one byte per slot, whose
descriptor travels with the worker's first recycled file) once the last
tensor over it has been freed (``_free_released``).

A message's value is ``(pickled, files, layout)``: ``files`` describes, in
order, each descriptor sent before it (``FileHeader``), and ``layout`` each
array reference in ``pickled``.

Ownership: the worker owns a file until ``encode`` hands its descriptor to
the caller, which sends it and closes its copy; from then on the parent owns
it: ``decode`` maps and closes every descriptor a message brought,
``discard_encoded`` closes those of a message nobody will read. A recycled
file's mapping belongs to its worker's ``SlotTable`` until the pool shuts
down (``forget_slot_tables``).

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

import functools
import glob
import io
import mmap
import os
import pickle
import socket
import sys
import weakref
from itertools import count
from typing import Any, TypeAlias

import numpy as np

MIN_SHM_BYTES = 4096
FREE, IN_USE = 0, 1  # a recycled file's state byte: the worker may write it / a batch over it is in use
SHM_DIR = "/dev/shm"
_ALIGN = 64
#: Descriptors per message on the socket: the kernel takes at most 253 (SCM_MAX_FD) in one.
_FDS_PER_MESSAGE = 250
_counter = count()

#: A file's role in a message (``FileHeader.role``).
BATCH, OWN, STATE, SLOT = "batch", "own", "state", "slot"


#: ``(role, nbytes, table, slot)``: what one descriptor sent before a message is; the parent maps ``nbytes``
#: of it. ``role`` is ``BATCH`` (the batch's own file: arrays at offsets), ``OWN`` (one stacked tensor's
#: one-off file), ``STATE`` (a worker's state file: one byte per recycled slot) or ``SLOT`` (the new file of
#: recycled slot ``slot``); ``table`` names the worker's ``SlotTable`` for the last two (else ``None``, and
#: ``slot`` is -1). A plain tuple, like the rest of a message (``_contract`` says why: one per batch).
FileHeader: TypeAlias = tuple[str, int, str | None, int]
#: ``(table, slot)``: where a tensor in one of a worker's recycled files travels (``_shm_collate.ShmArena``).
SlotFile: TypeAlias = tuple[str, int]


@functools.cache
def _memfd_works() -> bool:
    """True where the kernel makes anonymous shared memory (Linux 3.17+, unless a sandbox refuses it)."""
    try:
        os.close(os.memfd_create("threadloader"))
    except (AttributeError, OSError):
        return False
    return True


def shm_available() -> bool:
    """True where batches can travel through shared memory: files can be made and descriptors passed."""
    if not hasattr(socket, "send_fds") or not hasattr(socket, "AF_UNIX"):
        return False
    return _memfd_works() or (os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK))


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """``(parent's end, worker's end)`` of the socket a worker passes its files' descriptors over.

    Datagrams keep each message's descriptors apart; the parent's end does
    not block, since a message's descriptors are always there before the
    message (a missing one is an error, not a wait).
    """
    kind = getattr(socket, "SOCK_SEQPACKET", socket.SOCK_DGRAM)
    parent, worker = socket.socketpair(socket.AF_UNIX, kind)
    parent.setblocking(False)
    return parent, worker


def send_files(sock: socket.socket, fds: list[int]) -> None:
    """Send ``fds`` (each duplicated into the receiver when it receives) over ``sock``, in order."""
    for start in range(0, len(fds), _FDS_PER_MESSAGE):
        socket.send_fds(sock, [b"f"], fds[start : start + _FDS_PER_MESSAGE])


def receive_files(sock: socket.socket, number: int) -> list[int]:
    """Receive the ``number`` descriptors that ``send_files`` sent for one message.

    Raises:
        OSError: they did not all arrive (the parent has too many open
            files; the socket is then ready for the next message's), or
            none is there (``BlockingIOError``); those that did arrive are
            closed.
    """
    fds: list[int] = []
    truncated = False
    try:
        for start in range(0, number, _FDS_PER_MESSAGE):
            expected = min(_FDS_PER_MESSAGE, number - start)
            _data, received, flags, _address = socket.recv_fds(sock, 1, expected)
            fds.extend(received)
            truncated = truncated or bool(flags & getattr(socket, "MSG_CTRUNC", 0)) or len(received) != expected
    except BaseException:  # none there (a broken worker): the message fails, the files go
        close_all(fds)
        raise
    if truncated:
        close_all(fds)
        raise OSError(
            f"threadloader: a batch's shared memory was lost on its way from the worker process: {len(fds)} of "
            f"its {number} file descriptors arrived (too many open files in this process? see `ulimit -n`)"
        )
    return fds


def close_all(fds: list[int]) -> None:
    """Close every descriptor in ``fds``."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def new_file(nbytes: int, prefix: str) -> tuple[int, mmap.mmap]:
    """Make a shared-memory file of ``nbytes`` zero bytes, with no name; return its descriptor and a mapping.

    Args:
        nbytes: its size (more than 0).
        prefix: the pool's file-name prefix, used only where the file has to
            be made in ``/dev/shm`` (no ``memfd_create``), for the instant
            before it is unlinked.
    """
    fd = _anonymous_fd(prefix)
    try:
        os.ftruncate(fd, nbytes)
        return fd, mmap.mmap(fd, nbytes)
    except BaseException:
        os.close(fd)
        raise


def _anonymous_fd(prefix: str) -> int:
    if _memfd_works():
        return os.memfd_create("threadloader", os.MFD_CLOEXEC)
    path = os.path.join(SHM_DIR, f"{prefix}-{os.getpid()}-{next(_counter)}")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.unlink(path)  # the name lived for this call and the one before; the file lives on by its descriptor
    except BaseException:
        os.close(fd)
        raise
    return fd


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
            if owned is not None:  # already in a shared-memory file of its own: send that file
                self.arrays.append(("arena", owned, (obj.dtype, tuple(obj.shape))))
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


Encoded = tuple[bytes, tuple[FileHeader, ...], list[tuple[str, Any, Any, Any]]]


def encode(batch: Any, prefix: str, arena: Any = None) -> tuple[Encoded, list[int]]:
    """Worker side: pickle ``batch`` with its large arrays in shared memory.

    Args:
        batch: the batch.
        prefix: the pool's file-name prefix (``new_file``).
        arena: the worker's ``_shm_collate.ShmArena``, whose tensors are sent
            as their own files (``None``: copy every array).

    Returns:
        ``((pickled, files, layout), fds)``: send ``fds`` with
        ``send_files``, then the message, then close ``fds`` (they are the
        caller's now, sent or not). ``files[i]`` says what ``fds[i]`` is.
        ``layout[i]`` is ``(kind, where, dtype, shape)`` for the i-th array
        reference in ``pickled``: kind ``"numpy"`` or ``"torch"`` at offset
        ``where`` of the ``BATCH`` file (the last of ``files``), ``"own"``
        in the ``where``-th file, ``"slot"`` in the recycled file ``where``
        (a ``SlotFile``).
    """
    buffer = io.BytesIO()
    pickler = _ArrayPickler(buffer, arena)
    try:
        pickler.dump(batch)
        encoded, fds = _write_batch_file(buffer.getvalue(), pickler.arrays, prefix, arena)
    except BaseException:
        for kind, where, _meta in pickler.arrays:  # files taken from the arena go back to it
            if kind == "arena":
                arena.give_back(where)
        raise
    if arena is not None:
        arena.handed_over(encoded[1])
    return encoded, fds


def _write_batch_file(
    pickled: bytes, arrays: list[tuple[str, Any, Any]], prefix: str, arena: Any
) -> tuple[Encoded, list[int]]:
    """Copy the arrays not already in a file of their own into one new file; return ``encode``'s result."""
    layout: list[tuple[str, Any, Any, Any]] = []
    files: list[FileHeader] = []
    fds: list[int] = []
    offset = 0
    for kind, array, meta in arrays:
        if kind == "arena":
            for header, fd in arena.files_for(array, fds):  # those the parent does not have yet
                files.append(header)
                fds.append(fd)
            if type(array) is int:  # a recycled slot
                layout.append(("slot", (arena.table, array), meta[0], meta[1]))
            else:  # a one-off file: the last one files_for gave
                layout.append(("own", len(files) - 1, meta[0], meta[1]))
            continue
        dtype, shape = (array.dtype, array.shape) if kind == "numpy" else meta
        layout.append((kind, offset, dtype, shape))
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    if not offset:  # every array copied here has at least MIN_SHM_BYTES
        return (pickled, tuple(files), layout), fds
    fd, mapped = new_file(offset, prefix)
    try:
        with mapped:
            for (kind, array, _meta), (_, start, _dtype, _shape) in zip(arrays, layout):
                if kind != "arena" and array.nbytes:
                    target = np.frombuffer(mapped, dtype=np.uint8, count=array.nbytes, offset=start)
                    target[:] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
                    del target
    except BaseException:
        os.close(fd)
        raise
    files.append((BATCH, offset, None, -1))  # last: the indices of the one-off files stand
    fds.append(fd)
    return (pickled, tuple(files), layout), fds


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, mapped: list[Any], layout: list[tuple[str, Any, Any, Any]]) -> None:
        super().__init__(file)
        self._mapped = mapped  # the message's files, mapped, in order (None for a state or slot file)
        self._layout = layout
        self._inlined: dict[int, np.ndarray] = {}  # a small storage's number -> its bytes

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is tuple:  # a small tensor's bytes (``_ArrayPickler._inline``); else an index in layout
            return self._inline(*pid)
        kind, where, dtype, shape = self._layout[pid]
        if kind == "slot" or kind == "own":
            import torch

            if kind == "slot":
                raw = SlotTable.of(where[0]).view(where[1])
            else:
                raw = np.frombuffer(self._mapped[where], dtype=np.uint8)
            return torch.from_numpy(raw).view(dtype).reshape(shape)
        mapped = self._mapped[-1]  # the batch's own file comes last
        assert mapped is not None, "an array in the batch's file, but the batch has no file"
        if kind == "numpy":
            count_ = int(np.prod(shape, dtype=np.int64))
            return np.frombuffer(mapped, dtype=dtype, count=count_, offset=where).reshape(shape)
        import torch

        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        raw = np.frombuffer(mapped, dtype=np.uint8, count=nbytes, offset=where)
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

    One per worker process, made when its state file arrives (with its first
    recycled file), kept in ``_slot_tables`` until the pool shuts down
    (``forget_slot_tables``). A file stays mapped while it is the slot's
    file, so a new batch in it costs neither a new mapping nor page faults
    on either side.
    """

    def __init__(self, state: mmap.mmap) -> None:
        """Args:
        state: the worker's state file, mapped.
        """
        self._state = state
        self._maps: dict[int, mmap.mmap] = {}  # slot -> the mapping of its current file

    @classmethod
    def of(cls, table: str) -> SlotTable:
        """The table named ``table``.

        Raises:
            RuntimeError: no state file of that name arrived (a bug: the
                worker sends it before any recycled file).
        """
        found = _slot_tables.get(table)
        if found is None:
            raise RuntimeError(f"threadloader: a batch in recycled shared memory of {table}, whose state never came")
        return found

    def install(self, slot: int, mapped: mmap.mmap) -> None:
        """Make ``mapped`` the file of ``slot`` (a new one; tensors over the old one keep their mapping)."""
        self._maps[slot] = mapped

    def forget(self, slot: int) -> None:
        """Drop ``slot``'s mapping before its new file is mapped: a failure then leaves no stale file behind."""
        self._maps.pop(slot, None)

    def view(self, slot: int) -> np.ndarray:
        """The bytes of ``slot``'s file; the slot is freed when this array (and every view of it) is.

        Raises:
            RuntimeError: the slot's file never arrived.
        """
        mapped = self._maps.get(slot)
        if mapped is None:
            raise RuntimeError(f"threadloader: recycled shared-memory slot {slot} has no file (its file was lost)")
        raw = np.frombuffer(mapped, dtype=np.uint8)
        view = weakref.ref(raw, _released.append)
        _views[id(view)] = (view, self._state, slot)
        return raw

    def free(self, slot: int) -> None:
        """Give ``slot`` back to its worker without reading it (a dropped or stale batch)."""
        _mark_free(self._state, slot)


_slot_tables: dict[str, SlotTable] = {}  # table name -> table; read and written by consumers' threads
# A recycled file's slot is freed when the last tensor over it is, but not by Python code run then: a
# weakref callback, like a finalizer or __del__, swallows an exception raised in it, and a KeyboardInterrupt
# whose signal came during the C code that freed the tensor is raised in the first Python code after it,
# which would be that callback: Ctrl-C would be lost. The callback is list.append, in C; ``_free_released``
# frees the slots it collected, before each batch is rebuilt. A slot is so freed a batch later at most.
# id(view) -> (view, its worker's state, slot), for each live view of a recycled file (arrays do not hash)
_views: dict[int, tuple[weakref.ref[np.ndarray], mmap.mmap, int]] = {}
_released: list[weakref.ref[np.ndarray]] = []  # views whose arrays are gone, appended by the C callback


def _free_released() -> None:
    """Let the workers write again the slots whose last tensor has been freed since the last call."""
    while _released:
        try:
            entry = _views.pop(id(_released.pop()), None)
        except IndexError:  # another consumer's thread took the last one
            return
        if entry is not None:
            _mark_free(entry[1], entry[2])


def _mark_free(state: mmap.mmap, slot: int) -> None:
    """Let the worker write ``slot`` again."""
    try:
        state[slot] = FREE
    except ValueError:  # closed: the pool and its worker are gone
        pass


def forget_slot_tables(prefix: str) -> None:
    """Drop the parent's tables of the pool ``prefix`` (at shutdown; tensors still alive keep their mappings)."""
    _free_released()
    for table in [name for name in _slot_tables if name.startswith(f"{prefix}-")]:
        _slot_tables.pop(table, None)


def _adopt(files: tuple[FileHeader, ...], fds: list[int]) -> list[mmap.mmap | None]:
    """Map each file a message brought and close its descriptor; install recycled files in their tables.

    Returns:
        The mapping of each file, in order (``None`` for state and slot
        files, which their table holds).
    """
    mapped: list[mmap.mmap | None] = []
    try:
        for (role, nbytes, name, slot), fd in zip(files, fds, strict=True):
            if role == SLOT:
                assert name is not None
                table = SlotTable.of(name)
                table.forget(slot)
                table.install(slot, mmap.mmap(fd, nbytes))
                mapped.append(None)
            elif role == STATE:
                assert name is not None
                _slot_tables[name] = SlotTable(mmap.mmap(fd, nbytes))
                mapped.append(None)
            else:
                mapped.append(mmap.mmap(fd, nbytes))
    finally:
        close_all(fds)
    return mapped


def decode(
    pickled: bytes, files: tuple[FileHeader, ...], layout: list[tuple[str, Any, Any, Any]], fds: list[int]
) -> Any:
    """Parent side: rebuild the batch from a message and the descriptors sent before it (closed here)."""
    _free_released()
    try:
        mapped = _adopt(files, fds)
        return _ArrayUnpickler(io.BytesIO(pickled), mapped, layout).load()
    except BaseException:
        _free_slots(layout)  # recycled files that the failed load did not reach yet
        raise


def discard_encoded(
    pickled: bytes, files: tuple[FileHeader, ...], layout: list[tuple[str, Any, Any, Any]], fds: list[int]
) -> None:
    """Release a message nobody will read (a dropped batch): close its descriptors, free its recycled slots.

    Its state and recycled files are still installed, so that a later batch
    in the same slots finds them.
    """
    _free_released()
    try:
        _adopt(files, fds)
    except (OSError, ValueError, RuntimeError):  # no memory to map them: a later batch in them fails, named
        pass
    _free_slots(layout)


def _free_slots(layout: list[tuple[str, Any, Any, Any]]) -> None:
    """Mark the recycled slots of a batch that will never be read free again."""
    for kind, where, _dtype, _shape in layout:
        if kind == "slot":
            table = _slot_tables.get(where[0])
            if table is not None:  # else the pool was swept: the worker is gone
                table.free(where[1])


def remove_leftovers(prefix: str) -> int:
    """Unlink every file of ``prefix`` left in /dev/shm; return how many.

    Only where files are made in /dev/shm (no ``memfd_create``) can one be
    left: by a worker killed between making a file and unlinking it.
    """
    removed = 0
    for path in glob.glob(os.path.join(SHM_DIR, f"{glob.escape(prefix)}-*")):
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed
