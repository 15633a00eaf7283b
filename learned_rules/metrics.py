"""Metrics output: `metrics.jsonl` in the workdir, absl logging, and a live progress line."""

from __future__ import annotations

import json
import logging as std_logging
import os
import re
import sys
import time

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


class _DropLibraryInfo:
  """absl handler filter: drops INFO records from the given libraries (orbax logs every save)."""

  def __init__(self, libraries: tuple[str, ...]):
    self.markers = tuple(f"{os.sep}{lib}{os.sep}" for lib in libraries)

  def filter(self, record) -> bool:
    return record.levelno >= std_logging.WARNING or not any(m in record.pathname for m in self.markers)


def quiet_library_logs(libraries: tuple[str, ...] = ("orbax", "jax")) -> None:
  """Keeps the experiment logs readable: library INFO chatter off, warnings and errors kept."""
  logging.get_absl_handler().addFilter(_DropLibraryInfo(libraries))
