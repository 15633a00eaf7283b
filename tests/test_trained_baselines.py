"""Tests of `learned_rules.trained_baselines`: online backprop against an explicit SGD loop, the recurrent
net's training and size, and both evaluated on the network's own held-out episodes.

Compilation dominates: the tests share one tiny task (`SPEC`), one batch size and one hidden size, so
each jitted program compiles once.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import baselines, tasks
from learned_rules import trained_baselines as tb

BATCH, HIDDEN = 64, 8


def _spec(k: int, n_in: int = 6, n_out: int = 4, **kw) -> tasks.TaskSpec:
  fields = dict(present_steps=1, delay_steps=0, query_steps=1, num_queries=k)
  fields.update(kw)
  return tasks.TaskSpec(
    protocol="hetero", num_neurons=n_in + n_out + 2, n_in=n_in, n_out=n_out, num_snippets=k, **fields
  )


SPEC = _spec(1)  # K = 1: T = 2 steps (store, query)
# A longer episode for the step-by-step checks: snippets shown twice, gaps, a delay, corrupted cues.
RICH = _spec(3, present_steps=2, gap_steps=1, delay_steps=1, cue_corruption=0.25)
# The reference computations, jitted: one compile each instead of an op-by-op dispatch.
_sample_episode = jax.jit(tasks.sample_episode, static_argnums=1)
_online_backprop = jax.jit(tb.online_backprop, static_argnums=(1, 3))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _untrained(key: jax.Array, spec: tasks.TaskSpec, hidden: int, keys: jax.Array) -> jax.Array:
  return tb.mlp(tb.init_mlp(key, spec.n_in, hidden, spec.n_out), keys)


def _numpy_online_backprop(episode, spec, lr, params) -> np.ndarray:
  """Explicit loop: read out f(key_t), then one SGD step on 0.5 ||f(key_t) - teach_t||^2 if taught."""
  w1, b1, w2, b2 = (np.asarray(params[k], np.float64) for k in ("w1", "b1", "w2", "b2"))
  x = np.asarray(episode.x, np.float64)
  readouts = []
  for step in range(x.shape[0]):
    key, teach = x[step, : spec.n_in], x[step, spec.n_in : spec.n_in + spec.n_out]
    h = np.tanh(key @ w1 + b1)
    out = h @ w2 + b2
    readouts.append(out)
    if np.any(teach != 0):
      err = out - teach  # d loss / d out
      dpre = (w2 @ err) * (1 - h**2)
      w2, b2 = w2 - lr * np.outer(h, err), b2 - lr * err
      w1, b1 = w1 - lr * np.outer(key, dpre), b1 - lr * dpre
  return np.array(readouts)


def test_online_backprop_equals_an_explicit_sgd_loop():
  episode = _sample_episode(jax.random.PRNGKey(3), RICH)
  key = jax.random.PRNGKey(4)
  got = np.asarray(_online_backprop(episode, RICH, 0.3, HIDDEN, key))
  chex.assert_shape(got, (RICH.episode_steps, RICH.n_out))
  params = jax.tree.map(np.asarray, tb.init_mlp(key, RICH.n_in, HIDDEN, RICH.n_out))
  np.testing.assert_allclose(got, _numpy_online_backprop(episode, RICH, 0.3, params), rtol=1e-4, atol=1e-5)
  # the weights moved: the readouts after the first stored step are not the untrained net's
  untrained = np.asarray(_untrained(key, RICH, HIDDEN, episode.x[:, : RICH.n_in]))
  np.testing.assert_allclose(got[0], untrained[0], rtol=1e-5, atol=1e-6)
  assert np.abs(got - untrained)[1:].max() > 0.1


def test_online_backprop_with_step_size_zero_stores_nothing():
  episode = _sample_episode(jax.random.PRNGKey(1), RICH)
  key = jax.random.PRNGKey(2)
  got = _online_backprop(episode, RICH, 0.0, HIDDEN, key)
  want = _untrained(key, RICH, HIDDEN, episode.x[:, : RICH.n_in])
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_tuned_online_backprop_recalls_one_snippet_and_step_size_zero_is_chance():
  best, table = tb.tune_online_backprop(
    SPEC,
    jax.random.PRNGKey(10),
    step_sizes=(0.0, 0.01, 0.03, 0.1, 0.3, 1.0),
    num_episodes=BATCH,
    hidden=HIDDEN,
  )
  assert best == max(table, key=table.get) and table[best] == max(table.values())
  assert list(table) == [0.0, 0.01, 0.03, 0.1, 0.3, 1.0]
  assert 0.4 < table[0.0] < 0.6, table  # untrained net: chance (256 scored bits)
  assert best > 0.0
  # held out: tuned on one key, evaluated on another
  held_out = tb.evaluate_online_backprop(best, SPEC, jax.random.PRNGKey(11), BATCH, hidden=HIDDEN)
  assert held_out["bit_accuracy"] > 0.95, (best, table, held_out)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _network_episodes(spec: tasks.TaskSpec, key: jax.Array, batch: int) -> tasks.Episode:
  """The episodes `baselines.eval_batch` draws (the split of `unroll.episode_objective`)."""
  k_ep, _ = jax.random.split(key)
  return jax.vmap(tasks.sample_episode, in_axes=(0, None))(jax.random.split(k_ep, batch), spec)


@functools.partial(jax.jit, static_argnums=(1, 3))
def _reference_readouts(episodes, spec, init_keys, hidden, params):
  """Online backprop (step size 0.1) and the recurrent net, vmapped over episodes `[B, ...]`."""
  online = jax.vmap(tb.online_backprop, in_axes=(0, None, None, None, 0))(
    episodes, spec, 0.1, hidden, init_keys
  )
  rnn = jax.vmap(tb.recurrent, in_axes=(None, 0, None, None))(params, episodes, spec, hidden)
  return online, rnn


def _bit_accuracy(readout, episodes) -> float:
  correct = (np.asarray(readout) * np.asarray(episodes.target) > 0)[np.asarray(episodes.score) > 0]
  return float(correct.mean())


def test_evaluation_sees_the_networks_episodes():
  key = jax.random.PRNGKey(7)
  episodes = _network_episodes(SPEC, key, BATCH)
  drawn, init_keys = jax.jit(tb.sample_episodes, static_argnums=(0, 2))(SPEC, key, BATCH)
  for field in ("x", "target", "score"):
    np.testing.assert_array_equal(np.asarray(getattr(drawn, field)), np.asarray(getattr(episodes, field)))

  params = tb.init_recurrent(jax.random.PRNGKey(0), SPEC.n_in, SPEC.n_out, HIDDEN)
  online, rnn = _reference_readouts(episodes, SPEC, init_keys, HIDDEN, params)
  got = tb.online_backprop_eval_batch(0.1, SPEC, key, BATCH, HIDDEN)
  np.testing.assert_allclose(float(got["bit_accuracy"]), _bit_accuracy(online, episodes), rtol=1e-6)
  got = tb.recurrent_eval_batch(params, SPEC, key, BATCH, HIDDEN)
  np.testing.assert_allclose(float(got["bit_accuracy"]), _bit_accuracy(rnn, episodes), rtol=1e-6)
  # `evaluate_*` batch as `evaluate.mean_over_batches`: the first batch's key is fold_in(key, 0)
  mean = tb.evaluate_recurrent(params, SPEC, key, BATCH, HIDDEN)
  first = tb.recurrent_eval_batch(params, SPEC, jax.random.fold_in(key, 0), BATCH, HIDDEN)
  np.testing.assert_allclose(mean["bit_accuracy"], float(first["bit_accuracy"]), rtol=1e-6)


def test_train_recurrent_learns_to_recall_one_snippet():
  params, history = tb.train_recurrent(
    SPEC, jax.random.PRNGKey(0), hidden=HIDDEN, num_steps=40, learning_rate=3e-2, log_every=10
  )
  assert [h["step"] for h in history] == [0, 10, 20, 30, 39]
  assert history[-1]["loss"] < 0.5 * history[0]["loss"], history
  held_out = tb.evaluate_recurrent(params, SPEC, jax.random.PRNGKey(5), BATCH, HIDDEN)
  assert held_out["bit_accuracy"] > 0.85, (history, held_out)
  # the same params run episodes of any length (here K = 3, T = 6)
  longer = _spec(3)
  episode = tasks.sample_episode(jax.random.PRNGKey(6), longer)
  chex.assert_shape(tb.recurrent(params, episode, longer, HIDDEN), (longer.episode_steps, longer.n_out))


def _closed_form_count(cell: str, hidden: int, n_in: int, n_out: int) -> int:
  """GRU: 3 input kernels with biases, 3 recurrent kernels, one recurrent bias; LSTM: 4 input kernels,
  4 recurrent kernels with biases; both plus the readout."""
  gates = 3 if cell == "gru" else 4
  inputs = n_in + n_out
  cell_count = gates * (inputs * hidden + hidden * hidden) + (4 * hidden if cell == "gru" else gates * hidden)
  return cell_count + hidden * n_out + n_out


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_param_count_and_hidden_for_params(cell):
  params = jax.eval_shape(lambda k: tb.init_recurrent(k, 16, 16, 19, cell), jax.random.PRNGKey(0))
  assert set(params["params"]) == {"cell", "readout"}
  assert tb.param_count(params) == _closed_form_count(cell, 19, 16, 16)
  for target in (3301, 500, 20_000):
    hidden = tb.hidden_for_params(target, 16, 16, cell)
    count = lambda h: _closed_form_count(cell, h, 16, 16)  # noqa: E731
    assert abs(count(hidden) - target) <= min(
      abs(count(hidden - 1) - target), abs(count(hidden + 1) - target)
    )
  if cell == "gru":
    assert tb.hidden_for_params(3301, 16, 16) == 19 and _closed_form_count("gru", 19, 16, 16) == 3303


def test_unknown_cell_raises():
  with pytest.raises(ValueError, match="cell"):
    tb.init_recurrent(jax.random.PRNGKey(0), 4, 3, 5, "rnn")


def test_several_k_at_once_equal_one_k_at_a_time():
  """The trained baselines' several-K evaluation (episodes padded with blank steps, one step size per K)
  equals their one-K evaluation."""
  specs = [_spec_for_over_k(k) for k in (1, 3)]
  key = jax.random.PRNGKey(4)
  lrs = [0.1, 0.05]
  readout = tb.online_backprop_readout_fn(4)
  got = baselines.evaluate_over_k(readout, jnp.asarray(lrs), specs, key, num_episodes=4, per_k_args=True)
  for spec, lr, metrics in zip(specs, lrs, got, strict=True):
    want = tb.evaluate_online_backprop(lr, spec, key, num_episodes=4, hidden=4)
    assert metrics == pytest.approx(want, abs=1e-6)
  params = tb.init_recurrent(jax.random.PRNGKey(0), 4, 4, 3)
  got = baselines.evaluate_over_k(tb.recurrent_readout_fn(3), params, specs, key, num_episodes=4)
  for spec, metrics in zip(specs, got, strict=True):
    want = tb.evaluate_recurrent(params, spec, key, num_episodes=4, hidden=3)
    assert metrics == pytest.approx(want, abs=1e-6)
  best, table = tb.tune_online_backprop_over_k(specs, key, (0.0, 0.1), num_episodes=4, hidden=4)
  assert best == [0.1 if table[1][k] > table[0][k] else 0.0 for k in range(2)]


def _spec_for_over_k(k: int) -> tasks.TaskSpec:
  return tasks.TaskSpec(
    protocol="hetero",
    num_neurons=12,
    n_in=4,
    n_out=4,
    num_snippets=k,
    num_queries=k,
    present_steps=2,
    delay_steps=1,
  )
