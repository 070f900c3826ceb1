"""``replicate``: per-worker copies of Python objects that share array memory."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from sample_datasets import BigRecordsDataset, RecordList, ReopenReplica, VocabularyDataset, list_collate

import threadloader
from threadloader import DataLoader, replicate

pytestmark = pytest.mark.timeout(60)


def test_replicate_copies_python_objects_and_shares_array_memory() -> None:
    torch = pytest.importorskip("torch")
    original = VocabularyDataset()
    original.tensor = torch.arange(10.0)
    copy = replicate(original)
    assert copy is not original and type(copy) is VocabularyDataset
    assert copy.vocab == original.vocab and copy.vocab is not original.vocab
    key = next(iter(original.vocab))
    assert next(iter(copy.vocab)) == key and next(iter(copy.vocab)) is not key  # private str objects
    assert copy.texts is not original.texts and copy.texts[0] is not original.texts[0]
    assert copy.table is not original.table
    assert copy.table.__array_interface__["data"][0] == original.table.__array_interface__["data"][0]
    assert copy.tensor is not original.tensor and copy.tensor.data_ptr() == original.tensor.data_ptr()
    original.table[0] = 42.0
    assert copy.table[0] == 42.0  # the same memory, not a copy


def test_replicate_names_what_cannot_be_copied() -> None:
    class HoldsLock:
        def __init__(self) -> None:
            import threading

            self.lock = threading.Lock()

    with pytest.raises(TypeError, match=r"replicate=True copies the dataset by pickling it.*replicate=callable"):
        list(DataLoader([HoldsLock()], num_workers=1, mode="thread", replicate=True, batch_size=None))


def test_each_thread_worker_gets_its_own_replica() -> None:
    dataset = VocabularyDataset(16)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, mode="thread", replicate=True, collate_fn=list_collate)
    samples = [s for batch in loader for s in batch]
    expected = [dataset[i][0] for i in range(16)]
    assert [value for value, _ in samples] == expected
    owners = {owner for _, owner in samples}
    assert id(dataset) not in owners  # every sample came from a replica
    assert 1 <= len(owners) <= 2


def test_without_replicate_threads_share_the_dataset() -> None:
    dataset = VocabularyDataset(8)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, mode="thread", collate_fn=list_collate)
    assert {owner for batch in loader for _, owner in batch} == {id(dataset)}


def test_callable_replica_built_once_per_worker(mode: str) -> None:
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    loader = DataLoader(VocabularyDataset(12), batch_size=2, num_workers=3, mode=mode, replicate=ReopenReplica(counter),
                        worker_init_fn=_check_replica_in_init, persistent_workers=True, collate_fn=list_collate)
    try:
        for _ in range(2):
            assert len(list(loader)) == 6
    finally:
        loader.close()  # joins the workers: each has built its replica by now
    if mode == "thread":
        assert counter.value == 3  # once per worker, not per epoch or batch
    else:  # a worker process still starting when the pool stops is terminated (1 s) and may never count
        assert 1 <= counter.value <= 3


def _check_replica_in_init(worker_id: int) -> None:
    assert getattr(threadloader.get_worker_info().dataset, "reopened", False)


def test_replicate_true_is_accepted_in_process_mode() -> None:
    loader = DataLoader(VocabularyDataset(6), batch_size=3, num_workers=1, mode="process", replicate=True,
                        collate_fn=list_collate)
    assert len(list(loader)) == 2


def test_replicate_argument_is_checked() -> None:
    with pytest.raises(TypeError, match="replicate should be None, a bool or a callable"):
        DataLoader(VocabularyDataset(), replicate="yes")  # type: ignore[arg-type]


def test_array_only_dataset_replica_costs_no_array_memory() -> None:
    big = np.ones(4_000_000, dtype=np.float64)  # 32 MB
    copy = replicate({"data": big})
    assert np.shares_memory(copy["data"], big)


def test_big_containers_are_copied_shallowly() -> None:
    records = [(i, f"caption {i}") for i in range(1_000)]
    table = {f"key {i}": [i] for i in range(1_000)}
    blob = b"x" * 2_000
    original = {"records": records, "again": records, "table": table, "blob": blob, "tuple": tuple(records),
                "small": [[1], "text"]}
    copy = replicate(original, shallow_above=999)
    assert copy["records"] == records and copy["records"] is not records
    assert copy["records"][7] is records[7]  # the elements are shared
    assert copy["again"] is copy["records"]  # one copy per original, as pickle keeps identity
    assert copy["table"] == table and copy["table"] is not table and copy["table"]["key 3"] is table["key 3"]
    assert copy["tuple"] == original["tuple"] and copy["tuple"] is not original["tuple"]
    assert copy["blob"] is blob  # immutable and long: shared as it is
    assert copy["small"][0] is not original["small"][0]  # small containers are still copied deeply


def test_shallow_above_applies_to_exact_builtin_containers_only() -> None:
    subclassed = RecordList([i] for i in range(10))
    plain = [[i] for i in range(10)]
    copy = replicate({"subclassed": subclassed, "plain": plain}, shallow_above=5)
    assert type(copy["subclassed"]) is RecordList and copy["subclassed"] == subclassed
    assert copy["subclassed"][0] is not subclassed[0]  # a subclass is copied deeply, however long
    assert copy["plain"] is not plain and copy["plain"][0] is plain[0]


def test_shallow_above_huge_copies_everything() -> None:
    import sys

    records = [[i] for i in range(100_000)]
    copy = replicate(records, shallow_above=sys.maxsize)
    assert copy == records and copy[5] is not records[5]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_shallow_above_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="shallow_above should be a non-negative integer"):
        replicate([1], shallow_above=bad)  # type: ignore[arg-type]


def test_replicate_true_shares_the_records_of_a_big_dataset() -> None:
    dataset = BigRecordsDataset(8)
    loader = DataLoader(dataset, batch_size=None, num_workers=2, mode="thread", replicate=True)
    for index, (owner, records, record) in enumerate(loader):
        assert owner != id(dataset) and records != id(dataset.records)  # a replica with its own list ...
        assert record == id(dataset.records[index])  # ... over the same record objects


def test_shallow_above_zero_still_builds_a_working_replica() -> None:
    original = VocabularyDataset(4)
    copy = replicate(original, shallow_above=0)  # even module and class names are long enough to be shared
    assert copy is not original and copy.vocab is original.vocab  # the state dict itself was copied shallowly
    assert [copy[i][0] for i in range(4)] == [original[i][0] for i in range(4)]


class _PlainRecords:
    """A dataset as users write one: plain attributes, small containers, an array, a tensor, records."""

    def __init__(self) -> None:
        torch = pytest.importorskip("torch")  # in the test that builds it: skipped, not failed, without torch

        self.vocab = {f"word {i}": i for i in range(300)}
        self.rows = [f"row {i}" for i in range(200)]
        self.samples = [(f"image {i}.jpg", i % 10) for i in range(500)]
        self.pixels = np.arange(1_000, dtype=np.float32)
        self.weights = torch.arange(16, dtype=torch.float32)
        self.views = [self.pixels, self.pixels]
        self.label_type = np.int64(7)
        self.transform = len


def test_a_plain_graph_is_pickled_with_the_array_hook_only_and_copies_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from threadloader import replication

    original = _PlainRecords()
    pickled_with: list[str] = []
    for name in ("_ArrayOnlyPickler", "_ReplicaPickler"):
        kind = getattr(replication, name)
        monkeypatch.setattr(replication, name, type(name, (kind,), {"__init__": _recording(kind, name, pickled_with)}))
    fast = replicate(original)
    monkeypatch.setattr(replication, "WALK_LIMIT", 0)  # the walk gives up at once: the general hook
    general = replicate(original)
    assert pickled_with == ["_ArrayOnlyPickler", "_ReplicaPickler"]
    for copy in (fast, general):
        assert copy.vocab == original.vocab and copy.vocab is not original.vocab
        assert next(iter(copy.vocab)) is not next(iter(original.vocab))  # new key objects, owned by the builder
        assert copy.samples == original.samples and copy.samples[3] is not original.samples[3]
        assert copy.pixels is not original.pixels and np.shares_memory(copy.pixels, original.pixels)
        assert copy.views[0] is copy.views[1] is copy.pixels  # one view per original, as pickle keeps identity
        assert copy.weights.data_ptr() == original.weights.data_ptr() and copy.weights is not original.weights
        assert copy.label_type == 7 and copy.transform is len


def _recording(kind: type, name: str, log: list[str]) -> object:
    def __init__(self: object, *args: object) -> None:
        log.append(name)
        kind.__init__(self, *args)

    return __init__


@pytest.mark.parametrize(
    "graph",
    [
        {"rows": list(range(70_000))},  # a big container: shared elements need the general hook
        {"text": "x" * 70_000},  # a long string, shared as it is
        [np.array([object()])],  # an array of Python objects is copied, not viewed
        RecordList([1, 2]),  # a subclass of a built-in container
    ],
    ids=["big container", "long text", "object array", "list subclass"],
)
def test_what_the_walk_does_not_call_plain_takes_the_general_hook(graph: object) -> None:
    torch = pytest.importorskip("torch")

    from threadloader.replication import SHALLOW_ABOVE, _plain_graph

    assert not _plain_graph(graph, SHALLOW_ABOVE, torch.Tensor)


def test_a_fast_template_outside_its_builder_says_so() -> None:
    import pickle

    from threadloader.replication import ReplicaTemplate

    template = ReplicaTemplate({"pixels": np.arange(4)})
    with pytest.raises(RuntimeError, match="outside ReplicaTemplate.build"):
        pickle.loads(template._payload)
