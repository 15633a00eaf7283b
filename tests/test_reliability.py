"""Reliability (docs/RELIABILITY.md): reproducible runs, crash-safe resume, numerical faults, bad input.

The kill tests start the real command (`tests/fault_harness.py`, which is `experiments.remember` with
fault hooks) as a subprocess, kill it at chosen points and restart it in the same workdir; the final
parameters must equal, bit for bit, those of an uninterrupted run made in this process. The ones that
take minutes are marked `slow` (run them with `pytest --run-slow tests/test_reliability.py`).
"""

from __future__ import annotations

import collections
import contextlib
import glob
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import chex
import fault_harness
import hypothesis
import jax
import numpy as np
import pytest
from hypothesis import strategies as st

from experiments import remember as remember_cmd
from learned_rules import (
  checkpointing,
  evaluation,
  files,
  gradient_estimators,
  meta_train,
  metrics,
  network,
  tasks,
  unroll,
)
from learned_rules import config as config_lib
from learned_rules.configs import remember

TINY = "--config=learned_rules/configs/remember.py:tiny"
NO_TWIN = "--config.baseline_synapses_off=False"  # train the learned rule only: half the time


def _describe(proc) -> str:
  return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


def _final_state(workdir: str):
  _, _, state = meta_train.load_run(workdir)
  return state


def _train_records(workdir: str) -> list[dict]:
  return [r for r in metrics.read_metrics(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory):
  """`:tiny` meta-trained twice from scratch, in two fresh workdirs, in this process (the second
  not evaluated: evaluation only reads the final state, which the tests compare)."""
  root = tmp_path_factory.mktemp("clean")
  cfg = remember.get_config("tiny")
  workdirs = [str(root / name) for name in ("a", "b")]
  results = [meta_train.train_and_evaluate(cfg, w, evaluate=(w == workdirs[0])) for w in workdirs]
  return cfg, workdirs, results


# --- 1. Reproducibility ---------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_bits(clean_runs):
  _, (a, b), (result_a, result_b) = clean_runs
  chex.assert_trees_all_equal(_final_state(a), _final_state(b))  # theta, optimizer state, counts
  assert _train_records(a) == _train_records(b)  # every logged loss, accuracy and gradient norm
  assert result_a["meta_steps"] == result_b["meta_steps"] == 4
  for workdir in (a, b):
    with open(os.path.join(workdir, "config.json")) as f:
      env = json.load(f)["environment"]
    assert {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "device_kind", "backend"} <= set(env)
    assert env["jax"] == jax.__version__ and env["device_kind"] == jax.devices()[0].device_kind


def test_a_resumed_run_warns_when_the_environment_changed(clean_runs, tmp_path, monkeypatch, caplog):
  cfg, (a, _), _ = clean_runs
  workdir = str(tmp_path / "run")
  shutil.copytree(a, workdir)
  real = checkpointing.environment()
  monkeypatch.setattr(checkpointing, "environment", lambda: {**real, "jax": "9.9.9", "device_kind": "TPU v9"})
  with caplog.at_level("WARNING"):  # resumes the finished run: restores, trains no step
    meta_train.train_and_evaluate(cfg, workdir, evaluate=False)
  warnings = [r.getMessage() for r in caplog.records if "another environment" in r.getMessage()]
  assert len(warnings) == 1, caplog.text
  assert (
    f"jax: {real['jax']} -> 9.9.9" in warnings[0]
    and f"device_kind: {real['device_kind']} -> TPU v9" in warnings[0]
  )
  assert "flax" not in warnings[0]  # only what changed
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["environment"]["jax"] == "9.9.9"  # config.json records the latest invocation's


# --- 2. Kill and resume ---------------------------------------------------------------------------


def _truncate_arrays(step_dir: str) -> int:
  """Cuts every array data file of a checkpoint step to half its length; returns how many."""
  files = [
    p for p in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True) if os.path.isfile(p)
  ]
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  return len(files)


