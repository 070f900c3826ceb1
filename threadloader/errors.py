"""Exceptions the loader raises, and the note it attaches to a worker's error.

In:  an exception raised by user code in a worker, with where it happened.
Out: the same exception object, raised in the training loop at the position of
     the failing batch, carrying one note (``add_note``) that names the batch
     number, its sample indices and the worker.
"""

from __future__ import annotations

from typing import Any

NOTE_PREFIX = "threadloader:"
_MAX_INDICES_SHOWN = 16


class LoaderTimeoutError(TimeoutError, RuntimeError):
    """No batch arrived within ``timeout`` seconds.

    Subclasses both ``TimeoutError`` and ``RuntimeError`` (what torch's
    DataLoader raises), so either ``except`` clause catches it.
    """


class WorkerDiedError(RuntimeError):
    """A worker ended without reporting a result (killed, crashed, exited)."""


def user_exit_error(exc: BaseException, phase: str, where: str) -> WorkerDiedError:
    """The error a ``SystemExit``, ``KeyboardInterrupt`` or ``GeneratorExit`` from user code in a worker becomes.

    Re-raised as it is, it would end the training program without a
    traceback (``sys.exit(7)`` in ``__getitem__`` exits with status 7), where
    torch's loader reports that the worker "exited unexpectedly".
    """
    if isinstance(exc, SystemExit):
        return WorkerDiedError(
            f"DataLoader worker ({where}) exited unexpectedly with exit code {exc.code}: {phase} called "
            f"sys.exit({exc.code!r}) (threadloader: the worker survived; only this batch failed)"
        )
    return WorkerDiedError(
        f"DataLoader worker ({where}) stopped: {phase} raised {type(exc).__name__} "
        "(threadloader: the worker survived; only this batch failed)"
    )


class RemoteTraceback(Exception):
    """Carries the text of a traceback formatted in a worker process."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n{self.text}"


def describe_indices(indices: Any) -> str:
    """Render a batch's sample indices for a message, shortened when long."""
    if isinstance(indices, list) and len(indices) > _MAX_INDICES_SHOWN:
        head = ", ".join(repr(i) for i in indices[:_MAX_INDICES_SHOWN])
        return f"[{head}, ... ({len(indices)} in all)]"
    return repr(indices)


def attach_note(exc: BaseException, text: str) -> None:
    """Attach ``text`` as the loader's note, replacing an earlier loader note.

    An exception object can be raised more than once (a failed
    ``worker_init_fn`` fails every batch its worker takes); replacing keeps one
    current note instead of a growing list.
    """
    notes = getattr(exc, "__notes__", None)
    kept = [n for n in notes or () if not (isinstance(n, str) and n.startswith(NOTE_PREFIX))]
    # __notes__ is what add_note (3.11+) appends to and tracebacks print; on 3.10 it is only an attribute
    exc.__notes__ = [*kept, f"{NOTE_PREFIX} {text}"]  # type: ignore[attr-defined]  # typeshed: 3.11+ only
