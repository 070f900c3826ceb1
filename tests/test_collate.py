"""Tests for threadloader.collate: torch delegation and the numpy fallback."""

from __future__ import annotations

import collections
import importlib.util
import subprocess
import sys
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadloader import collate as C

pytestmark = pytest.mark.timeout(60)


class Point(NamedTuple):
    x: Any
    y: Any


class MyDict(dict):
    """A dict subclass whose type must survive collation."""


class FrozenMap(Mapping):
    """An immutable mapping constructible from a dict."""

    def __init__(self, data: dict) -> None:
        self._data = dict(data)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class NoCtorMap(FrozenMap):
    """An immutable mapping whose constructor rejects a dict (needs 2 args)."""

    def __init__(self, data: dict, extra: Any) -> None:
        super().__init__(data)


# Batches that torch collates without tensors in them, so that the numpy path
# can run on exactly the same input.
NUMPY_BATCHES: dict[str, list[Any]] = {
    "ints": [1, 2, 3],
    "bools": [True, False, True],
    "floats": [0.5, 1.5],
    "ints_then_float": [1, 2.5],
    "np_float32_scalars": [np.float32(1), np.float32(2)],
    "np_int16_scalars": [np.int16(1), np.int16(-2)],
    "np_bool_scalars": [np.bool_(True), np.bool_(False)],
    "np_0d_arrays": [np.array(1.0), np.array(2.0)],
    "np_arrays_f32": [np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)],
    "np_arrays_u8": [np.arange(4, dtype=np.uint8), np.arange(4, dtype=np.uint8)],
    "np_arrays_bool": [np.array([True, False]), np.array([False, False])],
    "strings": ["a", "bc"],
    "bytes": [b"a", b"bc"],
    "dict": [{"a": 1, "b": 2.0}, {"a": 3, "b": 4.0}],
    "namedtuple": [Point(1, np.array([1.0])), Point(2, np.array([2.0]))],
    "tuple": [(1, 2.0, "s"), (3, 4.0, "t")],
    "list": [[1, 2], [3, 4]],
    "nested": [
        {"img": np.full((2, 2), i, np.float32), "meta": (i, [float(i), "x"]),
         "pt": Point({"k": i}, (i, i + 1))}
        for i in range(3)
    ],
}


def _to_numpy(obj: Any) -> Any:
    """Turn every torch tensor inside obj into a numpy array (for comparison)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to_numpy(o) for o in obj))
    if isinstance(obj, Mapping):
        return type(obj)({k: _to_numpy(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(o) for o in obj)
    return obj


def _assert_same(actual: Any, expected: Any) -> None:
    """Assert equal structure, container types, values and array dtypes."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, Mapping):
        assert list(actual) == list(expected)
        for key in expected:
            _assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            _assert_same(a, e)
    else:
        assert actual == expected