# A failed orbax restore leaves a callback on its closed event loop; Python reports it when collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_and_half_written_checkpoints_are_never_used(clean_runs, tmp_path, caplog):
  """The newest finished checkpoint (step 4) truncated, and a newer half-written one (step 6: what a
  kill inside a save leaves, its temporary directory never renamed; the subprocess test below makes a
  real one): the half-written one is not listed, the damaged one is reported and step 2 is used."""
  cfg, (a, _), _ = clean_runs
  workdir = str(tmp_path / "run")
  shutil.copytree(a, workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  shutil.copytree(os.path.join(checkpoints, "4"), os.path.join(checkpoints, "6.orbax-checkpoint-tmp"))
  assert _truncate_arrays(os.path.join(checkpoints, "4")) > 0
  assert _steps(workdir) == [2, 4]
  # A reader falls back, and says why, without touching the workdir.
  with caplog.at_level("WARNING"):
    assert int(_final_state(workdir).step) == 2
  assert "step 4 is damaged" in caplog.text and "falling back" in caplog.text
  assert os.path.isdir(os.path.join(checkpoints, "4"))
  # The trainer sets the damaged step aside, retrains from step 2 and ends with the same bits.
  caplog.clear()
  with caplog.at_level("INFO"):
    assert meta_train.train_and_evaluate(cfg, workdir, evaluate=False)["meta_steps"] == 4
  assert "resumed from step 2" in caplog.text
  assert [d.split("-")[0] for d in os.listdir(os.path.join(workdir, checkpointing.DAMAGED_DIR))] == ["4"]
  assert sorted(os.listdir(checkpoints)) == ["2", "4"]  # the leftover removed, step 4 saved anew
  chex.assert_trees_all_equal(_final_state(workdir), _final_state(a))
  # With every checkpoint damaged there is nothing to fall back to: an error, not a silent restart.
  for step in ("2", "4"):
    _truncate_arrays(os.path.join(checkpoints, step))
  with pytest.raises(checkpointing.DamagedCheckpointError, match="every checkpoint"):
    meta_train.train_and_evaluate(cfg, workdir, evaluate=False)


def test_a_checkpoint_of_an_older_state_layout_is_refused(clean_runs, tmp_path):
  """A train state from before the non-finite counts existed: refused, naming what is missing."""
  cfg, (a, _), _ = clean_runs
  state = _final_state(a)
  old = {"step": state.step, "theta": state.theta, "opt_state": state.opt_state, "carry": None}
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(4, old, cfg)
  ckpt.close()
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="nonfinite_steps: missing") as info:
    meta_train.train_and_evaluate(cfg, str(tmp_path))
  assert "another version of learned_rules" in str(info.value)
  assert not os.path.exists(tmp_path / "config.json")  # refused before anything was written


def _start(workdir: str, fault_dir: str, faults: dict, *flags: str) -> subprocess.Popen:
  os.makedirs(fault_dir, exist_ok=True)
  log = open(os.path.join(fault_dir, "log"), "w")  # noqa: SIM115  (closed by _finish)
  harness = os.path.join(os.path.dirname(__file__), "fault_harness.py")
  return subprocess.Popen(
    [sys.executable, harness, TINY, NO_TWIN, f"--workdir={workdir}", *flags],
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    env={**os.environ, "JAX_PLATFORMS": "cpu", "FAULT_DIR": fault_dir, **faults},
    stdout=log,
    stderr=subprocess.STDOUT,
  )


def _log(fault_dir: str) -> str:
  with open(os.path.join(fault_dir, "log")) as f:
    return f.read()


def _wait_paused(proc: subprocess.Popen, fault_dir: str, timeout: float = 300) -> str:
  paused, deadline = os.path.join(fault_dir, "paused"), time.monotonic() + timeout
  while not os.path.exists(paused):
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      raise AssertionError(f"exit {proc.wait()} before pausing:\n{_log(fault_dir)[-3000:]}")
    time.sleep(0.05)
  time.sleep(0.05)  # the file is written in one go, but let it land
  with open(paused) as f:
    return f.read()


