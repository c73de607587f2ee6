"""Output that outlives its reader: `ditkit train ... 2>&1 | head -1` must not lose the run.

When the reader of stdout or stderr goes away, a write raises BrokenPipeError. Left alone it would
end the command where it stood: a training run before its checkpoint, a demo before its samples.
`pipe_safe_streams` wraps both streams so that the first failed write points that stream at
/dev/null and the work goes on; the command's exit status then says that output was lost
(`SIGPIPE_EXIT`, as `yes | head` reports for `yes`) once the work is saved.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# Exit status of a process ended by SIGPIPE (128 + 13), what `yes | head` reports for `yes`.
SIGPIPE_EXIT = 141


class PipeSafeStream:
    """A text stream that turns a closed reader into a silent /dev/null (see the module's doc)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost = False

    def _closed(self) -> None:
        self.lost = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())  # Python's own flush at exit must not fail again
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no file descriptor (a stream replaced in tests)
            pass

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._closed()
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._closed()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ... of the stream
        return getattr(self._stream, name)


@contextmanager
def pipe_safe_streams() -> Iterator[tuple[PipeSafeStream, PipeSafeStream]]:
    """Wrap sys.stdout and sys.stderr in `PipeSafeStream` while active; restored on exit."""
    saved = sys.stdout, sys.stderr
    out, err = PipeSafeStream(sys.stdout), PipeSafeStream(sys.stderr)
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = saved
