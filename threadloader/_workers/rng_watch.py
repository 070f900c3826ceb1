"""Seeing a worker thread draw from torch's default generator, which every thread of the process shares.

In:  a worker thread's first batches (its runtime wraps their fetch in
     ``SharedDrawWatch.watching()``), and the loader's one ``SharedDrawWatch``.
Out: ``SharedDrawWatch.found``: the first such draw, named (``"torch.rand
     (called at transforms.py:123)"``), for the loader to warn about once
     (``message``).

A thread worker cannot make those draws reproducible: the training loop and
the other workers draw from the same generator at moments no one controls.
torch's functions that draw (``torch.rand``, ``Tensor.uniform_``,
``F.dropout`` in training...) pass through a ``TorchFunctionMode``, which is
per thread in torch, so pushing one in a worker thread sees exactly that
worker's calls; one without ``generator=`` draws from the default generator.
torchvision's transforms draw that way. The mode costs a Python call per
torch call, so a worker watches only its first ``WATCHED_BATCHES`` batches,
and none once the loader has found a draw.

Ownership: the loader owns its ``SharedDrawWatch`` and reads ``found``;
worker threads write it. It travels with a pickled loader, emptied.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from types import FrameType
from typing import Any

#: How many batches each worker thread of a pool watches (a draw per sample shows in the first).
WATCHED_BATCHES = 4

#: torch functions and tensor methods that take ``generator=`` and draw from the default one without it,
#: and the dropout family, which always draws from it (when training).
_DRAWING = frozenset(
    {
        "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm", "normal",
        "bernoulli", "multinomial", "poisson", "binomial", "_standard_gamma", "_sample_dirichlet",
        "uniform_", "normal_", "random_", "bernoulli_", "exponential_", "geometric_", "cauchy_",
        "log_normal_",
    }
)
_DROPOUT = frozenset(
    {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "rrelu", "rrelu_"}
)
_DROPOUT_TRAINING_ARG = 2  # F.dropout(input, p, training, inplace): where ``training`` sits when passed by position
_TORCH_DIR = os.sep + "torch" + os.sep
_OUR_DIR = os.path.dirname(os.path.abspath(__file__))


def _draws_from_default(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if name in _DRAWING:
        return kwargs.get("generator") is None
    if name in _DROPOUT:
        training = kwargs.get("training", args[_DROPOUT_TRAINING_ARG] if len(args) > _DROPOUT_TRAINING_ARG else True)
        return bool(training)
    return False


def _caller() -> str:
    """Where the drawing call was made: the innermost frame outside torch and threadloader."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if _TORCH_DIR not in filename and not filename.startswith(_OUR_DIR):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "an unknown place"


def _public_name(func: Any, name: str) -> str:
    """``torch.rand``, ``torch.Tensor.uniform_``, ``torch.nn.functional.dropout``: how users know ``func``."""
    qualified = getattr(func, "__qualname__", name)
    if qualified.startswith(("TensorBase.", "Tensor.")):
        return f"torch.Tensor.{name}"
    module = getattr(func, "__module__", None)
    if not module or module.startswith("torch._"):  # builtins live in torch._C and friends
        return f"torch.{name}"
    return f"{module}.{name}"


class SharedDrawWatch:
    """One loader's record of the first draw a worker thread made from torch's default generator.

    Attributes:
        found: that draw, named, or ``None``.
    """

    def __init__(self) -> None:
        self.found: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"found": None}  # a copy of the loader watches anew

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.found = state["found"]

    def watching(self) -> Any:
        """A context that records, in this thread, a draw from torch's default generator (if not yet found)."""
        torch = sys.modules.get("torch")
        if self.found is not None or torch is None:
            return nullcontext()
        return _watch(self)


def _mode_type() -> type:
    """A ``TorchFunctionMode`` that records a draw from the default generator in a ``SharedDrawWatch``."""
    global _mode_class
    if _mode_class is None:
        from torch.overrides import TorchFunctionMode

        class _DefaultGeneratorDraws(TorchFunctionMode):
            def __init__(self, watch: SharedDrawWatch) -> None:
                super().__init__()
                self.watch = watch

            def __torch_function__(
                self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
            ) -> Any:
                kwargs = kwargs or {}
                name = getattr(func, "__name__", "")
                if self.watch.found is None and _draws_from_default(name, args, kwargs):
                    self.watch.found = f"{_public_name(func, name)} (called at {_caller()})"
                return func(*args, **kwargs)

        _mode_class = _DefaultGeneratorDraws
    return _mode_class


_mode_class: type | None = None


@contextmanager
def _watch(watch: SharedDrawWatch) -> Iterator[None]:
    with _mode_type()(watch):
        yield


def message(found: str) -> str:
    """The warning for a draw from torch's default generator in a worker thread."""
    return (
        f"threadloader: a worker thread drew from torch's default random generator ({found}). All threads "
        "share that generator, so these random numbers change from run to run and with num_workers, however "
        "the seed is set. For reproducible draws, pass generator=torch.random.thread_safe_generator() (or "
        "threadloader.sample_torch_generator()) to the call, use transforms that take a generator, or use "
        "mode='process', where each worker seeds its own default generator for every sample."
    )