def _steps(workdir: str) -> list[int]:
  reader = checkpointing.Checkpointer(workdir, create=False)
  try:
    return reader.all_steps()
  finally:
    reader.close()


def test_sigkill_while_a_checkpoint_is_written_loses_nothing(clean_runs, tmp_path):
  """The command killed inside the save of step 4 (every file written into the step's temporary
  directory, the rename that commits it not done): the half-written step is never listed, and the
  restarted run resumes from step 2 and ends with an uninterrupted run's bits."""
  cfg, (reference, _), _ = clean_runs
  workdir, fault_dir = str(tmp_path / "run"), str(tmp_path / "fault")
  proc = _start(workdir, fault_dir, {"FAULT_PAUSE_IN_SAVE": "4"})
  assert "saving step 4" in _wait_paused(proc, fault_dir)
  assert glob.glob(os.path.join(workdir, "checkpoints", "4.orbax-checkpoint-tmp*"))
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  assert _steps(workdir) == [2]
  # Restarted here (the slow test below restarts the command itself), to the end.
  assert meta_train.train_and_evaluate(cfg, workdir, evaluate=False)["meta_steps"] == 4
  assert not glob.glob(os.path.join(workdir, "checkpoints", "*tmp*"))  # the leftover was removed
  chex.assert_trees_all_equal(_final_state(workdir), _final_state(reference))


def test_sigterm_saves_a_checkpoint_then_stops(clean_runs, tmp_path, monkeypatch):
  """Preemption: SIGTERM (sent to this process after meta step 3, between checkpoints) makes the run
  save step 3 and stop with `Preempted`; rerun, it resumes from step 3 and ends with the same bits."""
  cfg, (reference, _), _ = clean_runs
  make = meta_train.make_run_meta_step

  def make_signalling(*args, **kwargs):
    meta_step = make(*args, **kwargs)

    def step(state, topo):
      state, step_metrics = meta_step(state, topo)
      if int(state.step) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      return state, step_metrics

    return step

  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))  # a run at step 2
  monkeypatch.setattr(meta_train, "make_run_meta_step", make_signalling)
  handler = signal.getsignal(signal.SIGTERM)
  with pytest.raises(meta_train.Preempted, match="after step 3"):
    meta_train.train_and_evaluate(cfg, workdir, evaluate=False)
  assert _steps(workdir) == [2, 3]
  assert signal.getsignal(signal.SIGTERM) == handler  # the run's own handler is gone again
  monkeypatch.undo()
  assert meta_train.train_and_evaluate(cfg, workdir, evaluate=False)["meta_steps"] == 4
  chex.assert_trees_all_equal(_final_state(workdir), _final_state(reference))


@pytest.mark.slow
def test_the_command_survives_sigkill_in_a_save_and_sigterm(clean_runs, run_module, tmp_path):
  """The command itself, restarted each time: SIGKILL while step 4 is being saved, SIGTERM after
  step 3 (exit status 143, step 3 saved), then a run to the end: an uninterrupted run's bits."""
  _, (reference, _), _ = clean_runs
  workdir = str(tmp_path / "run")
  proc = _start(workdir, str(tmp_path / "kill"), {"FAULT_PAUSE_IN_SAVE": "4"})
  assert "saving step 4" in _wait_paused(proc, str(tmp_path / "kill"))
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  fault_dir = str(tmp_path / "term")
  proc = _start(workdir, fault_dir, {"FAULT_PAUSE_AFTER_STEP": "3"})
  _wait_paused(proc, fault_dir)
  proc.send_signal(signal.SIGTERM)
  open(os.path.join(fault_dir, "resume"), "w").close()
  assert proc.wait(timeout=120) == 128 + signal.SIGTERM, _log(fault_dir)[-3000:]
  log = _log(fault_dir)
  assert "resumed from step 2" in log and "stopped: stopped by SIGTERM after step 3" in log
  assert _steps(workdir) == [2, 3]
  proc = run_module("experiments.remember", TINY, NO_TWIN, f"--workdir={workdir}")
  assert proc.returncode == 0, _describe(proc)
  assert "resumed from step 3" in proc.stderr
  chex.assert_trees_all_equal(_final_state(workdir), _final_state(reference))


