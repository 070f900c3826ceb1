"""Loading and collating one batch for one worker: one class per dataset style.

In:  from the worker's ``WorkerRuntime``: the loader's ``FetchSpec``, the
     dataset this worker reads (the loader's, a replica or a datapipe shard),
     the ``Failure`` of the worker's setup if it failed, and each ticket's
     ``(generation, payload)``; during a timed batch, the runtime's totals
     array and ``timing`` flag.
Out: ``fetch(generation, payload)``, an ``Outcome``: ``(OK, batch)``,
     ``(ERROR, Failure)`` or ``(EXHAUSTED, None)``; during a timed batch,
     the clock reading when its collate started, in the runtime's totals
     (``worker._COLLATE_STARTED``).

``MapFetch`` loads the payload's indices (through ``__getitems__`` where the
dataset has it), or one index without auto-collation, and sends a
``BatchPart``'s samples back uncollated. ``IterableFetch`` owns the worker's
dataset iterator: a new generation starts a new one, and after it ran out
every ticket of that epoch answers ``EXHAUSTED``. While samples load, each
sets what its generators derive from (``randomness.current``): a map-style
sample its index, a ``__getitems__`` call its index list, a batch's collate
step that list tagged ``"collate"``; in a worker process ``seed_globals``
then seeds the process's global generators for it. An iterable-style
worker's stream is its own: a new epoch calls ``on_new_epoch``.

User code never kills a worker: whatever it raises, even ``SystemExit``,
comes back in-band as ``(ERROR, Failure)`` naming the phase. A worker whose
setup failed answers every map-style ticket with that failure, as torch's
workers do, and an iterable-style epoch's first ticket (the rest: exhausted).

Ownership: a fetcher belongs to one ``WorkerRuntime`` and runs only in its
worker's thread. It keeps the few fields of the spec it reads per batch, not
the spec, so a replica's template is not kept alive through it.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from itertools import islice
from time import perf_counter
from typing import TYPE_CHECKING, Any

from .. import _torch, randomness
from .._contract import ERROR, EXHAUSTED, OK, BatchPart, Failure, Outcome

_COLLATE = "collate"  # tags a batch's collate step in its generators' key

if TYPE_CHECKING:
    from .spec import FetchSpec


class _Fetch:
    """What both dataset styles share: the dataset, the setup failure, and collation (timed if asked).

    Attributes:
        dataset: what this worker reads.
        init_failure: the worker's setup failure (``replicate``, ``worker_init_fn``), if any.
        timing: set by the runtime during a timed batch: ``_collate`` then
            writes when it started into ``totals``.
        totals: the runtime's totals array (``None`` when untimed).
    """

    def __init__(self, spec: FetchSpec) -> None:
        self._seed = spec.seed
        self._auto_collation = spec.auto_collation
        self._collate_fn: Callable[[Any], Any] = spec.collate_fn
        self._pin = spec.pin_memory
        self.init_failure: Failure | None = None
        # A worker process's: seeds its global generators before each sample (randomness.seed_process_globals)
        self.seed_globals: Callable[[tuple[int, int, int]], None] | None = None
        self.timing = False
        self.totals: array[float] | None = None
        self.dataset: Any = None
        self.use_dataset(spec.dataset)

    def use_dataset(self, dataset: Any) -> None:
        """Read ``dataset`` from now on (a replica or a datapipe shard)."""
        self.dataset = dataset

    def stop(self) -> None:
        """The worker ends: let go of what it was reading."""

    def _collate(self, data: Any) -> Outcome:
        if self.timing:  # a timed batch
            # Index 4 is ``worker._COLLATE_STARTED``: a literal, as on the rest of the per-batch path.
            self.totals[4] = perf_counter()  # type: ignore[index]  # the runtime reads it when the batch ends
        try:
            batch = self._collate_fn(data)
            if self._pin:
                batch = _torch.pin_batch(batch)
        except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
            return ERROR, Failure(exc, "collate_fn" if not self._pin else "collate_fn or pin_memory")
        return OK, batch


class MapFetch(_Fetch):
    """Fetch for a map-style dataset: a ticket's payload is an index batch, one index or a ``BatchPart``."""

    def use_dataset(self, dataset: Any) -> None:
        """Read ``dataset`` from now on; batches go through its ``__getitems__`` where it has one."""
        self.dataset = dataset
        getitems = getattr(dataset, "__getitems__", None)
        self._getitems = getitems if (getitems and self._auto_collation) else None

    def fetch(self, generation: int, payload: Any) -> Outcome:
        """Load and collate the batch of ``payload`` (a ``BatchPart``'s samples come back uncollated)."""
        if self.init_failure is not None:
            return ERROR, self.init_failure  # every batch this worker takes fails, as in torch
        sample = randomness.current
        sample.base = base = (self._seed, generation)  # what the samples' generators derive from
        try:
            return self._load(payload, sample, base)
        finally:
            sample.base = None
            sample.index = None
            sample.call = None
            sample.draws = None
            sample.call_draws = None

    def _load(self, payload: Any, sample: Any, base: tuple[int, int]) -> Outcome:
        dataset = self.dataset
        seed_globals = self.seed_globals
        part = payload if type(payload) is BatchPart else None
        if part is not None:
            payload = part.indices
        if not self._auto_collation:
            sample.index = payload
            sample.draws = None
            if seed_globals is not None:
                seed_globals(randomness.sample_key(base, payload))
            try:
                data = dataset[payload]
            except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
                return ERROR, Failure(exc, "dataset.__getitem__", payload)
            return self._collate(data)  # in the sample's context: one sample, one stream
        if self._getitems is not None:
            sample.call = payload  # the call's generators derive from its index list
            sample.call_draws = None
            if seed_globals is not None:
                seed_globals(randomness.call_key(base, payload))
            try:
                data = self._getitems(payload)
            except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
                return ERROR, Failure(exc, "dataset.__getitems__")
        else:
            data = []
            index = None
            try:
                for index in payload:
                    sample.index = index
                    sample.draws = None  # a fresh generator for each load, even of the same index
                    if seed_globals is not None:
                        seed_globals(randomness.sample_key(base, index))
                    data.append(dataset[index])
            except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
                return ERROR, Failure(exc, "dataset.__getitem__", index)
            sample.index = None
        if part is not None:
            return OK, (part.number, data)  # the consumer joins the parts and collates them
        # collate_fn runs outside any one sample: its generators (a random collate, mixup) derive from the
        # batch's index list, apart from a __getitems__ call's over the same list
        sample.call = collate_call = (_COLLATE, payload)
        sample.call_draws = None
        if seed_globals is not None:
            seed_globals(randomness.call_key(base, collate_call))
        return self._collate(data)


