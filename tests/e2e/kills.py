"""A kill schedule that always lands inside the run, however fast this machine sends.

Crash tests kill processes at points of the send (a fraction of the events acknowledged).
On an idle machine the sender can outrun a killer that is still restarting a process, so
the last kills never happen and the test proves less than it says. The schedule here paces
the sender instead: a sender thread that got ``slack`` past the next kill's point waits
(bounded) until the killer reached that point. Kills still land at random points of
requests and loads.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence


class KillSchedule:
    def __init__(
        self,
        total: int,
        targets: Sequence[str],
        rng: random.Random,
        *,
        lo: float = 0.03,
        hi: float = 0.95,
        slack: float = 0.02,
        max_wait_s: float = 60.0,
    ) -> None:
        """One kill inside each of ``len(targets)`` equal slices of ``[lo, hi]`` of the
        events, the targets in the order given (shuffle them first for a mix)."""
        width = (hi - lo) / len(targets)
        self.points = [
            (int(total * (lo + width * (i + rng.uniform(0.0, 0.5)))), target)
            for i, target in enumerate(targets)
        ]
        self.rng = rng
        self.slack = int(total * slack)
        self.max_wait_s = max_wait_s
        self.sent = 0
        self.done: list[tuple[str, int]] = []
        """(target, events sent when it was killed)."""
        self.finished = threading.Event()
        self._next = 0
        self._cv = threading.Condition()

    def _due(self) -> int | None:
        return self.points[self._next][0] if self._next < len(self.points) else None

    def progress(self, n: int) -> None:
        """The sender's callback: count, then wait while too far past the next kill."""
        deadline = time.monotonic() + self.max_wait_s
        with self._cv:
            self.sent += n
            self._cv.notify_all()
            while (due := self._due()) is not None and self.sent >= due + self.slack:
                left = deadline - time.monotonic()
                if left <= 0 or self.finished.is_set():
                    return
                self._cv.wait(left)

    def run(self, kill: Callable[[str], None]) -> None:
        """The killer's loop (a thread): wait for each point, then kill its target.

        Senders are released as soon as a point is reached, before the kill: they keep
        sending during the random delay, so the kill lands inside requests and loads (a
        kill while every sender waited would meet nothing in flight). A kill whose point
        was reached still happens if the send ends meanwhile."""
        while not self.finished.is_set():
            with self._cv:
                due = self._due()
                if due is None:
                    return
                while self.sent < due and not self.finished.is_set():
                    self._cv.wait(0.05)
                if self.sent < due:
                    return  # the send ended (or failed) before this point
                target = self.points[self._next][1]
                self._next += 1
                self._cv.notify_all()
            time.sleep(self.rng.uniform(0, 0.3))  # anywhere inside a request or a load
            kill(target)
            with self._cv:
                self.done.append((target, self.sent))

    def stop(self) -> None:
        """The send is over (or failed): release waiting senders and the killer."""
        self.finished.set()
        with self._cv:
            self._cv.notify_all()

    def count(self, target: str) -> int:
        return sum(1 for t, _ in self.done if t == target)