@pytest.mark.slow
def test_the_command_stops_on_nonfinite_steps_with_exit_status_1(tmp_path):
  fault_dir = str(tmp_path / "nan")
  proc = _start(
    str(tmp_path / "run"), fault_dir, {"FAULT_NAN_STEPS": "3"}, "--config.train.max_nonfinite_steps=1"
  )
  assert proc.wait(timeout=300) == 1, _log(fault_dir)[-3000:]
  errors = [line for line in _log(fault_dir).splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith("error: step 3: 1 meta steps in a row"), errors
  assert _steps(str(tmp_path / "run")) == [2]


def _logged_steps(workdir: str) -> list[int]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["step"] for line in f if line.endswith("\n") and '"loss"' in line]


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_beyond_the_last_checkpoint(tmp_path):
  """24 meta steps, a checkpoint every 3, a log record every step. Killed after step 4 (between
  checkpoints), then five times more, each at a random moment (0 to 0.3 s) after a random meta step
  has been logged (so sometimes within a save), then run to the end: every restart resumes from the
  last checkpoint, and the end is bit-exact."""
  flags = ("--config.train.num_steps=24", "--config.train.checkpoint_every=3", "--config.train.log_every=1")
  cfg = remember.get_config("tiny")
  cfg.train.num_steps, cfg.train.checkpoint_every, cfg.train.log_every = 24, 3, 1
  meta_train.train_and_evaluate(cfg, str(tmp_path / "reference"), evaluate=False)
  workdir = str(tmp_path / "run")
  proc = _start(workdir, str(tmp_path / "mid"), {"FAULT_PAUSE_AFTER_STEP": "4"}, *flags)
  _wait_paused(proc, str(tmp_path / "mid"))
  proc.kill()
  proc.wait()
  assert _steps(workdir)[-1] == 3  # lost: step 4 only, the work since the last checkpoint
  rng, kills = random.Random(0), []
  for attempt in range(5):
    resume_from = _steps(workdir)[-1]
    if resume_from >= 23:
      break
    target, delay = rng.randint(resume_from + 1, min(resume_from + 7, 23)), rng.uniform(0.0, 0.3)
    seen = len(_logged_steps(workdir))
    proc = _start(workdir, str(tmp_path / f"random{attempt}"), {"FAULT_STEP_SECONDS": "0.3"}, *flags)
    while not [s for s in _logged_steps(workdir)[seen:] if s >= target] and proc.poll() is None:
      time.sleep(0.01)
    time.sleep(delay)
    proc.kill()
    proc.wait()
    logged = _logged_steps(workdir)[seen:]
    kills.append(
      dict(resumed=resume_from, target=target, killed_after=max(logged, default=None), delay=round(delay, 3))
    )
    kills[-1]["checkpoints"] = _steps(workdir)
    assert logged and logged[0] == resume_from + 1, kills  # each restart resumed from its last checkpoint
  proc = _start(workdir, str(tmp_path / "last"), {}, *flags)
  assert proc.wait(timeout=300) == 0, _log(str(tmp_path / "last"))[-3000:]
  print("random kills:", *kills, sep="\n  ")
  chex.assert_trees_all_equal(_final_state(workdir), _final_state(str(tmp_path / "reference")))


# --- 3. Numerical faults --------------------------------------------------------------------------


def _poisoned_config(limit: int):
  cfg = remember.get_config("tiny")
  cfg.train.num_steps, cfg.train.log_every, cfg.train.checkpoint_every = 6, 1, 2
  cfg.train.max_to_keep, cfg.train.max_nonfinite_steps = 3, limit
  return cfg


