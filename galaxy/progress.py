"""Progress for long commands: a tqdm bar on a terminal, plain periodic lines elsewhere.

On a terminal (stderr is a TTY, or in Jupyter via tqdm.auto) the user sees a bar with the
total, ETA and the rate in images per minute (the unit of every other figure galaxy prints); a
total that is not known yet (still being counted) shows as `?`. In CI logs and batch jobs a bar would be carriage-return noise, so one plain line is
written every `interval` seconds (default 30, `GALAXY_PROGRESS_INTERVAL`) and at the end:
  classifying: 120,000/5,000,000 img (2.4%), 8,120 img/min, ETA 10:01:02, 3 failed
`enabled=False` (`--quiet`) silences both.
"""

from __future__ import annotations

import os
import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """tqdm's small surface (update, set_postfix_str, close, context manager) as periodic lines."""

    def __init__(self, desc: str, unit: str, total: int | None, interval: float, stream):
        self.desc, self.unit, self.total, self.interval, self.stream = desc, unit, total, interval, stream
        self.n, self.postfix = 0, ""
        self._started = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        del refresh
        self.postfix = text

    def _line(self) -> None:
        elapsed = time.monotonic() - self._started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"
        if self.total:
            done += f" ({100 * self.n / self.total:.1f}%)"
        parts = [done, f"{60 * rate:,.0f} {self.unit}/min", f"elapsed {_clock(elapsed)}"]
        if self.total and rate > 0:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        print(f"{self.desc}: " + ", ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.n:
            self._line()

    def __iter__(self):  # pragma: no cover - iteration is not used with plain progress
        raise TypeError("PlainProgress wraps counts, not iterables")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{eta_text}, {per_min}{postfix}]"


def _terminal_bar(**options):
    """A tqdm bar whose rate reads per minute and whose ETA appears once the total is known.

    Subclassed lazily, so importing this module does not import tqdm.
    """
    from tqdm.std import tqdm

    class TerminalBar(tqdm):
        @property
        def format_dict(self):
            values = super().format_dict
            elapsed = values["elapsed"]
            rate = values["rate"] or (self.n / elapsed if elapsed else None)
            values["per_min"] = f"{60 * rate:,.0f} {self.unit}/min" if rate else f"- {self.unit}/min"
            left = (self.total - self.n) / rate if rate and self.total else None
            values["eta_text"] = tqdm.format_interval(left) if left is not None else "?"
            return values

    return TerminalBar(bar_format=BAR_FORMAT, **options)


def progress(desc: str, unit: str = "img", total: int | None = None, enabled: bool = True, leave: bool = True,
             stream=None):
    """A progress reporter: call `update(n)`, optionally `set_postfix_str`, then `close()`.

    `total` may be set later (`bar.total = n`), e.g. when counting the inputs finishes.
    """
    from tqdm.auto import tqdm

    stream = stream or sys.stderr
    if not enabled:
        return tqdm(disable=True)
    if "ipykernel" in sys.modules:
        return tqdm(desc=desc, unit=unit, total=total, file=stream, dynamic_ncols=True, leave=leave)
    if getattr(stream, "isatty", lambda: False)():
        return _terminal_bar(desc=desc, unit=unit, total=total, file=stream, dynamic_ncols=True, leave=leave)
    return PlainProgress(desc, unit, total, progress_interval(), stream)


def progress_interval() -> float:
    """Seconds between the plain progress lines of a log: GALAXY_PROGRESS_INTERVAL, default 30 (empty: unset).

    Raises:
        UsageError: not a finite number >= 0 (a traceback, and a run's work folders left, in a batch job).
    """
    import math

    from galaxy.errors import UsageError

    text = os.environ.get("GALAXY_PROGRESS_INTERVAL", "").strip()
    if not text:
        return 30.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):  # 0: a line at every update
        raise UsageError(f"GALAXY_PROGRESS_INTERVAL={text!r}: expected a number of seconds >= 0")
    return value
