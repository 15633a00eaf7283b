"""Tests of `learned_rules.metrics`: metrics.jsonl and the progress line."""

from __future__ import annotations

import io

import numpy as np
import pytest

from learned_rules import metrics


def test_metrics_writer_appends_json_records(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  writer.write(2, loss=np.float32(0.5), bit_accuracy=0.75)
  writer.write(4, loss=0.25)
  records = metrics.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert records == [{"step": 2, "loss": 0.5, "bit_accuracy": 0.75}, {"step": 4, "loss": 0.25}]
  assert all(type(v) is float for r in records for k, v in r.items() if k != "step")
  metrics.MetricsWriter(str(tmp_path)).write(6, loss=1.0)  # a resumed run appends
  assert [r["step"] for r in metrics.read_metrics(str(tmp_path / "metrics.jsonl"))] == [2, 4, 6]


class _Terminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_progress_line_on_a_terminal():
  stream = _Terminal()
  progress = metrics.Progress(total_steps=10, first_step=2, label="run: ", stream=stream)
  line = progress.update(4, loss=0.1234, accuracy=0.875)
  assert line.startswith("run: step 4/10")
  assert "loss 0.1234" in line and "recall 0.875" in line
  progress.close()
  assert stream.getvalue().startswith("\r" + line) and stream.getvalue().endswith("\n")


def test_progress_is_not_rewritten_in_place_off_a_terminal():
  stream = io.StringIO()
  progress = metrics.Progress(total_steps=3, stream=stream)
  line = progress.update(3, loss=1.0, accuracy=0.5)
  progress.close()
  assert "step 3/3" in line
  assert stream.getvalue() == ""  # logged instead, so log files hold no carriage returns


def test_study_progress_estimates_time_left_once_every_kind_still_to_run_has_been_timed(info_lines):
  with info_lines() as lines:
    progress = metrics.StudyProgress("study", 4, kinds=["tune", "run", "tune", "run"])
    for unit in ("t0", "r0", "t1", "r1"):
      progress.done(unit)
  assert [line.split(":")[0] for line in lines] == ["study 1/4", "study 2/4", "study 3/4", "study 4/4"]
  assert ["s left" in line for line in lines] == [False, True, True, False]  # "run" untimed after 1
  with pytest.raises(ValueError, match="3 kinds for 4 units"):
    metrics.StudyProgress("study", 4, kinds=["a", "b", "c"])