@pytest.fixture
def nan_topology_at_steps_3_and_4(monkeypatch):
  """Meta steps 3 and 4 get a topology whose fan-in is NaN: the run's own jitted step (the same
  compiled program as a clean run's, so nothing is compiled again) computes a NaN loss and NaN
  gradients from it."""
  make = meta_train.make_run_meta_step

  def make_poisoned(*args, **kwargs):
    meta_step = make(*args, **kwargs)

    def step(state, topos):
      if int(state.step) + 1 in (3, 4):
        topos = tuple(topo.replace(fan_in=topo.fan_in * np.float32(np.nan)) for topo in topos)
      return meta_step(state, topos)

    return step

  monkeypatch.setattr(meta_train, "make_run_meta_step", make_poisoned)


def _checkpoints_of(cfg, workdir: str, steps) -> dict:
  ckpt = checkpointing.Checkpointer(workdir, create=False)
  topos, meta_batch, optimizer = meta_train.setup_meta_batch(cfg)
  like = meta_train.initial_train_state(topos, meta_batch, optimizer, cfg.seed)
  try:
    return {step: ckpt.restore(like, step) for step in steps}
  finally:
    ckpt.close()


def test_nonfinite_steps_are_skipped_counted_and_logged(nan_topology_at_steps_3_and_4, tmp_path, caplog):
  cfg = _poisoned_config(limit=3)
  with caplog.at_level("WARNING"):
    meta_train.train_and_evaluate(cfg, str(tmp_path), evaluate=False)
  at = _checkpoints_of(cfg, str(tmp_path), (2, 4, 6))
  # Steps 3 and 4 changed nothing but the step and the counts; training went on after them.
  chex.assert_trees_all_equal((at[4].theta, at[4].opt_state), (at[2].theta, at[2].opt_state))
  assert not np.array_equal(at[6].theta["body"]["w1"], at[4].theta["body"]["w1"])
  assert (int(at[4].nonfinite_steps), int(at[4].nonfinite_streak)) == (2, 2)
  assert (int(at[6].nonfinite_steps), int(at[6].nonfinite_streak)) == (2, 0)
  log = {r["step"]: r for r in _train_records(str(tmp_path))}
  assert [log[s]["nonfinite"] for s in range(1, 7)] == [0, 0, 1, 1, 0, 0]
  assert [log[s]["nonfinite_streak"] for s in range(1, 7)] == [0, 0, 1, 2, 0, 0]
  assert np.isnan(log[3]["loss"]) and np.isfinite(log[5]["loss"])
  assert "step 3: non-finite loss or gradient; update skipped (1 in a row, 1 in all)" in caplog.text
  assert "step 4: non-finite loss or gradient; update skipped (2 in a row, 2 in all)" in caplog.text


def test_too_many_nonfinite_steps_in_a_row_stop_the_run(nan_topology_at_steps_3_and_4, tmp_path):
  cfg = _poisoned_config(limit=2)
  with pytest.raises(meta_train.NonFiniteError, match=r"^step 4: 2 meta steps in a row \(steps 3 to 4\)"):
    meta_train.train_and_evaluate(cfg, str(tmp_path), evaluate=False)
  assert _steps(str(tmp_path)) == [2]  # nothing saved after the faults began
  state = _final_state(str(tmp_path))  # and the last good checkpoint restores
  assert int(state.step) == 2 and int(state.nonfinite_steps) == 0
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.theta))


