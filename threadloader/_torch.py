"""torch, where it is installed: the classes threadloader's public classes derive from, and worker info.

In:  nothing; imported by threadloader's own modules. It imports torch when
     torch is installed, because frameworks decide by ``isinstance`` whether a
     loader is torch's (Lightning injects a ``DistributedSampler`` only then),
     so ``threadloader.DataLoader`` and its samplers must derive from torch's
     classes before the first loader exists.
Out: ``data``, the ``torch.utils.data`` module or ``None``; ``base(name)``,
     a class of ``torch.utils.data`` to derive from, or ``object``;
     ``publish_worker(...)`` and ``forget_worker()``, which set and clear
     what ``torch.utils.data.get_worker_info()`` returns in the calling
     worker; ``pin_batch``, torch's pinning of a batch; the ``IterDataPipe``
     steps torch's workers take (copy, shard, seed).

``torch.utils.data.get_worker_info()`` returns a module global that torch's
worker processes set. threadloader's worker threads share one process, so
each needs its own answer: ``_install_worker_info_hook`` gives torch's
function (the very function object, so ``from torch.utils.data import
get_worker_info`` done before threadloader was imported sees it too) a body
that first reads the calling thread's threadloader worker info, then falls
back to torch's global, which torch's own workers still set.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any


def _import_torch_data() -> ModuleType | None:
    try:
        if importlib.util.find_spec("torch") is None:
            return None
        import torch.utils.data
    except (ImportError, ValueError):  # ValueError: a stub module whose __spec__ is None
        return None
    return torch.utils.data


data: ModuleType | None = _import_torch_data()

#: Per-thread worker info torch's ``get_worker_info`` returns (``.torch_info``), and whether that worker is a
#: thread (``.thread``); each worker sets its own through ``publish_worker`` and clears it at its end.
worker_local = threading.local()

# The body torch's get_worker_info gets. Its names resolve in torch's worker module, where
# ``_threadloader_local`` and ``_threadloader_frame`` are put next to torch's own ``_worker_info``.
# torch's default collate asks get_worker_info() whether it runs in a worker *process*, and then stacks
# each batch into a new shared-memory file for the trip to the parent: a worker thread's batch makes no
# such trip, so torch's collate module alone is told "no worker" there, and stacks into ordinary memory.
_HOOK_SOURCE = '''
def get_worker_info():
    info = getattr(_threadloader_local, "torch_info", None)
    if info is None:
        return _worker_info
    if _threadloader_local.thread and _threadloader_frame(1).f_globals.get("__name__") == _threadloader_collate:
        return None
    return info
'''
_COLLATE_MODULE = "torch.utils.data._utils.collate"


def base(name: str, default: type = object) -> type:
    """The class ``torch.utils.data.<name>`` to derive from, or ``default`` without torch."""
    if data is None:
        return default
    cls = getattr(data, name)
    assert isinstance(cls, type)
    return cls


def _install_worker_info_hook() -> None:
    """Make torch's ``get_worker_info`` answer per thread inside threadloader workers (idempotent)."""
    if data is None:
        return
    worker_module = data._utils.worker
    function = worker_module.get_worker_info
    if getattr(worker_module, "_threadloader_local", None) is worker_local:
        return
    namespace: dict[str, Any] = {}
    exec(compile(_HOOK_SOURCE, "<threadloader worker-info hook>", "exec"), {}, namespace)
    worker_module._threadloader_local = worker_local
    worker_module._threadloader_frame = sys._getframe
    worker_module._threadloader_collate = _COLLATE_MODULE
    function.__code__ = namespace["get_worker_info"].__code__


