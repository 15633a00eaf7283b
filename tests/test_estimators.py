"""Tests of `learned_rules.gradient_estimators` and `experiments.estimators`: the tiny study end to end, full
back-propagation as the whole-window case of truncation, the reset schedule, and the ES steps.

Every test shares the estimators the tiny study compiles (`gradient_estimators.make_estimator` is cached)."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import estimators as study_lib
from learned_rules import config as config_lib
from learned_rules import gradient_estimators, meta_train, rules
from learned_rules.configs import estimators as estimator_configs


@pytest.fixture(scope="module")
def tiny():
  """`(study, specs by name, topo, problem, theta)` of the tiny study."""
  study = estimator_configs.get_config("tiny")
  topo, problem, _ = meta_train.setup(study.base)
  theta = rules.init_theta(meta_train.train_key(0), problem.rule)
  return study, {s.name: s for s in study_lib.specs(study)}, topo, problem, theta


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("estimators"))
  return workdir, study_lib.run(tiny[0], workdir, workdir)


def test_tiny_study_writes_curves_summary_and_figure(tiny, tiny_run):
  study, specs, *_ = tiny
  workdir, out = tiny_run
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert list(saved["results"]) == list(specs) == ["truncated_8", "full", "open_es", "pes_8"]
  for name, result in saved["results"].items():
    num_steps = study.estimator[name].num_steps
    assert [run["seed"] for run in result["runs"]] == list(study.seeds)
    for run in result["runs"]:
      curve = run["curve"]
      assert (
        [r["step"] for r in curve]
        == study_lib.eval_steps(num_steps, study.eval_points)
        == [0, num_steps // 2, num_steps]
      )
      for r in curve:  # a step not recalled perfectly misses at least half a bit of its n_out
        p, bits = r["perfect_recall"], r["bit_accuracy"]
        assert p <= bits <= p + (1.0 - p) * (1.0 - 0.5 / study.base.net.num_outputs), r
      assert np.all(np.diff([r["cpu_s"] for r in curve]) >= 0) and np.all(
        np.diff([r["wall_s"] for r in curve]) >= 0
      )
      assert curve[-1]["stream_steps"] == num_steps * specs[name].stream_steps(study.horizon)
    assert result["compile_s"] > 0
  # Every estimator starts from the same theta (per seed) and is evaluated on the same streams.
  for i in range(len(study.seeds)):
    starts = [result["runs"][i]["curve"][0] for result in saved["results"].values()]
    assert len({(r["loss"], r["bit_accuracy"], r["perfect_recall"]) for r in starts}) == 1, starts
  summary = saved["summary"]
  # The summary's final recall: the mean, min and max over seeds of the curves' last points.
  for name, result in saved["results"].items():
    final = [run["curve"][-1]["bit_accuracy"] for run in result["runs"]]
    row = summary["estimators"][name]
    assert row["final_bit_accuracy"] == pytest.approx(np.mean(final), abs=1e-9)
    assert (row["final_min"], row["final_max"]) == (min(final), max(final))
  assert summary["reference"] == "full"
  full = summary["estimators"]["full"]
  assert summary["reference_final_bit_accuracy"] == full["final_bit_accuracy"]
  assert full["reach_reference"]["step"] <= full["meta_steps"]
  assert out["summary"] == summary
  assert os.path.getsize(os.path.join(workdir, "estimators.png")) > 1000


def test_full_window_is_back_propagation_through_the_episode(tiny, trees_close):
  """Truncation with W = T restarts every stream and differentiates through all T steps and the initial
  states: the gradient of the whole-episode objective on the same streams."""
  study, _, topo, problem, theta = tiny
  horizon, batch, key = study.horizon, 2, jax.random.PRNGKey(3)
  whole = gradient_estimators.window_problem(problem, horizon)
  carry = gradient_estimators.initial_episode_carry(theta, topo, whole, jax.random.PRNGKey(4), batch, horizon)
  assert np.all(np.asarray(carry.window) == 0)

  @jax.jit
  def grads(theta):
    truncated = lambda th: gradient_estimators.truncated_objective(th, topo, whole, carry, key, horizon)[0]  # noqa: E731
    episode = lambda th: gradient_estimators.episode_objective(th, topo, problem, key, batch, horizon)[0]  # noqa: E731
    return jax.value_and_grad(truncated)(theta), jax.value_and_grad(episode)(theta)

  (loss_t, grad_t), (loss_e, grad_e) = grads(theta)
  np.testing.assert_allclose(loss_t, loss_e, rtol=1e-6)
  trees_close(grad_t, grad_e, rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(grad_e["init_body"]).sum()) > 0  # the initial states get a gradient too


def test_truncated_streams_restart_every_horizon_over_window_windows(tiny, tiny_run):
  study, specs, topo, problem, theta = tiny
  spec = specs["truncated_8"]
  n_windows = study.horizon // spec.window
  est = gradient_estimators.make_estimator(spec, problem, study.horizon)
  state = est.init(jax.random.PRNGKey(5), theta, topo)
  window = np.asarray(state.carry.window)
  np.testing.assert_array_equal(window, np.arange(spec.batch) % n_windows)  # staggered
  np.testing.assert_array_equal(np.asarray(state.carry.streams.position.t), window * spec.window)
  for _ in range(2 * n_windows):
    before = jax.device_get(state.carry)
    state, _ = est.step(state, topo)
    after = jax.device_get(state.carry)
    restarted = before.window == 0
    np.testing.assert_array_equal(after.window, (before.window + 1) % n_windows)
    expected_t = np.where(restarted, spec.window, before.streams.position.t + spec.window)
    np.testing.assert_array_equal(after.streams.position.t, expected_t)
    same_key = np.all(after.streams.position.key == before.streams.position.key, axis=-1)
    np.testing.assert_array_equal(same_key, ~restarted)  # a restarted stream is a new stream


@pytest.mark.parametrize("name", ["open_es", "pes_8"])
def test_es_step_moves_theta_and_keeps_its_shapes(tiny, tiny_run, name):
  study, specs, topo, problem, theta = tiny
  spec = specs[name]
  est = gradient_estimators.make_estimator(spec, problem, study.horizon)
  state = est.init(jax.random.PRNGKey(6), theta, topo)
  start = est.theta_of(state)
  assert jax.tree.structure(start) == jax.tree.structure(theta)
  np.testing.assert_allclose(
    jax.flatten_util.ravel_pytree(start)[0], jax.flatten_util.ravel_pytree(theta)[0], rtol=1e-6
  )
  state, metrics = est.step(state, topo)
  moved = est.theta_of(state)
  assert jax.tree.map(jnp.shape, moved) == jax.tree.map(jnp.shape, theta)
  delta = jax.flatten_util.ravel_pytree(jax.tree.map(jnp.subtract, moved, theta))[0]
  assert 0 < float(jnp.max(jnp.abs(delta))) <= 2 * spec.learning_rate  # Adam moves each by about lr
  assert np.isfinite(float(metrics["loss"]))
  if spec.kind == "pes":
    # Each member runs its own streams; evosax drops the accumulated perturbations exactly when the
    # streams restart (after T / W windows).
    assert state.streams.net_state.bodies.shape[:2] == (spec.population, spec.batch)
    for _ in range(study.horizon // spec.window - 1):
      assert float(jnp.abs(state.es_state.pert_accum).max()) > 0
      state, _ = est.step(state, topo)
    assert (
      float(jnp.abs(state.es_state.pert_accum).max()) == 0 and int(state.es_state.inner_step_counter) == 0
    )


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("estimators", "truncated_8,adjoint", "estimators"),
    ("estimator.truncated_8.window", 5, "window"),
    ("estimator.open_es.population", 3, "population"),
    ("estimator.full.kind", "sgd", "kind"),
  ],
)
def test_invalid_study_fails_before_anything_runs(tmp_path, field, value, match):
  study = estimator_configs.get_config("tiny")
  node, *parts = field.split(".")
  target = study
  if parts:
    target = study[node]
    for part in parts[:-1]:
      target = target[part]
    target[parts[-1]] = value
  else:
    study[node] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    study_lib.run(study, str(tmp_path / "out"), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_bad_flag_is_a_clear_error_and_quick_keeps_overrides(run_module):
  # --quick sets every num_steps; the command line's override still wins, and is refused.
  result = run_module(
    "experiments.estimators",
    "--quick",
    "--config=learned_rules/configs/estimators.py:tiny",
    "--config.estimator.full.num_steps=0",
    "--workdir=/nonexistent/never",
    timeout=120,
  )
  assert result.returncode != 0
  assert "error: estimator.full.num_steps" in result.stderr


def test_spec_counts_the_steps_it_simulates():
  spec = gradient_estimators.EstimatorSpec("x", "pes", 8, 1e-2, batch=3, population=4, std=0.1)
  assert spec.stream_steps(16) == 8 * 3 * 4 and spec.windows_per_episode(16) == 2
  es = dataclasses.replace(spec, kind="open_es")
  assert es.stream_steps(16) == 16 * 3 * 4 and es.windows_per_episode(16) == 1