@pytest.mark.slow
def test_a_nan_gradient_alone_and_a_nan_loss_alone_are_each_caught(monkeypatch, tmp_path):
  """`fault_harness.poison` (a new program: slow to compile): step 3 NaN gradients with a finite loss,
  step 4 a NaN loss with finite gradients; both skipped."""
  poisoned = fault_harness.poison(meta_train.objective_and_grads, grad_steps=[3], loss_steps=[4])
  monkeypatch.setattr(meta_train, "objective_and_grads", poisoned)
  cfg = _poisoned_config(limit=3)
  meta_train.train_and_evaluate(cfg, str(tmp_path), evaluate=False)
  at = _checkpoints_of(cfg, str(tmp_path), (2, 4))
  chex.assert_trees_all_equal((at[4].theta, at[4].opt_state), (at[2].theta, at[2].opt_state))
  log = {r["step"]: r for r in _train_records(str(tmp_path))}
  assert np.isnan(log[3]["grad_norm"]) and np.isfinite(log[3]["loss"]) and log[3]["nonfinite"] == 1
  assert np.isnan(log[4]["loss"]) and np.isfinite(log[4]["grad_norm"]) and log[4]["nonfinite"] == 1


def test_long_unrolls_of_a_trained_tiny_rule_stay_finite(clean_runs):
  cfg, (workdir, _), (result, _) = clean_runs
  topo = config_lib.make_topology(cfg.net)
  problem = config_lib.problem(cfg, topo)
  assert result["horizon_steps"] == meta_train.STATE_HORIZON * problem.task.episode_steps
  assert np.isfinite(result["max_abs_body"]) and np.isfinite(result["max_abs_synapse"])
  assert 0 < result["max_abs_body"] < 1e3 and 0 < result["max_abs_synapse"] < 1e3
  # The check can fail: a rule whose state blows up reports it.
  theta = jax.device_get(_final_state(workdir).theta)
  theta["init_synapse"] = theta["init_synapse"] * np.float32(np.inf)
  key = jax.random.fold_in(evaluation.eval_key(cfg.seed), meta_train.STATE_HORIZON)
  blown = evaluation.state_bounds(theta, topo, problem, key, cfg.eval.num_episodes, meta_train.STATE_HORIZON)
  assert not np.isfinite(blown["max_abs_synapse"])


# --- 4. Bad input ---------------------------------------------------------------------------------

NOT_A_NUMBER = st.one_of(st.text(max_size=4), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
NOT_AN_INT = st.one_of(NOT_A_NUMBER, st.floats(allow_nan=True, allow_infinity=True))


def _int_below(minimum: int):
  return st.one_of(st.integers(max_value=minimum - 1, min_value=minimum - 10**9), NOT_AN_INT)


def _float_outside(low: float, high: float, low_open: bool, high_open: bool):
  def inside(v):
    return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

  return st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not inside(v)), NOT_A_NUMBER
  )


def _not_one_of(choices):
  return st.one_of(st.text(max_size=12).filter(lambda v: v not in choices), st.integers(), st.none())


NOT_A_BOOL = st.one_of(st.integers(), st.text(max_size=4), st.none(), st.floats())
NOT_A_SIZE_LIST = st.one_of(
  st.integers(),
  st.none(),
  st.lists(st.integers(max_value=0), min_size=1, max_size=3),
  st.lists(st.floats(), min_size=1, max_size=3),
)

