"""SIGINT/SIGTERM stop the long-running commands (relay, consume, load, serve --workers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The handler runs in the main thread between two bytecodes. Inside ``stop.wait()`` that
# thread may hold the event's internal lock (entering or leaving the wait): the script holds
# it the same way and raises the signal there, so the handler runs exactly in that window.
_SCRIPT = """
import signal, threading
from gristmill.cli.common import stop_on_signals

stop = threading.Event()
stop_on_signals(stop, (signal.SIGUSR1,))
with stop._cond:  # what the main thread holds for a moment in every stop.wait()
    signal.raise_signal(signal.SIGUSR1)
print("set" if stop.wait(10) else "not set", flush=True)
"""


def test_a_signal_that_lands_inside_stop_wait_still_stops() -> None:
    # A handler calling stop.set() itself waits here for ever for the lock its own thread
    # holds: a relay hung after SIGTERM that way in CI.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "set"
