"""Which common calls slow down on CPython 3.13t when another thread made the object.

In:  command-line options: ``--seconds`` per measurement, ``--rounds``,
     ``--only`` (a substring of the case names), ``--scenarios``,
     ``--pipeline`` (the text dataset of ``benchmarks.workloads.owned``,
     which needs numpy and torch), ``--json PATH``, ``--quick``.
Out: Markdown tables on stdout: per operation its calls/s made by the main
     thread and called from the main thread, the same objects called from
     one worker thread (and from two at once), and objects the worker made
     itself; the ratios to the first; the worker thread's CPU time over its
     wall time (``time.thread_time``) and the system share of that CPU time
     (``RUSAGE_THREAD``), which tell a slow path that computes or spins in
     the kernel from one that waits. With ``--pipeline``, samples/s of the
     text dataset and of its remedies. With ``--json``, every measurement.

Runs on a bare interpreter (the numpy and torch cases are skipped where
those do not import) and on either build: the GIL build gives the contrast.
Each measurement builds its objects afresh in the thread the scenario names,
so no measurement inherits another's reference-count state (a lookup can
change it: the first read of a dict value from another thread marks the
value so that later lock-free reads of it succeed). The main thread waits
in ``join`` while a worker measures, as a training loop waits for a batch.

Measurements on a shared, noisy machine: each is repeated ``--rounds``
times, scenarios interleaved within a round, and the median reported.

Usage::

    python -m benchmarks.ownership_probe [--quick] [--pipeline] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import platform
import re
import resource
import statistics
import sys
import sysconfig
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .thread_start import held_by_another_thread, in_threads

#: Where the objects are made and who calls them: ``(maker, caller)``.
SCENARIOS: dict[str, tuple[str, str]] = {
    "main": ("main", "main"),  # made by the main thread, called by it
    "worker": ("main", "worker"),  # made by the main thread, called by one worker thread
    "own": ("worker", "worker"),  # made by the worker thread that calls it
    "two": ("main", "two workers"),  # made by the main thread, called by two worker threads at once
}

VOCABULARY = 30_000
SMALL = 100


@dataclass(frozen=True)
class Case:
    """One operation to time.

    Attributes:
        group: the kind of object (``dict``, ``list``, ``str``, ...).
        name: the operation as a user writes it.
        make: builds the objects, in the thread the scenario names; returns a namespace.
        loop: runs the operation ``n`` times over those objects, in the calling thread.
        needs: a module the case needs (``numpy``, ``torch``), or ``None``.
    """

    group: str
    name: str
    make: Callable[[], Any]
    loop: Callable[[Any, int], object]
    needs: str | None = None


CASES: list[Case] = []


def case(group: str, name: str, make: Callable[[], Any], needs: str | None = None) -> Callable[[Any], Any]:
    """Register the decorated loop as a ``Case``."""

    def register(loop: Callable[[Any, int], object]) -> Callable[[Any, int], object]:
        CASES.append(Case(group, name, make, loop, needs))
        return loop

    return register


def fresh(text: str) -> str:
    """An equal string that is a new object made by the calling thread (as ``split`` makes words)."""
    return text[:1] + text[1:]


def words(count: int) -> list[str]:
    """``count`` distinct words ``w000000``, ``w000001``, ... (made by the calling thread)."""
    return [f"w{i:06d}" for i in range(count)]


# Fixtures: each builds its objects in the calling thread. The word a case looks up (``key``) is an equal copy,
# never the stored key itself: a caller that reads an object through a locked fallback marks it as safe for
# lock-free readers (``_Py_NewRefWithLock``), which would hide the cost that words from ``split`` pay.


def vocab() -> types.SimpleNamespace:
    """A 30,000-word vocabulary (values 1000 and up: not the small ints, which are immortal)."""
    keys = words(VOCABULARY)
    d = {word: 1000 + i for i, word in enumerate(keys)}
    return types.SimpleNamespace(d=d, key=fresh(keys[12_345]), stored=keys[12_345], get=d.get,
                                 small={w: i for i, w in enumerate(keys[:SMALL])})  # fmt: skip


def interned_vocab() -> types.SimpleNamespace:
    """The vocabulary with its keys interned: ``sys.intern`` makes them immortal on 3.13."""
    keys = [sys.intern(word) for word in words(VOCABULARY)]
    return types.SimpleNamespace(d={word: 1000 + i for i, word in enumerate(keys)}, key=fresh(keys[12_345]))


def pinned_vocab() -> types.SimpleNamespace:
    """The vocabulary, and a list of its keys made by a helper thread (a reference held by a non-owner)."""
    space = vocab()
    space.held = held_by_another_thread(space.d)
    return space


def collections_fixture() -> types.SimpleNamespace:
    """A Counter, a defaultdict, an OrderedDict and a mapping proxy over the vocabulary's words."""
    base = vocab()
    keys = list(base.d)
    return types.SimpleNamespace(
        counter=collections.Counter({word: 1000 + i for i, word in enumerate(keys)}),
        default=collections.defaultdict(int, base.d),
        ordered=collections.OrderedDict(base.d),
        proxy=types.MappingProxyType(base.d),
        key=base.key,
        batch=[fresh(word) for word in keys[:16]],
    )