# Every field `config.validate` reads: (variant in which it is read, strategy of its invalid values).
INVALID_VALUES = {
  "seed": ("", _int_below(0)),
  "baseline_synapses_off": ("", NOT_A_BOOL),
  "net.topology": ("", _not_one_of(network.TOPOLOGIES)),
  "net.num_inputs": ("", _int_below(1)),
  "net.num_outputs": ("", _int_below(1)),
  "net.num_hidden": ("", _int_below(0)),
  "net.density": ("sparse", _float_outside(0.0, 1.0, True, False)),
  "net.mask_seed": ("sparse", _int_below(0)),
  "net.hidden_layers": ("layered", NOT_A_SIZE_LIST),
  "net.init_noise": ("", _float_outside(0.0, float("inf"), False, True)),
  "net.random_input_synapses": ("", _float_outside(0.0, float("inf"), False, True)),
  "net.self_connections": ("", NOT_A_BOOL),
  "net.synapse_updates": ("", NOT_A_BOOL),
  "net.body_recurrence": ("", NOT_A_BOOL),
  "net.trained_synapses": ("", NOT_A_BOOL),
  "rule.body_dim": ("", _int_below(1)),
  "rule.synapse_dim": ("", _int_below(1)),
  "rule.act_dim": ("", st.one_of(_int_below(1), st.integers(min_value=9, max_value=10**6))),  # > body_dim 8
  "rule.emb_dim": ("", _int_below(1)),
  "rule.hidden": ("", _int_below(1)),
  "rule.init_decay": ("", _float_outside(0.0, 1.0, True, True)),
  "rule.init_rate": ("", _float_outside(0.0, 1.0, True, True)),
  "rule.bilinear": ("", NOT_A_BOOL),
  "rule.message_norm": ("", _not_one_of(network.MESSAGE_NORMS)),
  "rule.fast_synapse": ("", NOT_A_BOOL),
  "rule.reference_fan_in": ("", _int_below(0)),
  "rule.scale_rate": ("", NOT_A_BOOL),
  "rule.rate_power": ("", _float_outside(0.0, 2.0, False, False)),
  "rule.decay_power": ("", _float_outside(0.0, 2.0, False, False)),
  "rule.center_synapses": ("", NOT_A_BOOL),
  "rule.error_input": ("", NOT_A_BOOL),
  "task.protocol": ("", _not_one_of(tasks.PROTOCOLS)),
  "task.num_snippets": ("", _int_below(1)),
  "task.present_steps": ("", _int_below(1)),
  "task.gap_steps": ("", _int_below(0)),
  "task.cycles": ("", _int_below(1)),
  "task.delay_steps": ("", _int_below(0)),
  "task.query_steps": ("", _int_below(1)),
  "task.num_queries": ("", st.one_of(_int_below(0), st.integers(min_value=9, max_value=10**6))),  # > K = 8
  "task.cue_corruption": ("", _float_outside(0.0, 1.0, False, True)),
  "task.max_lag": ("streaming", _int_below(1)),
  "task.window": ("streaming", _int_below(1)),
  "task.score_reachable": ("", NOT_A_BOOL),
  "task.hold_for_latency": ("", NOT_A_BOOL),
  # Invalid from 10 on: at least every variant's task.query_steps.
  "task.first_scored_step": ("", st.one_of(_int_below(0), st.integers(min_value=10, max_value=10**6))),
  "train.batch_size": ("", _int_below(1)),
  "train.num_steps": ("", _int_below(0)),
  "train.learning_rate": ("", _float_outside(0.0, float("inf"), True, True)),
  "train.clip_norm": ("", _float_outside(0.0, float("inf"), True, True)),
  "train.loss": ("", _not_one_of(config_lib.LOSSES)),
  "train.log_every": ("", _int_below(1)),
  "train.checkpoint_every": ("", _int_below(1)),
  "train.max_to_keep": ("", _int_below(1)),
  "train.remat": ("", _not_one_of(unroll.REMAT_POLICIES)),
  "train.max_nonfinite_steps": ("", _int_below(1)),
  "train.decay_steps": ("", _int_below(0)),
  "train.init_rule": ("", st.one_of(st.integers(), st.booleans(), st.just(["hetero"]))),
  "train.error_init": ("", _float_outside(0.0, float("inf"), False, True)),
  "train.estimator.kind": ("", _not_one_of(gradient_estimators.KINDS)),
  "train.estimator.window": ("", _int_below(0)),
  "train.estimator.horizon": ("", _int_below(0)),
  "train.estimator.population": ("", _int_below(0)),
  "train.estimator.std": ("", _float_outside(0.0, float("inf"), False, True)),
  "train.mixture": (
    "",
    st.one_of(
      st.integers(),
      st.sampled_from(["net.nope=1", "net.num_hidden=-1", ",seed=3", "noequals", "rule.hidden=3"]).map(
        lambda bad: ("", bad)
      ),
    ),
  ),
  "eval.num_episodes": ("", _int_below(1)),
  "eval.k_values": ("", st.one_of(NOT_A_SIZE_LIST, st.just([]))),
  "mesh.batch": ("", _int_below(0)),
  "mesh.neurons": ("", _int_below(1)),
}