class IterableFetch(_Fetch):
    """Fetch for an iterable-style dataset: each ticket asks for this worker's next batch."""

    def __init__(self, spec: FetchSpec) -> None:
        super().__init__(spec)
        self._batch_size = spec.batch_size
        self._drop_last = spec.drop_last
        self._datapipe = spec.datapipe
        self._iterator: Any = None
        self._generation: int | None = None  # the epoch self._iterator belongs to
        self._exhausted = False
        # The worker's: reseeds what it hands out for the epoch's stream (WorkerRuntime._new_stream)
        self.on_new_epoch: Callable[[int], None] | None = None

    def stop(self) -> None:
        """The worker ends: drop its iterator."""
        self._iterator = None

    def fetch(self, generation: int, payload: Any) -> Outcome:
        """This worker's next batch of epoch ``generation`` (``payload`` is ``None``)."""
        if self.init_failure is not None:
            if self._generation == generation:
                return EXHAUSTED, None  # an iterable-style worker reports it once per epoch, then ends
            self._generation = generation
            return ERROR, self.init_failure
        sample = randomness.current
        sample.base = (self._seed, generation)  # sample_rng(index) derives from it while this batch loads
        try:
            return self._next_batch(generation)
        finally:
            sample.base = None
            sample.draws = None

    def _next_batch(self, generation: int) -> Outcome:
        if generation != self._generation:
            self._generation = generation
            self._exhausted = False
            if self.on_new_epoch is not None:
                self.on_new_epoch(generation)
            try:
                if self._datapipe:  # the same seed in every worker: their shards split one shuffled order
                    _torch.seed_datapipe(self.dataset, randomness.derive_seed(self._seed, generation))
                self._iterator = iter(self.dataset)
            except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
                self._exhausted = True
                return ERROR, Failure(exc, "dataset.__iter__")
        if self._exhausted:
            return EXHAUSTED, None
        size = self._batch_size or 0
        try:
            if self._auto_collation:
                data = list(islice(self._iterator, self._batch_size))
                if not data or (self._drop_last and len(data) < size):
                    self._exhausted = True
                    return EXHAUSTED, None
                if len(data) < size:
                    self._exhausted = True  # the next ticket reports exhaustion
            else:
                data = next(self._iterator)
        except StopIteration:
            self._exhausted = True
            return EXHAUSTED, None
        except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
            return ERROR, Failure(exc, "dataset.__iter__ (next)")
        return self._collate(data)