def sequence() -> types.SimpleNamespace:
    """A list of 1,000 words, a list of 100, a set of 1,000, two of 100 and a tuple of 100."""
    keys = words(1_000)
    return types.SimpleNamespace(
        big=keys, small=keys[:SMALL], set=set(keys), set2=set(keys[50:150]), set3=set(keys[:SMALL]),
        tuple=tuple(keys[:SMALL]),
        key=fresh(keys[50]),
    )  # fmt: skip


def text() -> types.SimpleNamespace:
    """A row of 80 capitalised words, its split words, a translation table, patterns and a JSON document."""
    keys = words(80)
    row = " ".join(word.capitalize() + ("," if i % 9 == 0 else "") for i, word in enumerate(keys))
    document = json.dumps({"id": 12, "caption": row[:120], "labels": list(range(20)), "score": 0.5})
    return types.SimpleNamespace(
        row=row,
        split=row.split(),
        table=str.maketrans({",": " ", ".": " "}),
        word=re.compile(r"\w+"),
        lead=re.compile(r"W\d+"),
        punct=re.compile(r"[,.;]"),
        document=document,
        record={"id": 12, "caption": row[:120], "labels": list(range(20)), "score": 0.5},
    )


def cached() -> types.SimpleNamespace:
    """``functools.lru_cache`` and ``functools.cache`` wrappers made here, each primed with the vocabulary's words."""

    @functools.lru_cache(maxsize=65_536)
    def bounded(word: str) -> int:
        return len(word)

    @functools.cache
    def unbounded(word: str) -> int:
        return len(word)

    keys = words(4_096)
    for word in keys:
        bounded(word)
        unbounded(word)
    return types.SimpleNamespace(bounded=bounded, unbounded=unbounded, key=fresh(keys[2_000]))


class Record:
    """A plain class instance with a ``__dict__``."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.name = "record"

    def method(self) -> int:
        return self.value


class Slotted:
    """An instance with ``__slots__``."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


class Rows:
    """A dataset-like object: ``rows[i]`` through ``__getitem__``."""

    def __init__(self) -> None:
        self.rows = [f"row {i} " * 4 for i in range(1_000)]

    def __getitem__(self, index: int) -> str:
        return self.rows[index]


def instances() -> types.SimpleNamespace:
    """A ``Record``, a ``Slotted`` and a ``Rows`` made here."""
    return types.SimpleNamespace(record=Record(123_456), slotted=Slotted(123_456), rows=Rows())


