"""``mode="auto"`` on a free-threaded build: threads, replicas or processes, picked by measuring.

The rule (``_choice.choose``) and the memory budget are checked directly; the
probing pool (``_epoch.choosing``) end to end, on datasets whose costs do not
depend on the machine's speed: one that waits (every candidate takes the
same time: threads stay) and one whose samples call ``dict.get`` on a dict the
test's thread built (on 3.13t a worker thread takes a slow path there, many
times slower: replicas or processes win). Whatever is picked, every batch
arrives once, in order, with the draws thread mode gives.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sample_datasets import GeneratorAugmented, list_collate

from threadloader import DataLoader
from threadloader._epoch import choice as _choice
from threadloader._epoch.choice import PROCESSES, REPLICAS, THREADS, ModeChoice, choose

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_mode_choices")]

free_threads = pytest.mark.free_threads


# --- the rule -------------------------------------------------------------------------------


def test_threads_stay_unless_another_is_clearly_faster() -> None:
    assert choose({THREADS: 1e-3, REPLICAS: 0.8e-3, PROCESSES: 0.7e-3}).picked == THREADS
    assert choose({THREADS: 1e-3, REPLICAS: 0.1e-3, PROCESSES: 0.5e-3}).picked == REPLICAS
    assert choose({THREADS: 1e-3, REPLICAS: 0.5e-3, PROCESSES: 0.1e-3}).picked == PROCESSES
    assert choose({THREADS: 1e-3, REPLICAS: 0.2e-3, PROCESSES: 0.18e-3}).picked == REPLICAS  # a near tie
    assert choose({THREADS: 1e-3, PROCESSES: 0.1e-3}).picked == PROCESSES  # replicas not tried
    assert choose({THREADS: 1e-3}).picked == THREADS


def test_the_reason_names_every_figure_and_what_was_not_tried() -> None:
    choice = choose({THREADS: 2e-3, PROCESSES: 1e-4}, "busy", {REPLICAS: "the dataset does not pickle (TypeError)"})
    text = str(choice)
    assert "worker processes" in text and "2,000 µs" in text and "100 µs" in text
    assert "not tried: threads over per-worker replicas (the dataset does not pickle" in text
    assert choice.mode == "process"


# --- remembered per dataset ----------------------------------------------------------------


class _Dataset:
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return index


def test_a_choice_is_remembered_for_the_same_dataset_object_only() -> None:
    dataset, other = _Dataset(), _Dataset()
    _choice.remember(dataset, ModeChoice(REPLICAS, {THREADS: 1.0, REPLICAS: 0.1}, "why"))
    again = _choice.remembered(dataset)
    assert again is not None and again.picked == REPLICAS and again.remembered
    assert str(again).startswith("remembered from an earlier loader")
    assert _choice.remembered(other) is None
    _choice.remember([1, 2], ModeChoice(THREADS))  # a list takes no weak reference: not kept
    assert _choice.remembered([1, 2]) is None


def test_a_remembered_choice_goes_with_its_dataset() -> None:
    dataset = _Dataset()
    _choice.remember(dataset, ModeChoice(PROCESSES))
    del dataset
    assert _choice._remembered == {}


# --- the replica budget --------------------------------------------------------------------


class _ManyRecords:
    """50,000 small dicts: a list short enough to be copied whole into each replica."""

    def __init__(self) -> None:
        self.records = [{"id": i, "label": f"label-{i % 97}"} for i in range(50_000)]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> int:
        return int(self.records[index]["id"])


def test_replicas_that_would_not_fit_the_memory_budget_are_not_made() -> None:
    dataset = _ManyRecords()
    template, why = _choice.replica_template(dataset, workers=2, memory=8 * 2**20)  # 8 MiB available
    assert template is None and "memory budget" in why
    template, why = _choice.replica_template(dataset, workers=2, memory=64 * 2**30)
    assert template is not None and why == ""


def test_a_dataset_that_does_not_pickle_gets_no_replicas() -> None:
    dataset = _Dataset()
    dataset.lock = __import__("threading").Lock()  # type: ignore[attr-defined]
    template, why = _choice.replica_template(dataset, workers=2)
    assert template is None and "does not pickle" in why


# --- the probing pool, end to end ----------------------------------------------------------


class _Waiting:
    """Samples that wait (3 ms): every candidate takes the same time per sample."""

    def __init__(self, length: int = 48, wait_s: float = 0.003) -> None:
        self.length = length
        self.wait_s = wait_s

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        time.sleep(self.wait_s)
        return index


_TABLE = {f"key{i}": i for i in range(1000)}  # made by the thread that imports this module: pytest's main thread


class _GlobalLookups:
    """Samples that call ``dict.get`` on a module-level dict, out of the dataset's reach: no replica copies it,
    no worker thread holds its keys, so a worker thread takes the locked slow path (``docs/ownership.md``) and
    a worker process, whose fork made the dict its own, does not."""

    def __init__(self, length: int = 400, lookups: int = 100) -> None:
        self.length = length
        self.words = " ".join(f"key{(i * 7) % 1000}" for i in range(lookups))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index + 0 * sum(_TABLE.get(word, 0) for word in self.words.split())


class _OwnedLookups:
    """Samples that call ``dict.get`` on a dict the constructing thread built, with keys they make themselves."""

    def __init__(self, length: int = 96, lookups: int = 200) -> None:
        self.length = length
        self.table = {f"key{i}": i for i in range(1000)}
        self.words = " ".join(f"key{(i * 7) % 1000}" for i in range(lookups))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index + 0 * sum(self.table.get(word, 0) for word in self.words.split())


def _indices(loader: DataLoader, epochs: int = 1) -> tuple[list[int], Any]:
    iterator = None
    indices: list[int] = []
    for _ in range(epochs):
        iterator = iter(loader)
        indices += [int(i) for batch in iterator for i in batch]
    return indices, iterator


@free_threads
def test_threads_stay_where_nothing_is_faster() -> None:
    loader = DataLoader(_Waiting(), batch_size=8, num_workers=2)
    indices, iterator = _indices(loader)
    assert indices == list(range(48))
    assert iterator.mode == "thread"
    assert "picked threads over the shared dataset" in iterator.stats.choice


@free_threads
def test_while_choosing_no_candidate_holds_more_than_two_tickets_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadloader._epoch import choosing

    most: dict[str, int] = {}
    send = choosing.ChoosingExecutor._send

    def recording(self: Any, name: str, ticket: Any) -> None:
        send(self, name, ticket)
        if self._winner is None:
            most[name] = max(most.get(name, 0), sum(map(len, self._held[name].values())))

    monkeypatch.setattr(choosing.ChoosingExecutor, "_send", recording)
    indices, _iterator = _indices(DataLoader(_Waiting(), batch_size=2, num_workers=8))
    assert indices == list(range(48))
    # the first to answer (two threads) got every ticket waiting, and loaded them two at a time
    assert 0 < most.get(THREADS, 0) <= 2 * choosing.SHARED_PROBE_THREADS, most


class _FakePool:
    """A candidate's pool as ``_choice_costs`` reads it: one worker's totals."""

    def __init__(self, busy_s: float, cpu_s: float) -> None:
        self._totals = (busy_s, 0.0, busy_s, cpu_s)

    def timings(self, generation: int) -> list[tuple[float, float, float, float] | None]:
        return [self._totals]


def _probe(candidates: dict[str, tuple[float, float]]) -> Any:
    """A probing pool that measured ``{name: (busy_s, cpu_s)}`` over 8 samples each."""
    from threadloader._epoch.choosing import ChoosingExecutor

    probe = ChoosingExecutor.__new__(ChoosingExecutor)
    probe._pools = {name: _FakePool(*totals) for name, totals in candidates.items()}
    probe._answered = dict.fromkeys(candidates, 8)
    probe._kept = {}
    probe._generation = 0
    return probe


def test_cheap_samples_are_measured_over_enough_work_to_outweigh_a_workers_start() -> None:
    from threadloader._epoch import choosing

    # eight samples of 1 ms are enough work; eight of 20 us are not (a new thread's first calls took 0.1-0.3 ms)
    probe = _probe({THREADS: (8e-3, 8e-3), PROCESSES: (8 * 20e-6, 8 * 20e-6)})
    costs = probe._costs()
    assert probe._measured(THREADS, costs) and not probe._measured(PROCESSES, costs)
    probe._answered[PROCESSES] = choosing.PROBE_MAX_SAMPLES  # however cheap, enough samples end the probe
    assert probe._measured(PROCESSES, costs)
    probe._answered[THREADS] = choosing.PROBE_SAMPLES - 1
    assert not probe._measured(THREADS, costs)


def test_samples_that_compute_are_compared_by_cpu_time_and_samples_that_wait_by_busy_time() -> None:
    # on the probe the candidates run side by side: wall time grows with the others' work, CPU time does not
    computing = _probe({THREADS: (8e-3, 6e-3), REPLICAS: (16e-3, 3e-3)})  # replicas crowded, but cheaper
    wall = {THREADS: 1e-3, REPLICAS: 2e-3}
    costs, measure = computing._choice_costs(wall)
    assert measure == "of CPU" and costs == pytest.approx({THREADS: 0.75e-3, REPLICAS: 0.375e-3})
    assert choose(costs, measure).picked == REPLICAS
    waiting = _probe({THREADS: (8e-3, 1e-3), REPLICAS: (4e-3, 1e-3)})  # the shared threads wait for each other
    costs, measure = waiting._choice_costs({THREADS: 1e-3, REPLICAS: 0.5e-3})
    assert measure == "busy" and costs == pytest.approx({THREADS: 1e-3, REPLICAS: 0.5e-3})
    bounded = _probe({THREADS: (8e-3, 6e-3)})  # processes costed by their probe's bound, with no answer yet
    costs, _ = bounded._choice_costs({THREADS: 1e-3, PROCESSES: 9e-3})
    assert costs[PROCESSES] == 9e-3


class _TimedLookups(_OwnedLookups):
    """``_OwnedLookups`` that sums the CPU time its samples take, per calling thread."""

    def __init__(self, length: int, lookups: int) -> None:
        super().__init__(length, lookups)
        self.cpu_s: dict[int, float] = {}  # written by one thread at a time: the main thread, then one worker

    def __getitem__(self, index: int) -> int:
        started = time.thread_time()
        value = super().__getitem__(index)
        ident = threading.get_ident()
        self.cpu_s[ident] = self.cpu_s.get(ident, 0.0) + time.thread_time() - started
        return value


@free_threads
def test_dict_lookups_from_worker_threads_take_the_fast_path() -> None:
    # the pool's first thread holds the dataset's dict keys, so a lookup with a key made by the caller does not
    # fall back to the dict's lock (on 3.13t, dict.get there ran 100 times slower in a worker thread). CPU time
    # inside the samples, not wall time: a busy machine stretches the latter, not the former.
    dataset = _TimedLookups(length=400, lookups=400)
    assert [int(i) for batch in DataLoader(dataset, batch_size=8) for i in batch] == list(range(400))
    serial = dataset.cpu_s.pop(threading.get_ident())
    assert _indices(DataLoader(dataset, batch_size=8, num_workers=1, mode="thread"))[0] == list(range(400))
    (worker,) = dataset.cpu_s.values()
    assert worker < 3 * serial, (worker, serial)  # without the held keys: 10 to 100 times


@free_threads
def test_a_dataset_slow_in_worker_threads_moves_to_processes() -> None:
    dataset = _GlobalLookups()
    loader = DataLoader(dataset, batch_size=8, num_workers=2)
    indices, iterator = _indices(loader)
    assert indices == list(range(400))  # every batch once, in order, across the switch
    choice = iterator.stats.choice
    assert "picked worker processes" in choice, choice
    assert iterator.mode == "process"
    assert "mode='auto'" in str(iterator.stats)
    # the processes' batches are numbered past the threads' and replicas' (2 x 2 workers), after the switch too
    made = {worker.worker_id for worker in iterator.stats.workers if worker.batches}
    assert made & {4, 5} and sum(w.batches for w in iterator.stats.workers if w.worker_id >= 4) > 25, made
    again, second = _indices(DataLoader(dataset, batch_size=8, num_workers=2))  # a fresh loader: remembered
    assert again == list(range(400))
    assert second.stats.choice.startswith("remembered from an earlier loader")


@free_threads
def test_a_remembered_replicas_choice_that_cannot_build_them_runs_threads_and_says_so() -> None:
    dataset = _Dataset()
    _choice.remember(dataset, ModeChoice(REPLICAS, {THREADS: 1.0, REPLICAS: 0.1}, "picked replicas"))
    dataset.lock = threading.Lock()  # type: ignore[attr-defined]  # it no longer pickles
    indices, iterator = _indices(DataLoader(dataset, batch_size=2, num_workers=2))
    assert indices == [0, 1, 2, 3] and iterator.mode == "thread"
    assert "no replicas this epoch: the dataset does not pickle" in iterator.stats.choice, iterator.stats.choice


class _Crowded:
    """Samples that wait longer the more threads read the same object at once, past two (as threads that share
    objects contend for them): two threads on the probe wait as one does, six wait several times longer each. A
    replica or a worker process has a count of its own, so it always waits as one does."""

    def __init__(self, length: int = 240, wait_s: float = 0.002) -> None:
        self.length = length
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._inside = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        state["_inside"] = 0
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        with self._lock:
            self._inside += 1
            crowd = self._inside
        try:
            time.sleep(self.wait_s * max(1, crowd - 1))
        finally:
            with self._lock:
                self._inside -= 1
        return index


def _no_init(worker_id: int) -> None:
    """A ``worker_init_fn`` that does nothing: the consumer's cost no longer stands for the owner's."""


#: The two ways the pool measures: the shared threads against the thread that made the dataset (first), or
#: every candidate from the start (a ``worker_init_fn`` the consumer does not run).
PATHS = {"against the owner": {}, "every candidate": {"worker_init_fn": _no_init}}


@free_threads
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("takes_over", [REPLICAS, PROCESSES])
def test_a_winner_that_slows_down_at_full_size_is_replaced_within_the_epoch(
    takes_over: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One thread (against the owner) or two (every candidate) on the probe wait as one does: threads stay, grow
    # to six, and measured again they wait several times longer; another candidate takes over (against the
    # owner: measured then; else idle until then). One other candidate at a time, so that the
    # probe's noise cannot pick which: no processes where replicas take over; no replicas where processes do,
    # and a probe that waits for the processes' first answer (on a busy machine their start can take long
    # enough for the probe to count them slow without it). Where every candidate is measured, the probe's
    # figures on a busy machine can also make the first pick right at once: the first pick there is threads, at
    # the cost the best candidate showed.
    from threadloader._epoch import choosing

    choice_costs = choosing.ChoosingExecutor._choice_costs

    def threads_first(self: Any, busy: dict[str, float]) -> tuple[dict[str, float], str]:
        costs, measure = choice_costs(self, busy)
        return {**costs, THREADS: min(costs.values())}, measure

    if path == "every candidate":
        monkeypatch.setattr(choosing.ChoosingExecutor, "_choice_costs", threads_first)
    settings: dict[str, Any] = {"batch_size": 4, "num_workers": 6, **PATHS[path]}
    if takes_over == REPLICAS:

        def no_processes(*args: Any, **kwargs: Any) -> Any:
            raise OSError("no worker processes in this test")

        monkeypatch.setattr(choosing, "ProcessExecutor", no_processes)
        mode, numbers = "thread", range(6, 12)
    else:
        monkeypatch.setattr(choosing, "BOUND_MARGIN", 1e6)
        settings["replicate"] = False
        mode, numbers = "process", range(12, 18)
    dataset = _Crowded()
    indices, iterator = _indices(DataLoader(dataset, **settings))
    assert indices == list(range(240))  # in order, exactly once, across the change
    text = iterator.stats.choice
    assert text.startswith(f"picked {_choice._LABELS[takes_over]}"), text
    assert "changed from threads over the shared dataset, which took" in text and "with 6 workers" in text, text
    assert ("with one" in text) == (path == "against the owner"), text
    assert iterator.mode == mode
    took_over = {w.worker_id for w in iterator.stats.workers if w.worker_id in numbers and w.batches}
    assert len(took_over) > 1, iterator.stats  # it grew to size (or was) and loaded batches
    _indices_, later = _indices(DataLoader(dataset, **settings))
    assert later.stats.choice.startswith("remembered") and "changed from threads" in later.stats.choice
    assert later.mode == mode


@free_threads
@pytest.mark.parametrize("path", list(PATHS))
def test_a_winner_as_fast_at_full_size_stays(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reviews: list[float] = []
    revise, outgrown = _choice.revise, _choice.outgrown

    def recording(made: ModeChoice, cost: float, *args: Any) -> Any:
        reviews.append(cost)
        return (revise if args else outgrown)(made, cost, *args)

    monkeypatch.setattr(_choice, "revise", recording)
    monkeypatch.setattr(_choice, "outgrown", recording)
    # (long enough for the probe to end within the epoch: a shorter one chooses at its end, with no review)
    loader = DataLoader(_Waiting(480), batch_size=2, num_workers=6, **PATHS[path])
    indices, iterator = _indices(loader)
    assert indices == list(range(480))
    assert len(reviews) == 1, reviews  # measured again at full size, once
    assert iterator.stats.choice.startswith("picked threads over the shared dataset"), iterator.stats.choice
    assert ("thread that made the dataset" in iterator.stats.choice) == (path == "against the owner")


def test_a_revised_choice_runs_the_rule_again_over_the_candidates_still_running() -> None:
    made = ModeChoice(THREADS, {THREADS: 1e-3, REPLICAS: 1e-3, PROCESSES: 0.9e-3}, "picked threads", measure="busy")
    assert _choice.revise(made, 1.2e-3, 8, (THREADS, REPLICAS, PROCESSES)) is None  # not clearly slower
    revised = _choice.revise(made, 5e-3, 8, (THREADS, REPLICAS, PROCESSES))
    assert revised is not None and revised.picked == REPLICAS  # a near tie with processes: the cheaper in memory
    assert "5,000 µs busy a sample with 8 workers against 1,000 µs on the probe" in revised.reason
    stopped = _choice.revise(made, 5e-3, 8, (THREADS, PROCESSES))  # the replicas had stopped
    assert stopped is not None and stopped.picked == PROCESSES
    assert _choice.revise(made, 5e-3, 8, (THREADS,)) is None  # nothing left to change to


@free_threads
def test_the_choice_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    dataset = _Waiting()
    with caplog.at_level("INFO", logger="threadloader"):
        _indices(DataLoader(dataset, batch_size=8, num_workers=2))
        _indices(DataLoader(dataset, batch_size=8, num_workers=2))
    lines = [record.getMessage() for record in caplog.records if "mode='auto'" in record.getMessage()]
    assert len(lines) == 1 and "_Waiting" in lines[0] and "picked" in lines[0]


@free_threads
def test_probing_changes_no_draw() -> None:
    def draws(**kwargs: Any) -> list[Any]:
        loader = DataLoader(GeneratorAugmented(40, max_sleep=0.001), batch_size=4, shuffle=True, seed=3,
                            num_workers=2, collate_fn=list_collate, **kwargs)
        return [sample for _ in range(2) for batch in loader for sample in batch]

    assert draws() == draws(mode="thread")


@free_threads
@pytest.mark.parametrize("kwargs", [{"mode": "thread"}, {"replicate": True}, {"num_workers": "auto"}])
def test_explicit_settings_are_not_measured(kwargs: dict[str, Any]) -> None:
    settings = {"batch_size": 8, "num_workers": 2, **kwargs}
    _indices_, iterator = _indices(DataLoader(_GlobalLookups(32), **settings))
    assert iterator.stats.choice is None and iterator.mode == "thread"


@free_threads
def test_replicate_false_leaves_threads_and_processes() -> None:
    _indices_, iterator = _indices(DataLoader(_GlobalLookups(), batch_size=8, num_workers=2, replicate=False))
    assert "replicas" not in iterator.stats.choice.split("(")[0]
    assert "per-worker replicas" not in iterator.stats.choice  # not tried, not measured


@free_threads
def test_persistent_workers_keep_the_winner(mode_choice_epochs: int = 3) -> None:
    loader = DataLoader(_GlobalLookups(48), batch_size=8, num_workers=2, persistent_workers=True)
    seen = []
    try:
        for _ in range(mode_choice_epochs):
            iterator = iter(loader)
            assert [int(i) for batch in iterator for i in batch] == list(range(48))
            seen.append((iterator.mode, iterator.stats.choice))
    finally:
        loader.close()
    # one measurement: a pool that measured again would quote other figures (and could pick another mode)
    assert seen == [seen[0]] * mode_choice_epochs, seen
    assert seen[0][1] is not None and not seen[0][1].startswith("remembered"), seen