def _assert_torch_equal(actual: Any, expected: Any) -> None:
    """Assert equal structure/values/dtypes where leaves may be tensors."""
    import torch

    assert type(actual) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype
        assert torch.equal(actual, expected)
    elif isinstance(expected, Mapping):
        assert list(actual) == list(expected)
        for key in expected:
            _assert_torch_equal(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            _assert_torch_equal(a, e)
    else:
        assert actual == expected


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the public functions behave as if torch were not installed."""
    monkeypatch.setattr(C, "_torch_state", (False, None))
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "torch" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# --- torch path --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NUMPY_BATCHES))
def test_default_collate_matches_torch(name: str) -> None:
    tud = pytest.importorskip("torch.utils.data")
    batch = NUMPY_BATCHES[name]
    _assert_torch_equal(C.default_collate(batch), tud.default_collate(batch))


def test_default_collate_with_tensors_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    batch = [{"t": torch.arange(3) + i, "p": Point(torch.tensor(i), [i])}
             for i in range(2)]
    out = C.default_collate(batch)
    _assert_torch_equal(out, torch.utils.data.default_collate(batch))
    assert isinstance(out["t"], torch.Tensor) and out["t"].shape == (2, 3)


def test_torch_is_detected_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    tud = pytest.importorskip("torch.utils.data")
    monkeypatch.setattr(C, "_torch_state", (False, None))
    C.default_collate([1])
    assert C._torch_state == (True, (tud.default_collate, tud.default_convert))
    calls = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a: calls.append(a))
    C.default_convert(1)
    assert calls == []  # cached: no second probe


def test_default_convert_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    data = {"a": np.arange(3), "b": (np.float32(1.5), "s"), "c": Point(np.zeros(2), 1)}
    _assert_torch_equal(C.default_convert(data), torch.utils.data.default_convert(data))
    assert isinstance(C.default_convert(np.arange(2)), torch.Tensor)


# --- numpy path --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NUMPY_BATCHES))
def test_numpy_collate_matches_torch_numpy(name: str) -> None:
    tud = pytest.importorskip("torch.utils.data")
    batch = NUMPY_BATCHES[name]
    expected = _to_numpy(tud.default_collate(batch))
    _assert_same(C._numpy_default_collate(batch), expected)


def test_public_functions_fall_back_to_numpy(no_torch: None) -> None:
    out = C.default_collate([{"a": 1, "b": np.ones(2)}, {"a": 2, "b": np.zeros(2)}])
    assert C._torch_state == (True, None)
    assert isinstance(out["a"], np.ndarray) and out["a"].dtype == np.int64
    np.testing.assert_array_equal(out["b"], [[1, 1], [0, 0]])
    assert C.default_convert((np.arange(2), 1))[1] == 1
    assert isinstance(C.default_convert((1, 2)), list)


def test_numpy_scalar_dtypes() -> None:
    collate = C._numpy_default_collate
    assert collate([1.0, 2.0]).dtype == np.float64
    assert collate([np.float32(1.0), np.float32(2.0)]).dtype == np.float32
    assert collate([1, 2]).dtype == np.int64
    assert collate([True, False]).dtype == np.bool_
    assert collate([1, 2.5]).dtype == np.float32  # torch.tensor's default dtype
    assert collate([np.array(1.0), np.array(2.0)]).shape == (2,)


def test_numpy_collate_nested_explicit() -> None:
    out = C._numpy_default_collate(NUMPY_BATCHES["nested"])
    assert list(out) == ["img", "meta", "pt"]
    assert out["img"].shape == (3, 2, 2) and out["img"].dtype == np.float32
    np.testing.assert_array_equal(out["img"][:, 0, 0], [0, 1, 2])
    ids, (floats, strs) = out["meta"]
    np.testing.assert_array_equal(ids, [0, 1, 2])
    assert ids.dtype == np.int64 and floats.dtype == np.float64
    assert strs == ("x", "x", "x")
    assert type(out["pt"]) is Point and type(out["pt"].y) is list
    np.testing.assert_array_equal(out["pt"].x["k"], [0, 1, 2])
    np.testing.assert_array_equal(out["pt"].y[1], [1, 2, 3])


def test_int_overflow_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Overflow"):
        C._numpy_default_collate([2**63, 1])
    with pytest.raises(ValueError, match="Overflow"):
        C._numpy_default_collate([2**70])


def test_numpy_unequal_arrays_raise() -> None:
    with pytest.raises(ValueError):
        C._numpy_default_collate([np.zeros(2), np.zeros(3)])


@pytest.mark.parametrize("use_torch", [False, True])
def test_unequal_sequences_raise(use_torch: bool) -> None:
    if use_torch:
        pytest.importorskip("torch")
    fn = C.default_collate if use_torch else C._numpy_default_collate
    with pytest.raises(RuntimeError, match="equal size"):
        fn([[1, 2], [3]])
    with pytest.raises(RuntimeError, match="equal size"):
        fn([(1, 2), (3, 4, 5)])


@pytest.mark.parametrize("use_torch", [False, True])
@pytest.mark.parametrize(
    ("batch", "type_name"),
    [([None, None], "NoneType"), ([object()], "object"), ([{"k": {1, 2}}], "set")],
)
def test_unsupported_type_raises(use_torch: bool, batch: list, type_name: str) -> None:
    if use_torch:
        pytest.importorskip("torch")
    fn = C.default_collate if use_torch else C._numpy_default_collate
    with pytest.raises(TypeError, match=f"found <class '{type_name}'>") as info:
        fn(batch)
    assert str(info.value).startswith("default_collate: batch must contain tensors")


@pytest.mark.parametrize("use_torch", [False, True])
@pytest.mark.parametrize("arr", [np.array(["a", "b"]), np.array([b"a"]),
                                 np.array([1, "x"], dtype=object)])
def test_string_and_object_arrays_raise(use_torch: bool, arr: np.ndarray) -> None:
    if use_torch:
        pytest.importorskip("torch")
    fn = C.default_collate if use_torch else C._numpy_default_collate
    with pytest.raises(TypeError, match=f"found {arr.dtype}$"):
        fn([arr, arr])


def test_container_types_preserved() -> None:
    collate = C._numpy_default_collate
    out = collate([MyDict(a=1), MyDict(a=2)])
    assert type(out) is MyDict
    np.testing.assert_array_equal(out["a"], [1, 2])
    od = collate([collections.OrderedDict(b=1.0, a=2.0)] * 2)
    assert type(od) is collections.OrderedDict and list(od) == ["b", "a"]
    dd = collate([collections.defaultdict(int, x=1)] * 2)
    assert type(dd) is collections.defaultdict and dd.default_factory is int
    frozen = collate([FrozenMap({"a": 1}), FrozenMap({"a": 2})])
    assert type(frozen) is FrozenMap
    assert type(collate([NoCtorMap({"a": 1}, 0)] * 2)) is dict  # fallback
    proxy = collate([types.MappingProxyType({"a": 1})] * 2)
    assert type(proxy) is types.MappingProxyType
    pt = collate([Point(1, 2.0), Point(3, 4.0)])
    assert type(pt) is Point and pt.y.dtype == np.float64
    assert type(collate([(1, 2), (3, 4)])) is list  # tuples become lists
    assert collate([("a",), ("b",)]) == [("a", "b")]  # str columns stay tuples
    assert type(collate([range(2), range(2)])) is list  # range(list) fails
    assert collate(["a", "b"]) == ["a", "b"]


def test_container_types_preserved_by_torch() -> None:
    pytest.importorskip("torch")
    assert type(C.default_collate([MyDict(a=1)] * 2)) is MyDict
    assert type(C.default_collate([Point(1, 2)] * 2)) is Point
    assert type(C.default_collate([FrozenMap({"a": 1})] * 2)) is FrozenMap


def test_numpy_collate_does_not_mutate_input() -> None:
    batch = [{"a": [1, 2]}, {"a": [3, 4]}]
    C._numpy_default_collate(batch)
    assert batch == [{"a": [1, 2]}, {"a": [3, 4]}]


def test_numpy_convert() -> None:
    convert = C._numpy_default_convert
    arr = np.arange(3)
    assert convert(arr) is arr
    scalar = np.float32(2)
    assert convert(scalar) is scalar
    assert convert("abc") == "abc" and convert(5) == 5
    out = convert({"a": (arr, "s"), "p": Point([1], 2), "m": MyDict(k=1)})
    assert type(out["a"]) is list and out["a"][0] is arr
    assert type(out["p"]) is Point and out["p"].x == [1]
    assert type(out["m"]) is MyDict
    assert type(convert(range(2))) is list
    assert type(convert(FrozenMap({"a": 1}))) is FrozenMap


def test_numpy_convert_matches_torch() -> None:
    tud = pytest.importorskip("torch.utils.data")
    # (numpy scalars are left out: torch makes 0-d tensors of them, numpy keeps them)
    data = {"a": np.arange(3), "b": (np.ones(1, np.float32), "s"),
            "c": Point(np.zeros(2), [1]), "d": np.array(["x"]), "e": range(2)}
    _assert_same(C._numpy_default_convert(data), _to_numpy(tud.default_convert(data)))


def test_import_probes_torch_only_when_first_used() -> None:
    code = "import threadloader.collate as c; assert c._torch_state == (False, None)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=50)


# --- property test -----------------------------------------------------------

_DTYPES = [np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_]


@st.composite
def _batches(draw: st.DrawFn) -> list[Any]:
    """Draw a batch of 1-4 samples sharing one random nested structure."""
    size = draw(st.integers(1, 4))

    def leaf(draw_: st.DrawFn) -> Any:
        kind = draw_(st.sampled_from(["int", "float", "array", "str", "npscalar"]))
        if kind == "int":
            return [draw_(st.integers(-(2**40), 2**40)) for _ in range(size)]
        if kind == "float":
            return [draw_(st.floats(allow_nan=False, width=64)) for _ in range(size)]
        if kind == "str":
            return [draw_(st.text(max_size=3)) for _ in range(size)]
        dtype = draw_(st.sampled_from(_DTYPES))
        if kind == "npscalar":
            return [dtype(draw_(st.integers(0, 100))) for _ in range(size)]
        shape = tuple(draw_(st.lists(st.integers(0, 3), max_size=3)))
        return [np.full(shape, draw_(st.integers(0, 100))).astype(dtype)
                for _ in range(size)]

    def node(depth: int) -> list[Any]:
        kind = draw(st.sampled_from(["leaf"] if depth == 0 else
                                    ["leaf", "dict", "tuple", "list", "point"]))
        if kind == "leaf":
            return leaf(draw)
        width = 2 if kind == "point" else draw(st.integers(1, 3))
        columns = [node(depth - 1) for _ in range(width)]
        rows = [[col[i] for col in columns] for i in range(size)]
        if kind == "dict":
            return [{f"k{j}": v for j, v in enumerate(r)} for r in rows]
        if kind == "tuple":
            return [tuple(r) for r in rows]
        return [Point(*r) for r in rows] if kind == "point" else rows

    return node(3)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
@settings(max_examples=150, deadline=None)
@given(_batches())
def test_property_numpy_path_equals_torch_path(batch: list[Any]) -> None:
    from torch.utils.data import default_collate

    expected = _to_numpy(default_collate(batch))
    _assert_same(C._numpy_default_collate(batch), expected)
