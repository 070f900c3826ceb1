"""Collate samples into batches, and convert single samples, like torch does.

In: ``default_collate`` takes a batch (a list of samples as a dataset returns
them); ``default_convert`` takes one sample. Out: the same structure (mappings,
namedtuples, sequences) with leaves stacked along a new leading batch dimension
(collate) or converted (convert). With torch importable, both delegate to
``torch.utils.data`` and return exactly torch's output (tensors); without it, a
numpy implementation with torch's semantics returns numpy arrays instead. torch
is looked up lazily on the first call, never at import time.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any

import numpy as np

__all__ = ["default_collate", "default_convert"]

_TorchFns = tuple[Callable[[Any], Any], Callable[[Any], Any]]

# (probed, (collate, convert) or None); replaced as a whole so that concurrent
# readers on free-threaded Python never see a half-updated state.
_torch_state: tuple[bool, _TorchFns | None] = (False, None)

# dtype.str codes for bytes, str and object arrays, which cannot be collated.
_STR_OBJ_DTYPE = re.compile(r"[SaUO]")
# torch.tensor() infers float32/complex64 for Python floats mixed into ints.
_TORCH_DEFAULT_DTYPES = {"f": np.float32, "c": np.complex64}
_ERR_FORMAT = (
    "default_collate: batch must contain tensors, numpy arrays, numbers, "
    "dicts or lists; found {}"
)


def _torch_fns() -> _TorchFns | None:
    """Return torch's ``(default_collate, default_convert)``, cached after a probe.

    Returns:
        The torch functions if torch is installed, else None.
    """
    global _torch_state
    probed, fns = _torch_state
    if not probed:
        try:
            if importlib.util.find_spec("torch") is not None:
                import torch.utils.data as tud

                fns = (tud.default_collate, tud.default_convert)
        except (ImportError, ValueError):  # ValueError: torch.__spec__ is None
            fns = None
        _torch_state = (True, fns)
    return fns


def is_default(collate_fn: Any) -> bool:
    """True for a collate function that draws no random numbers: threadloader's or torch's default collate."""
    if collate_fn is default_collate:
        return True
    torch_data = sys.modules.get("torch.utils.data")
    return torch_data is not None and collate_fn is getattr(torch_data, "default_collate", None)


def prepare(collate_fn: Any) -> None:
    """Import torch now, in the calling thread, if ``collate_fn`` is ours and will use it.

    The loader calls this before starting workers, so that the first batch
    does not pay for importing torch inside a worker (seconds, and counted as
    collate time in the loader's statistics).
    """
    if collate_fn is default_collate or collate_fn is default_convert:
        _torch_fns()


def default_collate(batch: Sequence[Any]) -> Any:
    """Collate a batch of samples into batched tensors (or numpy arrays).

    Args:
        batch: Non-empty sequence of samples of one common structure.

    Returns:
        The batch with a new leading batch dimension on every leaf: torch's
        output when torch is installed, else numpy arrays.

    Raises:
        TypeError: A leaf has an unsupported type or a string/object dtype.
        RuntimeError: Sequences in the batch have unequal lengths.
    """
    fns = _torch_fns()
    return fns[0](batch) if fns is not None else _numpy_default_collate(batch)


def default_convert(data: Any) -> Any:
    """Convert the numpy arrays inside one sample, keeping its structure.

    Args:
        data: A single sample.

    Returns:
        torch's ``default_convert(data)`` when torch is installed; otherwise
        the sample with arrays unchanged and tuples turned into lists.
    """
    fns = _torch_fns()
    return fns[1](data) if fns is not None else _numpy_default_convert(data)


def _rebuild(proto: Any, values: list[Any]) -> Any:
    """Build a container like ``proto`` holding ``values``, as torch does.

    Args:
        proto: The original mapping or sequence (not a namedtuple).
        values: New values, in ``proto``'s order (keys for a mapping).

    Returns:
        A modified copy of ``proto`` if mutable, else ``type(proto)(values)``;
        a plain dict/list if that raises TypeError.
    """
    is_map = isinstance(proto, Mapping)
    plain: Any = dict(zip(proto, values)) if is_map else values
    try:
        if isinstance(proto, (MutableMapping, MutableSequence)):
            clone: Any = copy.copy(proto)
            if is_map:
                clone.update(plain)
            else:
                for i, value in enumerate(values):
                    clone[i] = value
            return clone
        return type(proto)(plain)
    except TypeError:
        return plain


def _collate_ints(batch: Sequence[Any]) -> np.ndarray:
    """Collate Python ints/bools to int64/bool, inferring dtypes like torch.tensor.

    Raises:
        ValueError: A value does not fit in int64 (torch's message).
        TypeError: The values are not all numbers.
    """
    if any(isinstance(b, int) and not -(2**63) <= b < 2**63 for b in batch):
        raise ValueError("Overflow when unpacking long long")
    out = np.asarray(batch)
    if out.dtype.kind not in "biufc":
        raise TypeError(f"default_collate: cannot make a tensor from {batch!r}")
    return out.astype(_TORCH_DEFAULT_DTYPES.get(out.dtype.kind, out.dtype))


def _numpy_default_collate(batch: Sequence[Any]) -> Any:
    """``torch.utils.data.default_collate`` semantics, with numpy arrays out.

    Args:
        batch: Non-empty sequence of samples of one common structure.

    Returns:
        The collated batch; see ``default_collate`` for the errors raised.
    """
    elem = batch[0]
    if isinstance(elem, np.ndarray):
        if _STR_OBJ_DTYPE.search(elem.dtype.str) is not None:
            raise TypeError(_ERR_FORMAT.format(elem.dtype))
        return np.stack(batch)
    if isinstance(elem, (np.bool_, np.number, np.object_)):
        return np.asarray(batch)
    if isinstance(elem, float):
        return np.asarray(batch, dtype=np.float64)
    if isinstance(elem, int):
        return _collate_ints(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, Mapping):
        values = [_numpy_default_collate([d[k] for d in batch]) for k in elem]
        return _rebuild(elem, values)
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):
        return type(elem)(*(_numpy_default_collate(s) for s in zip(*batch)))
    if isinstance(elem, Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        columns = [_numpy_default_collate(s) for s in zip(*batch)]
        return columns if isinstance(elem, tuple) else _rebuild(elem, columns)
    raise TypeError(_ERR_FORMAT.format(type(elem)))


def _numpy_default_convert(data: Any) -> Any:
    """``torch.utils.data.default_convert`` semantics, without torch.

    Args:
        data: A single sample.

    Returns:
        ``data`` with containers rebuilt (plain tuples become lists, as in
        torch) and everything else, numpy arrays included, unchanged.
    """
    if isinstance(data, Mapping):
        return _rebuild(data, [_numpy_default_convert(data[k]) for k in data])
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(_numpy_default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [_numpy_default_convert(d) for d in data]
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return _rebuild(data, [_numpy_default_convert(d) for d in data])
    return data
