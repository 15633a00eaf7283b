"""Tests of `learned_rules.gradient_estimators` and `learned_rules.estimator_study`: the tiny study end
to end on the one training loop, full back-propagation as the whole-window case of truncation, the reset
schedule, and the ES gradients."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import config as config_lib
from learned_rules import estimator_study, gradient_estimators, meta_train, rules
from learned_rules.configs import estimators as estimator_configs


@pytest.fixture(scope="module")
def tiny():
  """`(study, run configs by name, topo, problem, theta)` of the tiny study."""
  study = estimator_configs.get_config("tiny")
  topo, problem, _ = meta_train.setup(study.base)
  theta = rules.init_theta(meta_train.train_key(0), problem.rule)
  return study, estimator_study.run_configs(study), topo, problem, theta


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory, info_lines):
  """`(workdir, results, logged)`: the tiny study run, and the absl INFO lines it logged."""
  workdir = str(tmp_path_factory.mktemp("estimators"))
  with info_lines() as logged:
    out = estimator_study.run_study(tiny[0], workdir)
  estimator_study.plot(out["results"], os.path.join(workdir, "estimators.png"))
  return workdir, out, logged


def test_tiny_study_writes_curves_summary_and_figure(tiny, tiny_run):
  study, configs, *_ = tiny
  workdir, out, _ = tiny_run
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert list(saved["results"]) == list(configs) == ["truncated_8", "full", "open_es", "pes_8"]
  for name, result in saved["results"].items():
    cfg = configs[name]
    num_steps = study.estimator[name].num_steps
    _, problem, _ = meta_train.setup(cfg)
    per_step = config_lib.estimator_spec(cfg).stream_steps(problem.task, cfg.train.batch_size)
    assert [run["seed"] for run in result["runs"]] == list(study.seeds)
    for run in result["runs"]:
      curve = run["curve"]
      assert (
        [r["step"] for r in curve]
        == estimator_study.eval_steps(num_steps, study.eval_points)
        == [0, num_steps // 2, num_steps]
      )
      for r in curve:  # a step not recalled perfectly misses at least half a bit of its n_out
        p, bits = r["perfect_recall"], r["bit_accuracy"]
        assert p <= bits <= p + (1.0 - p) * (1.0 - 0.5 / study.base.net.num_outputs), r
      assert np.all(np.diff([r["cpu_s"] for r in curve]) >= 0) and np.all(
        np.diff([r["wall_s"] for r in curve]) >= 0
      )
      assert curve[-1]["stream_steps"] == num_steps * per_step
      # Each run is a trainer run with its checkpoints: the study resumes from them.
      run_dir = os.path.join(workdir, name, f"seed{run['seed']}")
      assert os.path.isdir(os.path.join(run_dir, "checkpoints", str(num_steps)))
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


def test_a_finished_study_reruns_from_its_checkpoints(tiny, tiny_run):
  """Rerun on the same folder, every run resumes at its last step: nothing trains, the curves stay."""
  workdir, out, _ = tiny_run
  again = estimator_study.run_study(tiny[0], workdir)
  assert again["results"] == out["results"]


def test_the_study_logs_a_progress_line_per_run(tiny, tiny_run):
  study, configs, *_ = tiny
  lines = [line for line in tiny_run[2] if line.startswith("estimators ")]
  total = len(configs) * len(study.seeds)
  runs = [(name, seed) for name in configs for seed in study.seeds]
  assert len(lines) == total, tiny_run[2]
  for i, (line, (name, seed)) in enumerate(zip(lines, runs, strict=True)):
    assert line.startswith(f"estimators {i + 1}/{total}: {name} seed {seed} at meta step "), line
    assert "s elapsed" in line and ("s left" in line) == (i + 1 < total), line


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


def test_truncated_streams_restart_every_horizon_over_window_windows(tiny):
  study, configs, topo, problem, theta = tiny
  cfg = configs["truncated_8"]
  spec = config_lib.estimator_spec(cfg)
  batch, n_windows = cfg.train.batch_size, study.horizon // spec.window
  est = gradient_estimators.make_estimator(spec, problem, batch)
  carry = est.init(jax.random.PRNGKey(5), theta, topo)
  window = np.asarray(carry.window)
  np.testing.assert_array_equal(window, np.arange(batch) % n_windows)  # staggered
  np.testing.assert_array_equal(np.asarray(carry.streams.position.t), window * spec.window)
  grad = jax.jit(est.grad)
  for step in range(2 * n_windows):
    before = jax.device_get(carry)
    grads, metrics, carry = grad(theta, topo, carry, jax.random.PRNGKey(step))
    after = jax.device_get(carry)
    restarted = before.window == 0
    np.testing.assert_array_equal(after.window, (before.window + 1) % n_windows)
    expected_t = np.where(restarted, spec.window, before.streams.position.t + spec.window)
    np.testing.assert_array_equal(after.streams.position.t, expected_t)
    same_key = np.all(after.streams.position.key == before.streams.position.key, axis=-1)
    np.testing.assert_array_equal(same_key, ~restarted)  # a restarted stream is a new stream
    assert jax.tree.structure(grads) == jax.tree.structure(theta)


def test_es_gradient_estimates_the_gradient_of_a_quadratic():
  """On f(x) = |x - c|^2 / 2, OpenAI-ES's antithetic estimate (the form `open_es` and `pes` use) is
  unbiased for the gradient x - c: with many members it lies close to it, and it is not just noise."""
  theta = {"a": jnp.arange(6.0), "b": jnp.ones((2, 2))}
  target = {"a": jnp.full(6, 2.0), "b": jnp.zeros((2, 2))}
  flat_c, _ = jax.flatten_util.ravel_pytree(target)
  population, std = 20000, 0.05
  eps, unravel = gradient_estimators._antithetic(jax.random.PRNGKey(0), theta, population, std)
  assert np.allclose(eps[: population // 2], -eps[population // 2 :])  # antithetic pairs
  members = gradient_estimators._members(theta, eps, unravel)
  fitness = jax.vmap(lambda th: 0.5 * jnp.sum((jax.flatten_util.ravel_pytree(th)[0] - flat_c) ** 2))(members)
  grads = gradient_estimators._es_gradient(eps, fitness, population * std**2, unravel)
  want = jax.tree.map(jnp.subtract, theta, target)
  est, exact = (jax.flatten_util.ravel_pytree(t)[0] for t in (grads, want))
  assert float(jnp.linalg.norm(est - exact)) < 0.05 * float(jnp.linalg.norm(exact))


@pytest.mark.parametrize("name", ["open_es", "pes_8"])
def test_es_estimators_give_finite_gradients_of_theta_shape(tiny, name):
  study, configs, topo, problem, theta = tiny
  cfg = configs[name]
  spec = config_lib.estimator_spec(cfg)
  est = gradient_estimators.make_estimator(spec, problem, cfg.train.batch_size)
  carry = est.init(jax.random.PRNGKey(6), theta, topo)
  grad = jax.jit(est.grad)
  grads, metrics, carry = grad(theta, topo, carry, jax.random.PRNGKey(7))
  assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, theta)
  flat = jax.flatten_util.ravel_pytree(grads)[0]
  assert np.all(np.isfinite(flat)) and np.isfinite(float(metrics["loss"]))
  # A window with no scored step gives every member the same loss, hence a zero gradient; an episode
  # has scored steps, so some window of it moves theta.
  largest = float(jnp.abs(flat).max())
  if spec.kind == "pes":
    # Each member runs its own streams; its accumulated perturbations grow over an episode's T / W
    # windows and restart with the streams.
    assert carry.streams.net_state.bodies.shape[:2] == (spec.population, cfg.train.batch_size)
    norms = [float(jnp.linalg.norm(carry.xi))]
    for step in range(study.horizon // spec.window):
      grads, _, carry = grad(theta, topo, carry, jax.random.PRNGKey(8 + step))
      largest = max(largest, float(jnp.abs(jax.flatten_util.ravel_pytree(grads)[0]).max()))
      norms.append(float(jnp.linalg.norm(carry.xi)))
    n_windows = study.horizon // spec.window
    assert int(carry.next_window) == 1 and norms[n_windows - 1] > 1.2 * norms[0] and norms[-1] < norms[-2]
  assert largest > 0


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("estimators", "truncated_8,adjoint", "estimators"),
    ("estimator.truncated_8.window", 5, "estimator.truncated_8.window"),
    ("estimator.open_es.population", 3, "estimator.open_es.population"),
    ("estimator.full.kind", "sgd", "estimator.full.estimator.kind|estimator.full.kind"),
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
    estimator_study.run_study(study, str(tmp_path / "out"))
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
  assert result.returncode == 2
  assert "error: estimator.full.num_steps" in result.stderr


def test_spec_counts_the_steps_it_simulates(tiny):
  task = tiny[3].task
  spec = gradient_estimators.EstimatorSpec("pes", window=8, horizon=16, population=4, std=0.1)
  assert spec.stream_steps(task, 3) == 8 * 3 * 4
  es = gradient_estimators.EstimatorSpec("open_es", horizon=16, population=4, std=0.1)
  assert es.stream_steps(task, 3) == 16 * 3 * 4
