"""Tests of `learned_rules.unroll`: the scan over time, the losses, and the meta-gradients."""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import config as config_lib
from learned_rules import meta_train, network, rules, tasks, unroll
from learned_rules.configs import remember


@pytest.fixture(scope="module")
def tiny():
  """Config, topology, problem and initial theta of `learned_rules/configs/remember.py:tiny`."""
  cfg = remember.get_config("tiny")
  topo, problem, _ = meta_train.setup(cfg)
  theta = rules.init_theta(jax.random.PRNGKey(0), problem.rule)
  return cfg, topo, problem, theta


def _leaf_norms(tree) -> dict[str, float]:
  return {
    jax.tree_util.keystr(path): float(np.linalg.norm(np.ravel(leaf)))
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


# ---- the unroll ----

_network_step = jax.jit(network.network_step, static_argnums=2)  # compiled once for every remat policy


@pytest.mark.parametrize("remat", unroll.REMAT_POLICIES)
def test_unroll_equals_a_loop_of_network_steps(theta, small_spec, full_topo, net_state, trees_close, remat):
  steps = 4
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.choice([-1.0, 0.0, 1.0], (steps, full_topo.num_neurons)), jnp.float32)
  problem = unroll.Problem(rule=small_spec, task=tasks.TaskSpec(), remat=remat)
  final, readouts = unroll.unroll(theta, full_topo, problem, net_state, xs)
  chex.assert_shape(readouts, (steps, full_topo.n_out))
  chex.assert_trees_all_equal_shapes(final, net_state)
  state, want = net_state, []
  for t in range(steps):
    state, out = _network_step(theta, full_topo, small_spec, state, xs[t])
    want.append(out.readout)
  trees_close((final, readouts), (state, jnp.stack(want)), rtol=1e-5, atol=1e-5)


# (policy, T) pairs whose readouts and gradients are compared with those of "none" at the same T: every
# policy at a T that is not a perfect square (6: "nested" runs 2 chunks of 3), and "nested" at a prime T
# (7: chunks of 1).
REMAT_CASES = [(p, 6) for p in unroll.REMAT_POLICIES if p != "none"] + [("nested", 7)]


@pytest.fixture(scope="module")
def remat_results(theta, small_spec, full_topo, net_state):
  """Per (policy, T), the readouts, final state, and gradient w.r.t. theta and the initial state of
  a fixed random linear function of both, for a `T`-step unroll; all from one compiled program."""
  rng = np.random.default_rng(50)
  cases = sorted({*REMAT_CASES, *(("none", t) for _, t in REMAT_CASES)})
  inputs = {}
  for steps in sorted({t for _, t in cases}):
    xs = rng.choice([-1.0, 0.0, 1.0], (steps, full_topo.num_neurons))
    w_readout = rng.standard_normal((steps, full_topo.n_out))
    w_state = jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape), net_state)
    inputs[steps] = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), (xs, w_readout, w_state))

  def objective(theta, state0, remat, xs, w_readout, w_state):
    problem = unroll.Problem(rule=small_spec, task=tasks.TaskSpec(), remat=remat)
    final, readouts = unroll.unroll(theta, full_topo, problem, state0, xs)
    value = jnp.sum(w_readout * readouts)
    value += sum(
      jnp.sum(w * v) for w, v in zip(jax.tree.leaves(w_state), jax.tree.leaves(final), strict=True)
    )
    return value, (readouts, final)

  value_and_grad = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)

  @jax.jit
  def run_all(theta, state0, inputs):
    return {(remat, t): value_and_grad(theta, state0, remat, *inputs[t]) for remat, t in cases}

  return run_all(theta, net_state, inputs)