def arrays() -> types.SimpleNamespace:
    """Small numpy arrays and a list of ints made here."""
    import numpy as np

    return types.SimpleNamespace(
        a=np.linspace(0, 1, 100, dtype=np.float32), index=np.arange(0, 100, 3), ints=list(range(1000, 1096)),
    )  # fmt: skip


def tensors() -> types.SimpleNamespace:
    """A list of 96 ints (1000 and up), a small tensor and a numpy array made here."""
    import numpy as np
    import torch

    return types.SimpleNamespace(ints=list(range(1000, 1096)), t=torch.zeros(96), a=np.zeros(96, dtype=np.int64))


# The cases. Each loop binds what it uses to locals first, as a tight loop in a dataset would.


@case("dict", "d.get(w), w equal to a stored key, made by the caller", vocab)
def _get_fresh(s: Any, n: int) -> None:
    d, w = s.d, fresh(s.key)
    for _ in range(n):
        d.get(w)


@case("dict", "d.get(w, unk), w equal to a stored key, made by the caller", vocab)
def _get_default(s: Any, n: int) -> None:
    d, w = s.d, fresh(s.key)
    for _ in range(n):
        d.get(w, 1)


@case("dict", "d.get(w, unk), w missing (64 different words)", vocab)
def _get_missing(s: Any, n: int) -> None:
    d, missing = s.d, [f"x{i}" for i in range(64)]
    for k in range(n):
        d.get(missing[k & 63], 1)


@case("dict", "d.get(w), w the stored key object itself", vocab)
def _get_identical(s: Any, n: int) -> None:
    d, w = s.d, s.stored
    for _ in range(n):
        d.get(w)


@case("dict", "fn(w), fn = d.get bound by the maker", vocab)
def _get_bound_by_maker(s: Any, n: int) -> None:
    fn, w = s.get, fresh(s.key)
    for _ in range(n):
        fn(w)


@case("dict", "fn(w), fn = d.get bound by the caller", vocab)
def _get_bound_here(s: Any, n: int) -> None:
    fn, w = s.d.get, fresh(s.key)
    for _ in range(n):
        fn(w)


# The first case's loop again, over vocabularies whose keys are interned (immortal) or shared with another thread.
case("dict", "d.get(w), keys interned with sys.intern", interned_vocab)(_get_fresh)
case("dict", "d.get(w), keys also held by another thread's list", pinned_vocab)(_get_fresh)


@case("dict", "d[w]", vocab)
def _subscript(s: Any, n: int) -> None:
    d, w = s.d, fresh(s.key)
    for _ in range(n):
        d[w]


@case("dict", "w in d", vocab)
def _contains(s: Any, n: int) -> None:
    d, w = s.d, fresh(s.key)
    for _ in range(n):
        w in d  # noqa: B015  (the lookup is what is timed)


@case("dict", "d[w] if w in d else unk", vocab)
def _subscript_if_in(s: Any, n: int) -> None:
    d, w = s.d, fresh(s.key)
    for _ in range(n):
        d[w] if w in d else 1  # noqa: B018  (the lookup is what is timed)


@case("dict", "d.__contains__(w)", vocab)
def _contains_method(s: Any, n: int) -> None:
    d, w = s.d, fresh(s.key)
    for _ in range(n):
        d.__contains__(w)


@case("dict", "d.setdefault(w, 0), w present", vocab)
def _setdefault(s: Any, n: int) -> None:
    d, w = s.d, fresh(s.key)
    for _ in range(n):
        d.setdefault(w, 0)


@case("dict", "d.pop(w, None); d[w] = v", vocab)
def _pop_put(s: Any, n: int) -> None:
    d, w = s.d, fresh(s.key)
    for _ in range(n):
        d.pop(w, None)
        d[w] = 7


@case("dict", "d.pop(w, None), w missing", vocab)
def _pop_missing(s: Any, n: int) -> None:
    d, w = s.d, "x" + "12345"
    for _ in range(n):
        d.pop(w, None)


