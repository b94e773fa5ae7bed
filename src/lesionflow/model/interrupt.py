"""Stopping training on SIGTERM / SIGUSR1 at a batch boundary, and the stage's exit code for it.

Never writes or deletes a file: the checkpoint of the last finished epoch is left as it is.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from lesionflow.model.joblog import log

T = TypeVar("T")

# SLURM sends SIGTERM at the time limit and on scancel, SIGUSR1 ahead of it with --signal=USR1@secs.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM,) + (
    (signal.SIGUSR1,) if hasattr(signal, "SIGUSR1") else ()
)


class TrainingInterrupted(Exception):
    """A stop signal arrived; the checkpoint of the last finished epoch (if any) is on disk."""

    def __init__(self, signum: int, epoch: int) -> None:
        self.signum = signum
        self.epoch = epoch
        # The shell's code for a death by this signal: SLURM and Snakemake must see a failure.
        self.exit_code = 128 + int(signum)
        super().__init__(f"training stopped by {signal.Signals(signum).name} after epoch {epoch}")


def exit_on_interrupt(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a stage's ``main`` so a TrainingInterrupted becomes its exit code (128 + signal)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except TrainingInterrupted as stop:
            raise SystemExit(stop.exit_code) from None

    return wrapped


class StopSignals:
    """While installed, records SIGTERM / SIGUSR1 so training stops at the next batch boundary.

    The handler only records: stopping happens in :meth:`check`, between batches, so no state
    is ever written halfway. Outside the main thread Python cannot install handlers, and the
    signals keep their default effect.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._record)
            except ValueError:
                break
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            # None means a handler installed outside Python; the default is the closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _record(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum

    def check(self, last_epoch: int) -> None:
        """Raise TrainingInterrupted (after one log line) if a stop signal has arrived."""
        if self.received is None:
            return
        name = signal.Signals(self.received).name
        if last_epoch > 0:
            log(f"received {name}: checkpoint of epoch {last_epoch} kept; exiting so a retry resumes")
        else:
            log(f"received {name} before the first epoch finished: no checkpoint; exiting so a "
                "retry starts afresh")
        raise TrainingInterrupted(self.received, last_epoch)


def ignore_stop_signals() -> None:
    """Leave SIGTERM / SIGUSR1 to the main process (called in data-loader workers).

    SLURM signals every process of the job; a worker killed by SIGTERM would crash the main
    process's loader before it could stop cleanly at a batch boundary.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