def _lazy_rng_type(rng_type: type) -> type:
    """A subclass of torch's ``_RNG`` whose generators are a ``WorkerGenerators``' (made once per torch).

    torch's ``_RNG`` is a frozen dataclass holding three generators fixed per
    worker thread. Ours answers each attribute when it is read: the loading
    sample's generator (so ``thread_safe_generator()`` draws depend on the
    sample, not on the worker), else the worker's own. It is still an
    ``_RNG`` for code that checks.
    """
    cached = _lazy_rng_types.get(rng_type)
    if cached is not None:
        return cached

    class LazyRNG(rng_type):  # type: ignore[misc]  # torch's class, known only at run time
        __slots__ = ("_generators",)

        def __init__(self, generators: Any) -> None:  # torch's frozen __init__ would set the fields below
            object.__setattr__(self, "_generators", generators)

        @property
        def random_generator(self) -> Any:
            return self._generators.random()

        @property
        def torch_generator(self) -> Any:
            return self._generators.torch()

        @property
        def numpy_generator(self) -> Any:
            return self._generators.numpy()

    LazyRNG.__name__ = LazyRNG.__qualname__ = "_RNG"
    _lazy_rng_types[rng_type] = LazyRNG
    return LazyRNG


_lazy_rng_types: dict[type, type] = {}


def torch_worker_info(
    worker_id: int, num_workers: int, seed: int, dataset: Any, thread: bool, generators: Any = None
) -> Any:
    """torch's ``WorkerInfo`` for one threadloader worker, or ``None`` without torch.

    Thread workers get what torch gives its own thread workers:
    ``worker_method "thread"`` and generators (``rng``), where this torch's
    ``WorkerInfo`` has those fields. Ours are the worker's
    ``randomness.WorkerGenerators``: the loading sample's while one loads.
    """
    if data is None:
        return None
    worker_module = data._utils.worker
    fields = {f.name for f in dataclasses.fields(worker_module.WorkerInfo)}
    values: dict[str, Any] = {"id": worker_id, "num_workers": num_workers, "seed": seed, "dataset": dataset}
    if "worker_method" in fields:
        values["worker_method"] = "thread" if thread else "multiprocessing"
    rng_type = getattr(worker_module, "_RNG", None)
    if thread and "rng" in fields and rng_type is not None and generators is not None:
        values["rng"] = _lazy_rng_type(rng_type)(generators)
    return worker_module.WorkerInfo(**values)


def publish_worker(
    worker_id: int, num_workers: int, seed: int, dataset: Any, thread: bool, generators: Any = None
) -> None:
    """Make ``torch.utils.data.get_worker_info()`` describe this worker, in the calling thread only."""
    worker_local.thread = thread
    worker_local.torch_info = torch_worker_info(worker_id, num_workers, seed, dataset, thread, generators)


def forget_worker() -> None:
    """Undo ``publish_worker`` in the calling thread (the worker ends)."""
    worker_local.torch_info = None


def pin_batch(batch: Any) -> Any:
    """Pin the tensors of a batch (torch's own pinning walk)."""
    from torch.utils.data._utils.pin_memory import pin_memory

    return pin_memory(batch)  # type: ignore[no-untyped-call]  # torch's function has no annotations


def is_datapipe(dataset: Any) -> bool:
    """True for a torch ``IterDataPipe``."""
    return data is not None and isinstance(dataset, data.IterDataPipe)


# torch walks a datapipe graph by installing a hook on the IterDataPipe class itself, so two threads
# walking graphs at once collide ("Attempt to override existing reduce_ex_hook"): one walk at a time.
_datapipe_lock = threading.Lock()


def copy_datapipe(pipe: Any) -> Any:
    """A worker thread's own copy of an ``IterDataPipe`` (a pipe allows one live iterator)."""
    import copy

    with _datapipe_lock:
        return copy.deepcopy(pipe)


def shard_datapipe(pipe: Any, worker_id: int, num_workers: int) -> None:
    """Give one worker its shard of an ``IterDataPipe`` (its ``sharding_filter`` steps), as torch's workers do.

    Shards across distributed ranks first, then across this rank's workers.
    """
    assert data is not None
    world, rank = 1, 0
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        world, rank = distributed.get_world_size(), distributed.get_rank()
    with _datapipe_lock:
        data.graph_settings.apply_sharding(pipe, num_workers * world, worker_id * world + rank)


def seed_datapipe(pipe: Any, seed: int) -> None:
    """Seed an ``IterDataPipe``'s random steps for one epoch (in place, as torch's ``apply_random_seed``)."""
    assert data is not None
    import torch

    with _datapipe_lock:
        data.graph_settings.apply_random_seed(pipe, torch.Generator().manual_seed(seed))


_install_worker_info_hook()