@case("dict", "len(d)", vocab)
def _len(s: Any, n: int) -> None:
    d = s.d
    for _ in range(n):
        len(d)


@case("dict", "for k, v in d.items() (100 entries)", vocab)
def _items(s: Any, n: int) -> None:
    d = s.small
    for _ in range(n):
        for _k, _v in d.items():
            pass


@case("dict", "for k in d (100 entries)", vocab)
def _iterate(s: Any, n: int) -> None:
    d = s.small
    for _ in range(n):
        for _k in d:
            pass


@case("dict", "list(d.keys()) (100 entries)", vocab)
def _keys(s: Any, n: int) -> None:
    d = s.small
    for _ in range(n):
        list(d.keys())


@case("dict", "list(d.values()) (100 entries)", vocab)
def _values(s: Any, n: int) -> None:
    d = s.small
    for _ in range(n):
        list(d.values())


@case("dict", "d.copy() (100 entries)", vocab)
def _copy(s: Any, n: int) -> None:
    d = s.small
    for _ in range(n):
        d.copy()


@case("collections", "counter.get(w)", collections_fixture)
def _counter_get(s: Any, n: int) -> None:
    c, w = s.counter, fresh(s.key)
    for _ in range(n):
        c.get(w)


@case("collections", "counter[w]", collections_fixture)
def _counter_item(s: Any, n: int) -> None:
    c, w = s.counter, fresh(s.key)
    for _ in range(n):
        c[w]


@case("collections", "counter.update(16 words)", collections_fixture)
def _counter_update(s: Any, n: int) -> None:
    c, batch = s.counter, [fresh(word) for word in s.batch]
    for _ in range(n):
        c.update(batch)


@case("collections", "defaultdict[w], w present", collections_fixture)
def _default_item(s: Any, n: int) -> None:
    d, w = s.default, fresh(s.key)
    for _ in range(n):
        d[w]


@case("collections", "defaultdict.get(w)", collections_fixture)
def _default_get(s: Any, n: int) -> None:
    d, w = s.default, fresh(s.key)
    for _ in range(n):
        d.get(w)


@case("collections", "OrderedDict.get(w)", collections_fixture)
def _ordered_get(s: Any, n: int) -> None:
    d, w = s.ordered, fresh(s.key)
    for _ in range(n):
        d.get(w)


@case("collections", "MappingProxyType(d).get(w)", collections_fixture)
def _proxy_get(s: Any, n: int) -> None:
    d, w = s.proxy, fresh(s.key)
    for _ in range(n):
        d.get(w)


@case("list", "lst[i] (1,000 words)", sequence)
def _list_item(s: Any, n: int) -> None:
    lst = s.big
    for k in range(n):
        lst[k & 511]


@case("list", "lst.index(w), w at position 50", sequence)
def _list_index(s: Any, n: int) -> None:
    lst, w = s.big, fresh(s.key)
    for _ in range(n):
        lst.index(w)


@case("list", "lst.count(w) (100 words)", sequence)
def _list_count(s: Any, n: int) -> None:
    lst, w = s.small, fresh(s.key)
    for _ in range(n):
        lst.count(w)


@case("list", "w in lst, w at position 50", sequence)
def _list_contains(s: Any, n: int) -> None:
    lst, w = s.big, fresh(s.key)
    for _ in range(n):
        w in lst  # noqa: B015  (the scan is what is timed)


@case("list", "lst.copy() (100 words)", sequence)
def _list_copy(s: Any, n: int) -> None:
    lst = s.small
    for _ in range(n):
        lst.copy()


@case("list", "lst[10:60]", sequence)
def _list_slice(s: Any, n: int) -> None:
    lst = s.small
    for _ in range(n):
        lst[10:60]


@case("list", "sorted(lst) (100 words)", sequence)
def _list_sorted(s: Any, n: int) -> None:
    lst = s.small
    for _ in range(n):
        sorted(lst)


