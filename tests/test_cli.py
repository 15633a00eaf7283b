"""End-to-end tests of the command lines `experiments.remember` and `experiments.evaluate`.

Each test runs the real entry point as a subprocess from the repository root, on CPU.
"""

from __future__ import annotations

import json
import os
import subprocess

import ml_collections
import pytest

from learned_rules import baselines, metrics, tasks
from learned_rules import config as config_lib
from learned_rules import evaluation as evaluate_lib
from learned_rules.configs import remember

TINY = "--config=learned_rules/configs/remember.py:tiny"


def _describe(proc: subprocess.CompletedProcess) -> str:
  return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


def _eval_record(run_dir: str) -> dict:
  """The held-out evaluation a run logs last in its metrics.jsonl."""
  record = metrics.read_metrics(os.path.join(run_dir, "metrics.jsonl"))[-1]
  assert "eval_bit_accuracy" in record, record
  return record


def _saved_config(run_dir: str):
  """The config a run saved beside its checkpoints (`config.json`)."""
  with open(os.path.join(run_dir, "config.json")) as f:
    return ml_collections.ConfigDict(json.load(f)["config"])


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
  off_dir = os.path.join(workdir, "synapses_off")
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
  # The summary's numbers are the held-out evaluations each run logged last, as the table prints them.
  for key, run_dir in (("bit_accuracy", workdir), ("bit_accuracy_synapses_off", off_dir)):
    assert summary[key] == _eval_record(run_dir)["eval_bit_accuracy"], key
    assert f"{summary[key]:.3f}" in proc.stdout
  assert summary["perfect_recall"] == _eval_record(workdir)["eval_perfect_recall"]
  assert summary["chance_bit_accuracy"] == 0.5
  assert summary["num_snippets"] == 2 and summary["meta_steps"] == 4  # the `:tiny` config
  assert summary["wall_seconds"] > 0
  assert f"Held-out recall ({summary['task']})" in proc.stdout  # what was measured, as the table says
  # Both runs (learned rule and its synapses-off twin) log their meta-training. A meta step's recall is
  # a mean over its scored steps and their bits, ties half a bit: whole counts of those, and a step not
  # recalled perfectly misses at least half a bit.
  cfg = remember.get_config("tiny")
  spec = config_lib.task_spec(cfg, config_lib.make_topology(cfg.net))
  steps = cfg.train.batch_size * spec.num_queries * int(tasks.query_score(spec).sum())
  half_bits = 2 * steps * spec.n_out
  assert summary["scored_query_steps"] == [spec.first_scored_query_step, spec.query_steps - 1]
  for run_dir in (workdir, off_dir):
    records = metrics.read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [2, 4]
    for r in train:
      p, bits = r["perfect_recall"], r["bit_accuracy"]
      assert p * steps == pytest.approx(round(p * steps), abs=1e-4), r
      assert bits * half_bits == pytest.approx(round(bits * half_bits), abs=1e-3), r
      assert p <= bits <= p + (1.0 - p) * (1.0 - 0.5 / spec.n_out), r
    assert os.path.isdir(os.path.join(run_dir, "checkpoints"))
  # The table of results goes to stdout.
  assert "learned rule" in proc.stdout and "synapse updates off" in proc.stdout


def test_evaluate_writes_recall_vs_k(tiny_run):
  workdir, _, proc = tiny_run
  assert proc is not None and proc.returncode == 0, _describe(proc)
  with open(os.path.join(workdir, "recall_vs_k.json")) as f:
    result = json.load(f)
  records = result["records"]
  assert [r["K"] for r in records] == [1, 2]
  assert result["meta_step"] == 4 and result["num_episodes"] == 4  # the `:tiny` config's
  # At the run's own K (2), the same theta on the same held-out episodes as the run's last evaluation,
  # by another program (all K in one, padded episodes): the same numbers.
  logged = _eval_record(workdir)
  for key in ("bit_accuracy", "perfect_recall", "loss"):
    assert records[1][key] == pytest.approx(logged[f"eval_{key}"], rel=1e-5, abs=1e-6), key
  assert result["capacity"] == {
    str(level): max([r["K"] for r in records if r["bit_accuracy"] >= level], default=0)
    for level in (0.99, 0.95)
  }
  for r in records:
    assert f"K={r['K']:>3}  bit accuracy {r['bit_accuracy']:.3f}" in proc.stdout
    assert f"key-blind floor {r['key_blind_bit_accuracy']:.3f}" in proc.stdout
  # The floor on the same episodes: exact at K = 1 (one stored value), and recomputed for K = 2.
  cfg = _saved_config(workdir)
  topo = config_lib.make_topology(cfg.net)
  spec = config_lib.problem(cfg, topo, num_snippets=2).task
  want = baselines.evaluate("key_blind", spec, evaluate_lib.eval_key(cfg.seed), result["num_episodes"])
  assert records[0]["key_blind_bit_accuracy"] == 1.0
  assert records[1]["key_blind_bit_accuracy"] == pytest.approx(want["bit_accuracy"], abs=1e-6)
  with open(os.path.join(workdir, "recall_vs_k.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
  "override,field",
  [
    ("--config.task.cue_corruption=1.5", "task.cue_corruption"),
    ("--config.net.topology=ring", "net.topology"),
    ("--config.train.learning_rate=-0.1", "train.learning_rate"),
    # A tuple field given twice would be joined, (1, 2), rather than replaced.
    ("--config.eval.k_values=(1,) --config.eval.k_values=(2,)", "--config.eval.k_values"),
  ],
)
def test_invalid_override_fails_fast_and_writes_nothing(run_module, tmp_path, override, field):
  workdir = str(tmp_path / "run")
  proc = run_module("experiments.remember", TINY, f"--workdir={workdir}", *override.split())
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
