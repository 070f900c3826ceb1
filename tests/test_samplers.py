"""Tests for threadloader.sampling."""

from __future__ import annotations

import itertools
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadloader.sampling import BatchSampler, RandomSampler, SequentialSampler

pytestmark = pytest.mark.timeout(60)


class _Sized:
    """A data source that only has a length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


# --- SequentialSampler -------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7, 100])
def test_sequential_order_and_len(n: int) -> None:
    s = SequentialSampler(_Sized(n))
    assert list(s) == list(range(n))
    assert list(s) == list(range(n))  # re-iterable
    assert len(s) == n


def test_sequential_follows_data_source_length() -> None:
    src = _Sized(3)
    s = SequentialSampler(src)
    src.n = 5
    assert list(s) == [0, 1, 2, 3, 4]
    assert len(s) == 5


# --- RandomSampler ------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 10, 1000])
def test_random_is_permutation_of_python_ints(n: int) -> None:
    s = RandomSampler(range(n), seed=3)
    order = list(s)
    assert sorted(order) == list(range(n))
    assert all(type(i) is int for i in order)
    assert len(s) == n


def test_random_reproducible_for_same_seed_and_epoch() -> None:
    a = RandomSampler(range(500), seed=42)
    b = RandomSampler(range(500), seed=42)
    a.set_epoch(7)
    b.set_epoch(7)
    assert list(a) == list(b)
    assert list(a) == list(a)
    assert a.seed == 42 and a.epoch == 7


def test_random_differs_across_epochs_and_seeds() -> None:
    s = RandomSampler(range(500), seed=1)
    assert s.epoch == 0
    epoch0 = list(s)
    s.set_epoch(1)
    epoch1 = list(s)
    assert epoch0 != epoch1
    s.set_epoch(0)
    assert list(s) == epoch0
    assert list(RandomSampler(range(500), seed=2)) != epoch0


def test_random_is_not_identity() -> None:
    assert list(RandomSampler(range(100))) != list(range(100))


def test_random_epoch_read_when_iter_called() -> None:
    s = RandomSampler(range(200), seed=5)
    it = iter(s)
    s.set_epoch(1)
    first = list(it)
    s.set_epoch(0)
    assert first == list(s)


def test_random_large_seed_accepted() -> None:
    s = RandomSampler(range(50), seed=2**63 - 1)
    s.set_epoch(10**12)
    assert sorted(s) == list(range(50))


def test_random_num_samples_less_than_n() -> None:
    s = RandomSampler(range(100), num_samples=30, seed=0)
    order = list(s)
    assert len(order) == 30 == len(s)
    assert len(set(order)) == 30
    assert all(0 <= i < 100 for i in order)


@pytest.mark.parametrize("n,num_samples", [(10, 25), (7, 14), (3, 100)])
def test_random_num_samples_more_than_n_concatenates_permutations(
    n: int, num_samples: int
) -> None:
    s = RandomSampler(range(n), num_samples=num_samples, seed=9)
    order = list(s)
    assert len(order) == num_samples == len(s)
    full, rest = divmod(num_samples, n)
    for k in range(full):
        assert sorted(order[k * n : (k + 1) * n]) == list(range(n))
    tail = order[full * n :]
    assert len(tail) == rest and len(set(tail)) == rest


def test_random_with_replacement() -> None:
    s = RandomSampler(range(10), replacement=True, num_samples=1000, seed=4)
    order = list(s)
    assert len(order) == 1000 == len(s)
    assert all(type(i) is int and 0 <= i < 10 for i in order)
    assert set(order) == set(range(10))  # 1000 draws cover all 10 values
    assert len(set(order)) < len(order)  # repeats happen
    assert order == list(RandomSampler(range(10), True, 1000, seed=4))


def test_random_with_replacement_default_num_samples() -> None:
    s = RandomSampler(range(64), replacement=True, seed=0)
    assert len(s) == 64 == len(list(s))
    assert len(set(s)) < 64  # with 64 draws from 64, a repeat is (near) certain


def test_random_num_samples_follows_data_source() -> None:
    src = _Sized(4)
    s = RandomSampler(src)
    src.n = 9
    assert len(s) == 9
    assert sorted(s) == list(range(9))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_random_bad_num_samples(bad: object) -> None:
    with pytest.raises(ValueError, match="num_samples should be a positive integer value"):
        RandomSampler(range(5), num_samples=bad)  # type: ignore[arg-type]


def test_random_empty_source_default_num_samples() -> None:
    with pytest.raises(ValueError, match="but got num_samples=0"):
        RandomSampler(range(0))


def test_random_empty_source_explicit_num_samples() -> None:
    s = RandomSampler(_Sized(0), num_samples=3)
    with pytest.raises(ValueError, match="empty data_source"):
        iter(s)


@pytest.mark.parametrize("bad", [0, 1, "yes", None])
def test_random_bad_replacement(bad: object) -> None:
    with pytest.raises(TypeError, match="replacement should be a boolean value"):
        RandomSampler(range(5), replacement=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad,exc,msg",
    [
        (-1, ValueError, "non-negative"),
        (2**63, ValueError, "less than"),
        (1.0, TypeError, "integer"),
        (True, TypeError, "integer"),
    ],
)
def test_random_bad_seed(bad: object, exc: type[Exception], msg: str) -> None:
    with pytest.raises(exc, match=msg):
        RandomSampler(range(5), seed=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (0.5, TypeError), ("1", TypeError)])
def test_random_bad_epoch(bad: object, exc: type[Exception]) -> None:
    s = RandomSampler(range(5))
    with pytest.raises(exc, match="epoch"):
        s.set_epoch(bad)  # type: ignore[arg-type]
    assert s.epoch == 0


def test_random_seed_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        RandomSampler(range(5), False, None, 3)  # type: ignore[misc]


# --- BatchSampler -------------------------------------------------------------


def test_batch_chunks() -> None:
    b = BatchSampler(SequentialSampler(range(10)), 3, False)
    assert list(b) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert len(b) == 4


def test_batch_drop_last() -> None:
    b = BatchSampler(SequentialSampler(range(10)), 3, True)
    assert list(b) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(b) == 3


def test_batch_over_plain_iterables() -> None:
    assert list(BatchSampler([5, 4, 3, 2, 1], 2, False)) == [[5, 4], [3, 2], [1]]
    assert list(BatchSampler(iter(range(5)), 2, True)) == [[0, 1], [2, 3]]
    assert list(BatchSampler([], 2, False)) == []


def test_batch_drop_last_does_not_overconsume() -> None:
    it = iter(range(7))
    assert list(BatchSampler(it, 3, True)) == [[0, 1, 2], [3, 4, 5]]
    assert list(it) == []  # the short tail [6] was read and dropped, nothing else


def test_batch_is_lazy_over_infinite_iterables() -> None:
    for drop_last in (False, True):
        batches = itertools.islice(BatchSampler(itertools.count(), 4, drop_last), 3)
        assert list(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_batch_over_random_sampler() -> None:
    rs = RandomSampler(range(23), seed=8)
    b = BatchSampler(rs, 5, False)
    batches = list(b)
    assert [len(x) for x in batches] == [5, 5, 5, 5, 3]
    assert list(itertools.chain.from_iterable(batches)) == list(rs)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 7, 10, 11, 64])
@pytest.mark.parametrize("n", [0, 1, 2, 9, 10, 11, 33])
def test_batch_len_grid(n: int, batch_size: int, drop_last: bool) -> None:
    for sampler in (SequentialSampler(range(n)), list(range(n))):
        b = BatchSampler(sampler, batch_size, drop_last)
        batches = list(b)
        assert len(b) == len(batches)
        expected = n // batch_size if drop_last else -(-n // batch_size)
        assert len(b) == expected


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, False, "4", None])
def test_batch_bad_batch_size(bad: object) -> None:
    with pytest.raises(ValueError, match="batch_size should be a positive integer value"):
        BatchSampler(range(5), bad, False)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 1, "no", None])
def test_batch_bad_drop_last(bad: object) -> None:
    with pytest.raises(ValueError, match="drop_last should be a boolean value"):
        BatchSampler(range(5), 2, bad)  # type: ignore[arg-type]


_kinds = st.sampled_from(["sequential", "random", "replacement", "list"])


def _make_sampler(kind: str, n: int, seed: int) -> object:
    if kind == "sequential":
        return SequentialSampler(range(n))
    if kind == "random":
        return RandomSampler(range(n), seed=seed)
    if kind == "replacement":
        return RandomSampler(range(n), replacement=True, num_samples=n + seed % 5, seed=seed)
    return list(range(n))[::-1]


@settings(max_examples=300, deadline=None)
@given(
    kind=_kinds,
    n=st.integers(1, 200),
    batch_size=st.integers(1, 50),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**63 - 1),
)
def test_batch_property(kind: str, n: int, batch_size: int, drop_last: bool, seed: int) -> None:
    sampler = _make_sampler(kind, n, seed)
    order = list(sampler)  # type: ignore[call-overload]
    b = BatchSampler(sampler, batch_size, drop_last)  # type: ignore[arg-type]
    batches = list(b)
    assert len(b) == len(batches)
    assert all(type(x) is list for x in batches)
    assert all(len(x) == batch_size for x in batches[:-1])
    flat = list(itertools.chain.from_iterable(batches))
    if drop_last:
        assert all(len(x) == batch_size for x in batches)
        assert flat == order[: len(order) - len(order) % batch_size]
    else:
        assert flat == order
        assert not batches or 1 <= len(batches[-1]) <= batch_size


# --- differential tests against torch -----------------------------------------


@pytest.fixture(scope="module")
def torch_data() -> ModuleType:
    """torch.utils.data, or skip when torch is not installed."""
    return pytest.importorskip("torch.utils.data")


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 150), batch_size=st.integers(1, 40), drop_last=st.booleans())
def test_batch_matches_torch(
    torch_data: ModuleType, n: int, batch_size: int, drop_last: bool
) -> None:
    ours = BatchSampler(SequentialSampler(range(n)), batch_size, drop_last)
    theirs = torch_data.BatchSampler(torch_data.SequentialSampler(range(n)), batch_size, drop_last)
    assert list(ours) == list(theirs)
    assert len(ours) == len(theirs)
    # our BatchSampler over torch's sampler, and torch's over ours
    assert list(BatchSampler(torch_data.SequentialSampler(range(n)), batch_size, drop_last)) == (
        list(theirs)
    )
    assert list(torch_data.BatchSampler(SequentialSampler(range(n)), batch_size, drop_last)) == (
        list(theirs)
    )


def test_batch_wraps_torch_random_sampler() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import RandomSampler as TorchRandomSampler

    gen = torch.Generator().manual_seed(0)
    trs = TorchRandomSampler(range(37), generator=gen)
    b = BatchSampler(trs, 8, False)
    assert len(b) == 5
    gen.manual_seed(123)
    batches = list(b)
    gen.manual_seed(123)
    expected = list(trs)
    assert [len(x) for x in batches] == [8, 8, 8, 8, 5]
    assert list(itertools.chain.from_iterable(batches)) == expected
    assert sorted(expected) == list(range(37))
    assert len(BatchSampler(trs, 8, True)) == len(list(BatchSampler(trs, 8, True))) == 4


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0, "drop_last": False}, {"batch_size": True, "drop_last": False},
     {"batch_size": 2, "drop_last": 1}],
)
def test_batch_errors_match_torch(torch_data: ModuleType, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError) as ours:
        BatchSampler(range(3), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError) as theirs:
        torch_data.BatchSampler(range(3), **kwargs)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    "kwargs,exc",
    [({"replacement": 1}, TypeError), ({"num_samples": 0}, ValueError),
     ({"num_samples": -3}, ValueError), ({"num_samples": 2.0}, ValueError)],
)
def test_random_errors_match_torch(
    torch_data: ModuleType, kwargs: dict[str, object], exc: type[Exception]
) -> None:
    with pytest.raises(exc) as ours:
        RandomSampler(range(3), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(exc) as theirs:
        torch_data.RandomSampler(range(3), **kwargs)
    assert str(ours.value) == str(theirs.value)


def test_random_lens_match_torch(torch_data: ModuleType) -> None:
    grid = itertools.product([1, 5, 12], [False, True], [None, 1, 7, 30])
    for n, replacement, num_samples in grid:
        ours = RandomSampler(range(n), replacement, num_samples)
        theirs = torch_data.RandomSampler(range(n), replacement, num_samples)
        assert len(ours) == len(theirs) == len(list(ours)) == len(list(theirs))