@case("list", "for w in lst (100 words)", sequence)
def _list_iterate(s: Any, n: int) -> None:
    lst = s.small
    for _ in range(n):
        for _w in lst:
            pass


@case("list", "tuple(lst) (100 words)", sequence)
def _list_tuple(s: Any, n: int) -> None:
    lst = s.small
    for _ in range(n):
        tuple(lst)


@case("list", "lst.append(w); lst.pop()", sequence)
def _list_append_pop(s: Any, n: int) -> None:
    lst, w = s.big, fresh(s.key)
    for _ in range(n):
        lst.append(w)
        lst.pop()


@case("list", "tup[i], for w in tup (100 words)", sequence)
def _tuple_iterate(s: Any, n: int) -> None:
    tup = s.tuple
    for _ in range(n):
        tup[50]
        for _w in tup:
            pass


@case("set", "w in s (1,000 words)", sequence)
def _set_contains(s: Any, n: int) -> None:
    st, w = s.set, fresh(s.key)
    for _ in range(n):
        w in st  # noqa: B015  (the lookup is what is timed)


@case("set", "s & s2 (100 words each)", sequence)
def _set_and(s: Any, n: int) -> None:
    a, b = s.set2, s.set3
    for _ in range(n):
        a & b


@case("set", "s.copy() (100 words)", sequence)
def _set_copy(s: Any, n: int) -> None:
    st = s.set2
    for _ in range(n):
        st.copy()


@case("str", "row.lower() (80 words)", text)
def _lower(s: Any, n: int) -> None:
    row = s.row
    for _ in range(n):
        row.lower()


@case("str", "row.split()", text)
def _split(s: Any, n: int) -> None:
    row = s.row
    for _ in range(n):
        row.split()


@case("str", "' '.join(words) (80 words)", text)
def _join(s: Any, n: int) -> None:
    parts = s.split
    for _ in range(n):
        " ".join(parts)


@case("str", "row.encode()", text)
def _encode(s: Any, n: int) -> None:
    row = s.row
    for _ in range(n):
        row.encode()


@case("str", "row.translate(table)", text)
def _translate(s: Any, n: int) -> None:
    row, table = s.row, s.table
    for _ in range(n):
        row.translate(table)


@case("re", "pattern.match(row)", text)
def _re_match(s: Any, n: int) -> None:
    pattern, row = s.lead, s.row
    for _ in range(n):
        pattern.match(row)


@case("re", "pattern.sub(' ', row)", text)
def _re_sub(s: Any, n: int) -> None:
    pattern, row = s.punct, s.row
    for _ in range(n):
        pattern.sub(" ", row)


@case("re", "pattern.findall(row)", text)
def _re_findall(s: Any, n: int) -> None:
    pattern, row = s.word, s.row
    for _ in range(n):
        pattern.findall(row)


@case("re", "re.findall(r'\\w+', row) (re's own cache)", text)
def _re_module(s: Any, n: int) -> None:
    row = s.row
    for _ in range(n):
        re.findall(r"\w+", row)


@case("json", "json.loads(document)", text)
def _json_loads(s: Any, n: int) -> None:
    document = s.document
    for _ in range(n):
        json.loads(document)


@case("json", "json.dumps(record)", text)
def _json_dumps(s: Any, n: int) -> None:
    record = s.record
    for _ in range(n):
        json.dumps(record)


@case("functools", "lru_cache(maxsize=65536) hit, f(w)", cached)
def _lru(s: Any, n: int) -> None:
    f, w = s.bounded, fresh(s.key)
    for _ in range(n):
        f(w)


@case("functools", "functools.cache hit, f(w)", cached)
def _cache(s: Any, n: int) -> None:
    f, w = s.unbounded, fresh(s.key)
    for _ in range(n):
        f(w)


