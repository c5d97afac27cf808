"""How a run on the controller treats SIGTERM: as Ctrl-C while it runs, and not at all while it cleans up.

A `timeout` or a cancelled CI job sends SIGTERM. Python's default ends the process at once, without the
end-of-run sweep or the probe's removal; as Ctrl-C (KeyboardInterrupt) pytest still does both. Once the
sweep has begun, the run is ending anyway, and a repeated SIGTERM must not cut the sweep short.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, unless someone outside already chose a handler.

    A no-op outside the main thread, where Python lets no one set handlers.
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_held() -> Iterator[None]:
    """SIGTERM does nothing inside the block (Ctrl-C still stops it, for a user who would rather clean later).

    A handler that does nothing, not SIG_IGN: the ssh and probe processes started inside would inherit an
    ignored SIGTERM, and their own timeouts could no longer stop them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
