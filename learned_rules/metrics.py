"""Metrics output: `metrics.jsonl` in the workdir, absl logging, and a live progress line."""

from __future__ import annotations

import json
import logging as std_logging
import math
import os
import re
import sys
import time
from collections.abc import Callable

import jax
from absl import logging

from learned_rules import event_file, files


def tensorboard_tag(name: str) -> str:
  """The TensorBoard tag of a metrics.jsonl name: held-out scalars (`eval_*`) under `eval/`, a
  meta-batch problem's (`p<i>_*`) under `problem<i>/`, the others under `train/`; bit accuracy is
  called `recall` there."""
  group = "train"
  if name.startswith("eval_"):
    group, name = "eval", name[len("eval_") :]
  elif re.fullmatch(r"p\d+_.+", name):
    index, _, name = name[1:].partition("_")
    group = f"problem{index}"
  return f"{group}/{'recall' if name == 'bit_accuracy' else name}"


class MetricsWriter:
  """Appends one JSON record per line to `workdir/metrics.jsonl` (local or remote: `files`) and, with
  `events=True`, writes the same scalars to a TensorBoard event file in `workdir` (`event_file`:
  no TensorFlow needed), flushed at every record; `close()` closes it."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl", events: bool = False):
    self.path = files.join(workdir, filename)
    self._events = event_file.EventWriter(workdir) if events else None

  def write(self, step: int, **scalars) -> None:
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    files.append_text(self.path, json.dumps(record) + "\n")
    self.write_events(step, **scalars)

  def write_events(self, step: int, **scalars) -> None:
    """Scalars for TensorBoard only: timings such as steps per second, which metrics.jsonl leaves out
    so that a rerun logs exactly the same records."""
    if self._events is not None:
      self._events.scalars(step, {tensorboard_tag(k): float(v) for k, v in scalars.items()})
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()


def read_metrics(path: str) -> list[dict]:
  return [json.loads(line) for line in files.read_text(path).splitlines() if line.strip()]


def _clock(seconds: float) -> str:
  seconds = max(0, int(seconds))
  return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
  """Live line `step, loss, recall accuracy, steps/s, time left`, rewritten in place on a terminal
  and logged as a plain line otherwise (so CI logs and `nohup` files stay readable)."""

  def __init__(self, total_steps: int, first_step: int = 0, label: str = "", stream=None):
    self.total, self.first, self.label = total_steps, first_step, label
    self.stream = stream if stream is not None else sys.stderr
    self.start = time.perf_counter()
    self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.rate = 0.0  # steps per second since the first step, as of the last update

  def update(self, step: int, loss: float, accuracy: float) -> str:
    done = step - self.first
    elapsed = time.perf_counter() - self.start
    rate = self.rate = done / elapsed if elapsed > 0 else 0.0
    left = (self.total - step) / rate if rate > 0 else float("nan")
    eta = _clock(left) if rate > 0 else "?"
    line = (
      f"{self.label}step {step}/{self.total}  loss {loss:.4f}  recall {accuracy:.3f}  "
      f"{rate:.2f} steps/s  left {eta}"
    )
    if self.live:
      self.stream.write("\r" + line + " " * 4)
      self.stream.flush()
    else:
      logging.info(line)
    return line

  def close(self) -> None:
    if self.live:
      self.stream.write("\n")
      self.stream.flush()


class StudyProgress:
  """An absl INFO line as each unit of a long study ends (a run, a rule, a seed), on process 0 only:
  `<label> <done>/<total>: <what> in <s> s; <s> s elapsed, about <s> s left`. Time left is `left_s`
  when the caller knows better (units of unlike cost; a function of the unit's seconds; NaN: not known
  yet), else the mean unit so far times the units left; there is none after the last unit."""

  def __init__(self, label: str, total: int):
    self.label, self.total, self.count = label, total, 0
    self.start = self.last = time.perf_counter()

  def done(self, what: str, left_s: float | Callable[[float], float] | None = None) -> None:
    """Logs the line of the unit that just ended."""
    now = time.perf_counter()
    took, self.last = now - self.last, now
    self.count += 1
    if callable(left_s):
      left_s = left_s(took)
    elapsed, units_left = now - self.start, self.total - self.count
    if left_s is None:
      left_s = elapsed / self.count * units_left
    rest = f", about {left_s:.0f} s left" if units_left and math.isfinite(left_s) else ""
    if jax.process_index() == 0:
      logging.info(
        "%s %d/%d: %s in %.0f s; %.0f s elapsed%s",
        self.label,
        self.count,
        self.total,
        what,
        took,
        elapsed,
        rest,
      )


class _DropLibraryInfo:
  """absl handler filter: drops INFO records from the given libraries (orbax logs every save)."""

  def __init__(self, libraries: tuple[str, ...]):
    self.markers = tuple(f"{os.sep}{lib}{os.sep}" for lib in libraries)

  def filter(self, record) -> bool:
    return record.levelno >= std_logging.WARNING or not any(m in record.pathname for m in self.markers)


def quiet_library_logs(libraries: tuple[str, ...] = ("orbax", "jax")) -> None:
  """Keeps the experiment logs readable: library INFO chatter off, warnings and errors kept."""
  logging.get_absl_handler().addFilter(_DropLibraryInfo(libraries))