@pytest.mark.parametrize("remat,steps", REMAT_CASES)
def test_remat_policies_give_the_same_readouts_and_gradients(remat_results, trees_close, remat, steps):
  (value, (readouts, final)), grads = remat_results[remat, steps]
  (want_value, (want_readouts, want_final)), want_grads = remat_results["none", steps]
  chex.assert_shape(readouts, (steps, want_readouts.shape[1]))
  trees_close((readouts, final), (want_readouts, want_final), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  trees_close(grads, want_grads, rtol=1e-5, atol=1e-5)
  # The gradient reaches every leaf of theta that the unroll reads (the initial-state vectors enter
  # through `init_net_state` only) and every leaf of the initial state: none is trivially equal.
  unread = {"[0]['init_body']", "[0]['init_synapse']"}
  zero = [name for name, norm in _leaf_norms(grads).items() if norm == 0.0 and name not in unread]
  assert not zero, f"leaves without gradient: {zero}"


def test_chunk_size_is_the_largest_divisor_up_to_ceil_sqrt():
  for steps in [*range(1, 50), 64, 97, 100, 1000]:
    chunk, limit = unroll._chunk_size(steps), math.ceil(math.sqrt(steps))
    assert steps % chunk == 0 and 1 <= chunk <= limit, steps
    assert all(steps % c for c in range(chunk + 1, limit + 1)), steps
  examples = {1: 1, 2: 2, 4: 2, 6: 3, 7: 1, 8: 2, 12: 4, 16: 4, 17: 1, 100: 10}
  assert {t: unroll._chunk_size(t) for t in examples} == examples


@pytest.mark.parametrize("remat", ["always", "", True, False, None])
def test_unknown_remat_policy_raises(small_spec, remat):
  with pytest.raises(ValueError, match="remat"):
    unroll.Problem(rule=small_spec, task=tasks.TaskSpec(), remat=remat)


def test_readout_loss_and_metrics_match_numpy():
  rng = np.random.default_rng(0)
  t, n_out = 6, 3
  readout = rng.standard_normal((2, t, n_out)).astype(np.float32)
  target = rng.choice([-1.0, 1.0], (2, t, n_out)).astype(np.float32)
  score = np.zeros((2, t), np.float32)
  score[:, -2:] = 1.0
  target = target * score[..., None]  # targets are 0 where not scored, as in the tasks
  episode = tasks.Episode(x=jnp.zeros((2, t, 1)), target=jnp.asarray(target), score=jnp.asarray(score))
  scored = score > 0
  mse = np.mean((readout - target)[scored] ** 2)
  logistic = np.mean(np.log1p(np.exp(-(target * readout)[scored])))
  np.testing.assert_allclose(unroll.readout_loss(jnp.asarray(readout), episode, "mse"), mse, rtol=1e-5)
  np.testing.assert_allclose(
    unroll.readout_loss(jnp.asarray(readout), episode, "logistic"), logistic, rtol=1e-5
  )
  correct = (readout * target > 0)[scored]
  metrics = unroll.recall_metrics(jnp.asarray(readout), episode)
  np.testing.assert_allclose(metrics["bit_accuracy"], correct.mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["perfect_recall"], correct.all(axis=-1).mean(), rtol=1e-6)
  # Readouts on unscored steps do not count.
  noisy = readout + 100.0 * (1.0 - score[..., None])
  np.testing.assert_allclose(unroll.readout_loss(jnp.asarray(noisy), episode, "mse"), mse, rtol=1e-5)


@pytest.fixture(scope="module")
def episode_result(tiny):
  """Loss, metrics and meta-gradient of `:tiny` on 2 episodes, and those episodes and the network's
  readouts on them (drawn and run again, as `episode_objective` draws and runs them), from one compiled
  program."""
  _, topo, problem, theta = tiny

  def run(theta, topo, problem, key, batch):
    grad_fn = jax.value_and_grad(unroll.episode_objective, has_aux=True)
    (loss, metrics), grads = grad_fn(theta, topo, problem, key, batch)
    k_ep, k_state = jax.random.split(key)
    episodes = jax.vmap(tasks.sample_episode, in_axes=(0, None))(jax.random.split(k_ep, batch), problem.task)
    states = unroll.init_batch_states(theta, topo, problem, k_state, batch)
    _, readouts = jax.vmap(unroll.unroll, in_axes=(None, None, None, 0, 0))(
      theta, topo, problem, states, episodes.x
    )
    return loss, metrics, grads, episodes, readouts

  return jax.jit(run, static_argnums=(2, 4))(theta, topo, problem, jax.random.PRNGKey(1), 2)


def test_episode_objective_outputs(tiny, episode_result):
  loss, metrics, _, episodes, readouts = episode_result
  chex.assert_shape(loss, ())
  assert set(metrics) == {"loss", "bit_accuracy", "perfect_recall"}
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert float(metrics["loss"]) == float(loss)
  # Recomputed with numpy from the readouts: the means over the scored steps (all K queries, R steps
  # each) and their bits, a readout of 0 half a bit, and the MSE there.
  task = tiny[2].task
  scored = np.asarray(episodes.score) > 0
  assert scored.sum() == 2 * task.num_queries * int(tasks.query_score(task).sum())
  readout, target = np.asarray(readouts, np.float64)[scored], np.asarray(episodes.target)[scored]
  credit = np.where(readout == 0, 0.5, (readout * target > 0).astype(np.float64))
  np.testing.assert_allclose(metrics["bit_accuracy"], credit.mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["perfect_recall"], np.all(credit == 1.0, axis=-1).mean(), rtol=1e-6)
  np.testing.assert_allclose(loss, np.mean(np.square(readout - target)), rtol=1e-5)


# ---- meta-gradients ----


def test_every_leaf_of_theta_gets_a_gradient(tiny, episode_result):
  """With synapse updates on, every meta-parameter influences the episode loss."""
  theta, grads = tiny[3], episode_result[2]
  chex.assert_trees_all_equal_shapes(grads, theta)
  chex.assert_tree_all_finite(grads)
  zero = [name for name, norm in _leaf_norms(grads).items() if norm == 0.0]
  assert not zero, f"leaves without gradient: {zero}"


def test_synapse_rule_gets_no_gradient_when_synapse_updates_are_off(tiny):
  cfg, _, problem, theta = tiny
  cfg = cfg.copy_and_resolve_references()
  cfg.net.synapse_updates = False
  topo = config_lib.make_topology(cfg.net)
  grad_fn = jax.jit(
    jax.grad(lambda th: unroll.episode_objective(th, topo, problem, jax.random.PRNGKey(2), 2)[0])
  )
  norms = _leaf_norms(grad_fn(theta))
  synapse_rule = {name for name in norms if name.startswith("['synapse']")}
  assert synapse_rule and all(norms[name] == 0.0 for name in synapse_rule)
  # The frozen synapses still carry the learned initial weights, and everything else learns.
  assert all(norm > 0.0 for name, norm in norms.items() if name not in synapse_rule), norms


@pytest.fixture(scope="module")
def stream_result(tiny):
  """The tiny problem on the streaming protocol (windows long enough to hold scored queries):
  a fresh batch of streams, and two consecutive windows of it with their meta-gradients."""
  _, topo, problem, theta = tiny
  task = dataclasses.replace(problem.task, protocol="streaming", window=24, max_lag=2)
  problem = dataclasses.replace(problem, task=task)
  carry0 = unroll.init_stream_carry(theta, topo, problem, jax.random.PRNGKey(3), 2)
  value_and_grad = jax.jit(jax.value_and_grad(unroll.stream_objective, has_aux=True), static_argnums=2)
  (_, (metrics, carry1)), grads = value_and_grad(theta, topo, problem, carry0)
  (_, (_, carry2)), _ = value_and_grad(theta, topo, problem, carry1)
  return dict(
    topo=topo,
    problem=problem,
    theta=theta,
    carry0=carry0,
    carry1=carry1,
    carry2=carry2,
    metrics=metrics,
    grads=grads,
  )


def test_init_stream_carry(stream_result):
  carry, problem, topo = stream_result["carry0"], stream_result["problem"], stream_result["topo"]
  n, rule = topo.num_neurons, problem.rule
  chex.assert_shape(carry.net_state.bodies, (2, n, rule.body_dim))
  chex.assert_shape(
    carry.net_state.synapses,
    [(2, b.post_size, b.pre_size, rule.synapse_dim) for b in topo.blocks],
  )
  assert not np.allclose(carry.net_state.bodies[0], carry.net_state.bodies[1])  # own noise each
  np.testing.assert_array_equal(carry.position.t, tasks.stream_phases(problem.task, 2))
  assert not np.array_equal(carry.position.key[0], carry.position.key[1])


def test_stream_objective_gradients(stream_result):
  episodes, _ = jax.vmap(tasks.sample_stream_window, in_axes=(0, None))(
    stream_result["carry0"].position, stream_result["problem"].task
  )
  assert float(episodes.score.sum()) > 0  # the window holds scored queries
  grads = stream_result["grads"]
  chex.assert_tree_all_finite(grads)
  norms = _leaf_norms(grads)
  # The carried state enters each window as a constant (truncated back-propagation), so the
  # learned initial states get no gradient from a window's loss; every other leaf does.
  initial = {"['init_body']", "['init_synapse']"}
  assert all(norms[name] == 0.0 for name in initial)
  zero = [name for name, norm in norms.items() if norm == 0.0 and name not in initial]
  assert not zero, f"leaves without gradient: {zero}"
  assert set(stream_result["metrics"]) == {"loss", "bit_accuracy", "perfect_recall"}


def test_stream_carry_continues_across_windows(stream_result, trees_close):
  """Two windows of W steps end in the state that one window of 2W steps ends in."""
  problem, carry0 = stream_result["problem"], stream_result["carry0"]
  double = dataclasses.replace(problem, task=dataclasses.replace(problem.task, window=48))
  objective = jax.jit(unroll.stream_objective, static_argnums=2)
  _, (_, carry_double) = objective(stream_result["theta"], stream_result["topo"], double, carry0)
  np.testing.assert_array_equal(stream_result["carry1"].position.t, carry0.position.t + 24)
  np.testing.assert_array_equal(stream_result["carry2"].position.t, carry_double.position.t)
  trees_close(stream_result["carry2"].net_state, carry_double.net_state, rtol=1e-5, atol=1e-5)