@case("instance", "obj.value (attribute read)", instances)
def _attribute(s: Any, n: int) -> None:
    obj = s.record
    for _ in range(n):
        obj.value  # noqa: B018  (the read is what is timed)


@case("instance", "obj.method()", instances)
def _method(s: Any, n: int) -> None:
    obj = s.record
    for _ in range(n):
        obj.method()


@case("instance", "slotted.value", instances)
def _slot(s: Any, n: int) -> None:
    obj = s.slotted
    for _ in range(n):
        obj.value  # noqa: B018  (the read is what is timed)


@case("instance", "getattr(obj, 'name')", instances)
def _getattr(s: Any, n: int) -> None:
    obj = s.record
    for _ in range(n):
        getattr(obj, "name")  # noqa: B009  (getattr is what is timed)


@case("instance", "obj.value = v (attribute write)", instances)
def _setattr(s: Any, n: int) -> None:
    obj = s.record
    for k in range(n):
        obj.value = k


@case("instance", "ds[i] (__getitem__ returning rows[i])", instances)
def _dataset_item(s: Any, n: int) -> None:
    rows = s.rows
    for k in range(n):
        rows[k & 511]


@case("numpy", "a + 1.0 (100 float32)", arrays, needs="numpy")
def _np_add(s: Any, n: int) -> None:
    a = s.a
    for _ in range(n):
        a + 1.0


@case("numpy", "a.sum()", arrays, needs="numpy")
def _np_sum(s: Any, n: int) -> None:
    a = s.a
    for _ in range(n):
        a.sum()


@case("numpy", "a[index] (34 of 100)", arrays, needs="numpy")
def _np_take(s: Any, n: int) -> None:
    a, index = s.a, s.index
    for _ in range(n):
        a[index]


@case("numpy", "np.asarray(96 ints)", arrays, needs="numpy")
def _np_asarray(s: Any, n: int) -> None:
    import numpy as np

    ints = s.ints
    for _ in range(n):
        np.asarray(ints)


@case("torch", "torch.tensor(96 ints)", tensors, needs="torch")
def _torch_tensor(s: Any, n: int) -> None:
    import torch

    ints, int64 = s.ints, torch.int64
    for _ in range(n):
        torch.tensor(ints, dtype=int64)


@case("torch", "t + 1 (96 float32)", tensors, needs="torch")
def _torch_add(s: Any, n: int) -> None:
    t = s.t
    for _ in range(n):
        t + 1


@case("torch", "torch.from_numpy(a)", tensors, needs="torch")
def _torch_from_numpy(s: Any, n: int) -> None:
    import torch

    a = s.a
    for _ in range(n):
        torch.from_numpy(a)


@dataclass
class Sample:
    """One measurement: ``calls`` in ``wall_s``, with the calling threads' CPU and system seconds."""

    calls: int
    wall_s: float
    cpu_s: float
    sys_s: float

    @property
    def rate(self) -> float:
        """Calls per second."""
        return self.calls / self.wall_s if self.wall_s else 0.0


