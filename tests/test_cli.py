"""End-to-end tests of the command lines `experiments.remember` and `experiments.evaluate`.

Each test runs the real entry point as a subprocess from the repository root, on CPU.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from learned_rules import metrics

TINY = "--config=experiments/configs/remember.py:tiny"


def _describe(proc: subprocess.CompletedProcess) -> str:
  return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def tiny_run(run_module, tmp_path_factory):
  """`experiments.remember` on `:tiny`, then `experiments.evaluate` on its workdir."""
  workdir = str(tmp_path_factory.mktemp("cli") / "tiny")
  remember = run_module("experiments.remember", TINY, f"--workdir={workdir}")
  evaluate = None
  if remember.returncode == 0:
    evaluate = run_module("experiments.evaluate", f"--workdir={workdir}", "--k_values=1,2")
  return workdir, remember, evaluate


def test_remember_writes_summary_and_metrics(tiny_run):
  workdir, proc, _ = tiny_run
  assert proc.returncode == 0, _describe(proc)
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  required = {
    "bit_accuracy",
    "bit_accuracy_synapses_off",
    "chance_bit_accuracy",
    "num_snippets",
    "meta_steps",
    "wall_seconds",
  }
  assert required <= set(summary), sorted(summary)
  for key in ("bit_accuracy", "bit_accuracy_synapses_off"):
    assert 0.0 <= summary[key] <= 1.0
  assert summary["chance_bit_accuracy"] == 0.5
  assert summary["num_snippets"] == 2 and summary["meta_steps"] == 4  # the `:tiny` config
  assert summary["wall_seconds"] > 0
  # Both runs (learned rule and its synapses-off twin) log their meta-training.
  for run_dir in (workdir, os.path.join(workdir, "synapses_off")):
    records = metrics.read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [2, 4]
    assert all(0.0 <= r["bit_accuracy"] <= 1.0 for r in train)
    assert os.path.isdir(os.path.join(run_dir, "checkpoints"))
  # The table of results goes to stdout.
  assert "learned rule" in proc.stdout and "synapse updates off" in proc.stdout


def test_evaluate_writes_recall_vs_k(tiny_run):
  workdir, _, proc = tiny_run
  assert proc is not None and proc.returncode == 0, _describe(proc)
  with open(os.path.join(workdir, "recall_vs_k.json")) as f:
    result = json.load(f)
  assert [r["K"] for r in result["records"]] == [1, 2]
  for record in result["records"]:
    assert 0.0 <= record["bit_accuracy"] <= 1.0 and 0.0 <= record["perfect_recall"] <= 1.0
  assert result["meta_step"] == 4
  assert set(result["capacity"]) == {"0.99", "0.95"}
  assert all(cap in (0, 1, 2) for cap in result["capacity"].values())
  with open(os.path.join(workdir, "recall_vs_k.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
  "override,field",
  [
    ("--config.task.cue_corruption=1.5", "task.cue_corruption"),
    ("--config.net.topology=ring", "net.topology"),
    ("--config.train.learning_rate=-0.1", "train.learning_rate"),
  ],
)
def test_invalid_override_fails_fast_and_writes_nothing(run_module, tmp_path, override, field):
  workdir = str(tmp_path / "run")
  proc = run_module("experiments.remember", TINY, f"--workdir={workdir}", override)
  assert proc.returncode != 0, _describe(proc)
  assert "Traceback" not in proc.stderr, _describe(proc)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, _describe(proc)
  assert errors[0].startswith(f"error: {field}: "), errors
  assert not os.path.exists(workdir)


def test_evaluate_on_missing_workdir_fails_and_creates_nothing(run_module, tmp_path):
  workdir = str(tmp_path / "missing")
  proc = run_module("experiments.evaluate", f"--workdir={workdir}")
  assert proc.returncode != 0, _describe(proc)
  assert any(line.startswith("error: no checkpoint") for line in proc.stderr.splitlines())
  assert not os.path.exists(workdir)
