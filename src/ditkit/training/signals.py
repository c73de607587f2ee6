"""A graceful stop on SIGTERM / SIGINT: cluster schedulers preempt jobs with SIGTERM (SLURM, Kubernetes).

The first signal only sets a flag; the training loop checks it after each step, writes a
checkpoint and returns. A second SIGINT (Ctrl-C twice) interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """Context manager turning SIGTERM and SIGINT into a flag while it is active.

    Example:
        with GracefulStop() as stop:
            for step in ...:
                train_step()
                if stop.requested:
                    save(); break
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        # Handlers can only be installed from the main thread; elsewhere (e.g. a notebook worker) do nothing.
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