def _thread_sys_s() -> float:
    """System CPU seconds of the calling thread so far (``RUSAGE_THREAD``; 0 where unavailable)."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    return resource.getrusage(who).ru_stime if who is not None else 0.0


def timed(loop: Callable[[Any, int], object], space: Any, seconds: float) -> Sample:
    """Run ``loop`` in growing chunks until ``seconds`` have passed, in the calling thread.

    The chunk doubles from 16 calls until one takes 5 ms, so a call that
    costs microseconds and one that costs nanoseconds are both measured
    over about ``seconds``.
    """
    chunk = 16
    while True:
        began = time.perf_counter()
        loop(space, chunk)
        if time.perf_counter() - began >= 0.005 or chunk >= 1 << 24:
            break
        chunk *= 2
    calls = 0
    cpu0, sys0, wall0 = time.thread_time(), _thread_sys_s(), time.perf_counter()
    while True:
        loop(space, chunk)
        calls += chunk
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            break
    return Sample(calls, wall, time.thread_time() - cpu0, _thread_sys_s() - sys0)


def measure(probe: Case, scenario: str, seconds: float) -> Sample:
    """One measurement of ``probe`` in ``scenario`` (a key of ``SCENARIOS``); two workers' samples are summed."""
    maker, caller = SCENARIOS[scenario]
    if caller == "main":
        return timed(probe.loop, probe.make(), seconds)
    if maker == "worker":
        return in_threads(1, lambda _slot, _: timed(probe.loop, probe.make(), seconds))[0]
    space = probe.make()
    samples = in_threads(2 if caller == "two workers" else 1, lambda _slot, _: timed(probe.loop, space, seconds))
    # Two threads' rates add up; their CPU and system time are summed over the same wall time.
    wall = max(s.wall_s for s in samples)
    return Sample(round(sum(s.rate for s in samples) * wall), wall, sum(s.cpu_s for s in samples),
                  sum(s.sys_s for s in samples))  # fmt: skip


@dataclass
class Row:
    """One case's medians over the rounds, per scenario."""

    group: str
    name: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def rate(self, scenario: str) -> float | None:
        """Median calls/s of ``scenario``."""
        found = self.samples.get(scenario)
        return statistics.median(s.rate for s in found) if found else None

    def ratio(self, scenario: str) -> float | None:
        """Median of the per-round ratios of ``scenario``'s rate to the main thread's."""
        base, found = self.samples.get("main"), self.samples.get(scenario)
        if not base or not found:
            return None
        return statistics.median(f.rate / b.rate for b, f in zip(base, found) if b.rate)

    def cpu_share(self, scenario: str) -> float | None:
        """Median CPU seconds per wall second of the calling thread(s)."""
        found = self.samples.get(scenario)
        return statistics.median(s.cpu_s / s.wall_s for s in found) if found else None

    def sys_share(self, scenario: str) -> float | None:
        """Median share of the calling thread(s)' CPU time spent in the kernel."""
        found = self.samples.get(scenario)
        return statistics.median(s.sys_s / s.cpu_s if s.cpu_s else 0.0 for s in found) if found else None


def importable(module: str | None) -> bool:
    """True when ``module`` is ``None`` or imports here."""
    if module is None:
        return True
    try:
        __import__(module)
    except Exception:  # noqa: BLE001  (any failure to import means the cases that need it are skipped)
        return False
    return True


def run_cases(cases: Iterable[Case], scenarios: list[str], rounds: int, seconds: float,
              progress: bool = True) -> list[Row]:  # fmt: skip
    """Measure every case in every scenario, ``rounds`` times, scenarios interleaved within a round."""
    rows = []
    for probe in cases:
        row = Row(probe.group, probe.name)
        for _ in range(rounds):
            for scenario in scenarios:
                row.samples.setdefault(scenario, []).append(measure(probe, scenario, seconds))
        rows.append(row)
        if progress:
            print(f"  {probe.group}: {probe.name}: {fmt_rate(row.rate('main'))} / {fmt_rate(row.rate('worker'))}",
                  file=sys.stderr)  # fmt: skip
    return rows


def fmt_rate(value: float | None) -> str:
    """Calls per second as ``12.3 M``, ``456 k`` or ``789``."""
    if value is None:
        return "–"
    if value >= 1e6:
        return f"{value / 1e6:.1f} M"
    if value >= 1e3:
        return f"{value / 1e3:.0f} k"
    return f"{value:.0f}"


def fmt_ratio(value: float | None) -> str:
    """A ratio with two or three significant digits, bold below 0.5."""
    if value is None:
        return "–"
    text = f"{value:.3f}" if value < 0.1 else f"{value:.2f}"
    return f"**{text}**" if value < 0.5 else text


def fmt_share(value: float | None) -> str:
    """A share as a percentage."""
    return "–" if value is None else f"{value * 100:.0f}%"


