"""Metrics output: `metrics.jsonl` in the workdir, absl logging, and a live progress line."""

from __future__ import annotations

import json
import logging as std_logging
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence

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
  `<label> <done>/<total>: <what> in <s> s; <s> s elapsed, about <s> s left`.

  `kinds` names the kind of every unit, in the order they run (units of one kind cost alike; by default
  all are of one kind). Time left is each unit still to run as long as the mean of the units of its kind
  done so far; it is left out while a kind still to run has none done, and after the last unit."""

  def __init__(self, label: str, total: int, kinds: Sequence[str] | None = None):
    self.label, self.total = label, total
    self.kinds = list(kinds) if kinds is not None else [""] * total
    if len(self.kinds) != total:
      raise ValueError(f"StudyProgress: {len(self.kinds)} kinds for {total} units")
    self.seconds: dict[str, list[float]] = {}  # kind -> the seconds of its units done
    self.count = 0
    self.start = self.last = time.perf_counter()

  def done(self, what: str) -> None:
    """Logs the line of the unit that just ended."""
    now = time.perf_counter()
    took, self.last = now - self.last, now
    self.seconds.setdefault(self.kinds[self.count], []).append(took)
    self.count += 1
    elapsed, rest_kinds = now - self.start, self.kinds[self.count :]
    known = all(k in self.seconds for k in rest_kinds)
    left_s = sum(statistics.fmean(self.seconds[k]) for k in rest_kinds) if known else math.nan
    rest = f", about {left_s:.0f} s left" if rest_kinds and math.isfinite(left_s) else ""
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
