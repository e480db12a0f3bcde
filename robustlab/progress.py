"""Progress on stderr: a bar on a terminal, a plain line every :data:`PLAIN_INTERVAL` seconds
elsewhere (CI logs), nothing when disabled (``--quiet``).

:func:`batch_progress` wraps an iterable of batches; :func:`progress` is the same as a context
manager for work counted by hand (``p.update(n)``). While one runs, :func:`set_stage` names what
it is on (``"pgd eps=8/255, steps=10"``): the bar's label and the plain lines show it. stdout is
never written, so ``--json`` output stays clean.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TextIO

PLAIN_INTERVAL = 10.0  # seconds between plain progress lines off a terminal
_active: list["Progress"] = []


class Progress:
    """``total`` units of work under ``label``: a click bar when ``stream`` is a terminal, else a
    line ``robustlab: LABEL: 320/600 (53%) [stage], 42 s elapsed, about 37 s left`` every
    ``interval`` seconds (default :data:`PLAIN_INTERVAL`; the first after one interval, so short
    work prints nothing)."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, interval: float | None = None, tty: bool | None = None):
        self.total = max(int(total), 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = max(PLAIN_INTERVAL if interval is None else interval, 0.01)
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.done = 0
        self.stage_text: str | None = None
        self.t0 = time.monotonic()
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> "Progress":
        if self.tty:
            import click

            self._bar = click.progressbar(length=self.total, label=self.label, file=self.stream, show_eta=True)
            self._bar.__enter__()
        else:
            self._thread = threading.Thread(target=self._ticker, name="robustlab-progress", daemon=True)
            self._thread.start()
        _active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self in _active:
            _active.remove(self)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def _shown_label(self) -> str:
        return f"{self.label} [{self.stage_text}]" if self.stage_text else self.label

    def stage(self, text: str | None) -> None:
        """Name what the work is on now (None: nothing in particular)."""
        if text == self.stage_text:
            return
        self.stage_text = text
        if self._bar is not None:
            self._bar.label = self._shown_label()
            self._bar.render_progress()

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def _ticker(self) -> None:
        """Off a terminal: a line every ``interval`` seconds until the work ends (a daemon thread,
        so a line also comes while one long step, such as a PGD batch, runs)."""
        while not self._stop.wait(self.interval):
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """The plain progress line."""
        elapsed = (time.monotonic() if now is None else now) - self.t0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        stage = f" [{self.stage_text}]" if self.stage_text else ""
        left = ""
        if self.total and 0 < self.done < self.total:
            left = f", about {elapsed * (self.total - self.done) / self.done:.0f} s left"
        return f"robustlab: {self.label}: {self.done}/{self.total}{pct}{stage}, {elapsed:.0f} s elapsed{left}"


@contextmanager
def progress(total: int, label: str, enabled: bool) -> Iterator[Progress | None]:
    """A :class:`Progress` over ``total`` units on stderr, or None when not ``enabled``."""
    if not enabled:
        yield None
        return
    with Progress(total, label) as p:
        yield p


def set_stage(text: str | None) -> None:
    """Name what the innermost running progress is on (e.g. the attack); nothing when none runs."""
    if _active:
        _active[-1].stage(text)


def set_variant_stage(variant: Any) -> None:
    """:func:`set_stage` for an attack / corruption variant (anything with ``.variant`` and
    ``.param``): ``"pgd eps=8/255, steps=10"``. The evaluation engine calls it before each variant
    runs on a batch, so the bar says which attack or corruption it is on."""
    if _active:
        from robustlab.reporting.tables import param_display

        _active[-1].stage(f"{variant.variant} {param_display(variant.param or '')}".strip())


def batch_progress(iterable: Iterable[Any], total: int, label: str, enabled: bool) -> Iterable[Any]:
    """Yield ``iterable``'s batches, counting ``total`` images on stderr when enabled (a batch is a
    tuple whose first item has one entry per image, or counts as one)."""
    if not enabled:
        yield from iterable
        return
    with Progress(total, label) as p:
        for item in iterable:
            p.stage(None)  # a new batch: whatever named the last one's stage (set_stage) is done
            yield item
            p.update(len(item[0]) if isinstance(item, tuple) else 1)