def markdown(rows: list[Row], scenarios: list[str]) -> str:
    """The calls table (see the module docstring)."""
    head = ["group", "operation", "made by main, called by main"]
    if "worker" in scenarios:
        head += ["called by a worker", "ratio", "worker CPU/wall", "of it system"]
    if "two" in scenarios:
        head += ["two workers at once (sum)", "ratio"]
    if "own" in scenarios:
        head += ["made and called by a worker", "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.group, f"`{row.name}`", fmt_rate(row.rate("main"))]
        if "worker" in scenarios:
            cells += [fmt_rate(row.rate("worker")), fmt_ratio(row.ratio("worker")),
                      f"{row.cpu_share('worker') or 0:.2f}", fmt_share(row.sys_share("worker"))]  # fmt: skip
        if "two" in scenarios:
            cells += [fmt_rate(row.rate("two")), fmt_ratio(row.ratio("two"))]
        if "own" in scenarios:
            cells += [fmt_rate(row.rate("own")), fmt_ratio(row.ratio("own"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """The interpreter and the machine, without the hostname."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return {
        "python": sys.version.split()[0],
        "implementation": sys.version,
        "free_threaded_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil_enabled": True if is_gil_enabled is None else bool(is_gil_enabled()),
        "cpu": model,
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "system": f"{platform.system()} {platform.machine()}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def describe(info: dict[str, Any]) -> str:
    """One line: interpreter, GIL, CPU, cores, load, date."""
    build = "free-threaded build" if info["free_threaded_build"] else "GIL build"
    gil = "GIL on" if info["gil_enabled"] else "GIL off"
    load = info.get("load_average")
    load_text = f", load average {load[0]:.2f} at start" if load else ""
    return (
        f"CPython {info['python']} ({build}, {gil}); {info['cpu']}, {info['usable_cpus']} usable cores"
        f"{load_text}; {info['system']}; {info['date']}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the probe; print the tables; write the JSON if asked."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ownership_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.15, help="seconds per measurement (default 0.15)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per case and scenario (default 3)")
    parser.add_argument("--only", action="append", default=[], help="only cases whose name or group has this text")
    parser.add_argument(
        "--scenarios", default="main,worker,own,two", help="comma list of main, worker, own, two (default all)"
    )
    parser.add_argument("--pipeline", action="store_true", help="also the text dataset and its remedies")
    parser.add_argument("--no-calls", action="store_true", help="skip the per-call table")
    parser.add_argument("--json", type=str, default=None, help="write every measurement here")
    parser.add_argument("--quick", action="store_true", help="a smoke test: short measurements, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 0.01, 1
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown or "main" not in scenarios:
        parser.error(f"--scenarios needs main and any of {', '.join(SCENARIOS)}; got {args.scenarios}")
    info = machine()
    print(describe(info) + "\n")
    document: dict[str, Any] = {"machine": info, "settings": vars(args), "calls": [], "pipeline": []}
    if not args.no_calls:
        chosen = [c for c in CASES if not args.only or any(t in c.name or t == c.group for t in args.only)]
        skipped = sorted({c.needs for c in chosen if c.needs is not None and not importable(c.needs)})
        chosen = [c for c in chosen if importable(c.needs)]
        rows = run_cases(chosen, scenarios, args.rounds, args.seconds)
        print(markdown(rows, scenarios))
        if skipped:
            print(f"Skipped (not importable here): {', '.join(skipped)}\n")
        document["calls"] = [
            {"group": r.group, "name": r.name, "samples": {k: [asdict(s) for s in v] for k, v in r.samples.items()}}
            for r in rows
        ]
    if args.pipeline:
        from .ownership_pipeline import pipeline_markdown, run_pipeline

        results = run_pipeline(quick=args.quick, rounds=args.rounds)
        print(pipeline_markdown(results))
        document["pipeline"] = [asdict(r) for r in results]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