@st.composite
def invalid_configs(draw):
  """`(field, config)`: a valid config (as a plain dict, so any value fits) with one field made invalid."""
  field = draw(st.sampled_from(sorted(INVALID_VALUES)))
  variant, values = INVALID_VALUES[field]
  cfg = remember.get_config(variant).to_dict()
  *parents, name = field.split(".")
  node = cfg
  for part in parents:
    node = node[part]
  node[name] = draw(values)
  return field, cfg


@contextlib.contextmanager
def _jax_events():
  """The JAX compile-time events (tracing, lowering, compiling) recorded within `with`."""
  events = collections.Counter()
  listener = lambda name, *_, **__: events.update([name])  # noqa: E731
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_the_invalid_values_table_covers_every_validated_field():
  """Every leaf of every variant's config has invalid values drawn for it above, or is not validated."""
  not_validated: set[str] = set()  # none: every field of the config is validated
  fields = set()
  for variant in ("", "sparse", "layered", "streaming"):
    flat = checkpointing._flatten(remember.get_config(variant).to_dict())
    fields |= set(flat)
  assert fields - not_validated == set(INVALID_VALUES)


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(invalid_configs())
def test_any_invalid_config_fails_before_compiling_or_writing_naming_its_field(example):
  field, cfg = example
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(cfg)
  assert info.value.field == field and str(info.value).startswith(f"{field}: ")
  # The command's own path: one `error:` line, exit status 2, no workdir, nothing traced or compiled.
  workdir = os.path.join(tempfile.mkdtemp(prefix="invalid_cfg_"), "run")
  stderr = io.StringIO()
  with _jax_events() as events, contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_info:
    remember_cmd.run_or_exit(cfg, workdir)
  assert exit_info.value.code == 2
  assert stderr.getvalue().startswith(f"error: {field}: ") and stderr.getvalue().count("\n") == 1
  assert not os.path.exists(workdir)
  assert not events, events
  os.rmdir(os.path.dirname(workdir))


def test_an_unwritable_workdir_is_reported_before_training(make_cfg, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(checkpointing.WorkdirError, match="cannot create it"):
    meta_train.train_and_evaluate(make_cfg("tiny"), str(blocker / "run"))
  if os.geteuid() != 0:  # root writes through permissions
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o500)
    with pytest.raises(checkpointing.WorkdirError, match="not writable"):
      meta_train.train_and_evaluate(make_cfg("tiny"), str(readonly))
    assert os.listdir(readonly) == []


def test_a_full_workdir_is_reported_before_training(make_cfg, tmp_path, monkeypatch):
  usage = collections.namedtuple("usage", "total used free")
  monkeypatch.setattr(files.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 5000, 5000))
  with pytest.raises(checkpointing.WorkdirError, match=r"MiB free, the run's checkpoints need about"):
    meta_train.train_and_evaluate(make_cfg("tiny"), str(tmp_path / "run"))
  assert os.listdir(tmp_path / "run") == []  # the directory only: no checkpoints, config or metrics


def test_a_save_that_fails_for_lack_of_space_is_reported(tmp_path, make_cfg, monkeypatch):
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  state = {"w": jax.numpy.ones((3,))}
  ckpt.save(1, state, make_cfg("tiny"))

  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(ckpt._manager, "save", full)
  with pytest.raises(
    checkpointing.WorkdirError, match=r"could not save step 2 .* last checkpoint \(step 1\) is intact"
  ):
    ckpt.save(2, state, make_cfg("tiny"))
  assert ckpt.all_steps() == [1]
  ckpt.close()
