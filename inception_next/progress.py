"""What a long command shows while it works: a line now and then saying what it is doing, how far it is and about how
long is left, the same in a terminal and in a log file (whole lines, no carriage returns)."""

import sys
import time

SOON = 5.0  # a first line within this many seconds, then one at least this often while it moves fast...
LATER = 60.0  # ...and one at least this often whatever it does


class Progress:
    """Counts `total` units of work (None: an unknown number) called `what`; `update()` after each one prints a line
    when SOON seconds have passed and the work moved a tenth since the last line, or LATER seconds have passed, and
    at the last unit."""

    def __init__(self, what, total=None, unit="", stream=None):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = self.shown = time.monotonic()
        self.shown_done = 0

    def update(self, count=1, note=""):
        self.done += count
        now = time.monotonic()
        since, moved = now - self.shown, (self.done - self.shown_done) / (self.total or self.done or 1)
        last = self.total is not None and self.done >= self.total
        if last or since >= LATER or (since >= SOON and moved >= 0.1):
            self.shown, self.shown_done = now, self.done
            print(self.line(now) + (f"; {note}" if note else ""), file=self.stream, flush=True)

    def line(self, now):
        elapsed = now - self.started
        if not self.total:
            return f"{self.what}: {self.done}{self.unit} in {elapsed:.0f} s"
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        return (f"{self.what}: {self.done}/{self.total}{self.unit}, {elapsed:.0f} s"
                + (f", about {left:.0f} s left" if self.done < self.total else ""))
