"""Tests of `learned_rules.trained_baselines`: online backprop against an explicit SGD loop, random
features with a delta-rule readout against an explicit loop, the recurrent net's training (on a mixture
of K, learning rate tuned, several seeds) and size, all evaluated on the network's own held-out episodes,
and all recalling more than the best memory that ignores the key.

Compilation dominates: the tests share a few tiny tasks (`SPEC`, the sweep `MIX`), one batch size and
few hidden sizes, so each jitted program compiles once; the recurrent net is fitted once (`fitted`).
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import baselines, capacity_baselines, capacity_plan, network, rules, tasks, unroll
from learned_rules import config as config_lib
from learned_rules import evaluation as evaluate_lib
from learned_rules import trained_baselines as tb
from learned_rules.configs import capacity as capacity_configs

BATCH, HIDDEN = 64, 8
# A memory passes a recall test if it beats the key-blind floor (`baselines.key_blind` on the very same
# episodes: the best answer that ignores the cue) by this much at every K.
MARGIN = 0.08


def _spec(k: int, n_in: int = 6, n_out: int = 4, **kw) -> tasks.TaskSpec:
  fields = dict(present_steps=1, delay_steps=0, query_steps=1, num_queries=k)
  fields.update(kw)
  return tasks.TaskSpec(
    protocol="hetero", num_neurons=n_in + n_out + 2, n_in=n_in, n_out=n_out, num_snippets=k, **fields
  )


SPEC = _spec(1)  # K = 1: T = 2 steps (store, query)
# A sweep of 4-bit keys and values at K = 2 and 3 (T = 4 and 6), where the key-blind floor is 0.75.
MIX = (_spec(2, n_in=4), _spec(3, n_in=4))
# The recurrent net fitted on MIX: ~1 ms a step on 2 cores, after a compilation of a few seconds per K.
MIX_HIDDEN, MIX_STEPS, MIX_BATCH, MIX_RATES = 32, 600, 32, (0.0, 3e-2, 1.0)
# A longer episode for the step-by-step checks: snippets shown twice, gaps, a delay, corrupted cues.
RICH = _spec(3, present_steps=2, gap_steps=1, delay_steps=1, cue_corruption=0.25)
# The reference computations, jitted: one compile each instead of an op-by-op dispatch.
_sample_episode = jax.jit(tasks.sample_episode, static_argnums=1)
_online_backprop = jax.jit(tb.online_backprop, static_argnums=(1, 3))
_random_delta = jax.jit(tb.random_delta, static_argnums=(1, 3))


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


def _numpy_random_delta(episode, spec, lr, weights) -> np.ndarray:
  """Explicit loop: read out y = h W (h the random layers' last activity), then, if taught, the
  normalised delta rule W += lr h (teach - y)^T / (h . h + 1e-6)."""
  x = np.asarray(episode.x, np.float64)
  w = np.zeros((weights[-1].shape[1], spec.n_out))
  readouts = []
  for step in range(x.shape[0]):
    h, teach = x[step, : spec.n_in], x[step, spec.n_in : spec.n_in + spec.n_out]
    for layer in weights:
      h = np.tanh(h @ np.asarray(layer, np.float64))
    out = h @ w
    readouts.append(out)
    if np.any(teach != 0):
      w = w + lr * np.outer(h, teach - out) / (h @ h + 1e-6)
  return np.array(readouts)


def test_random_delta_equals_an_explicit_delta_rule_loop():
  episode = _sample_episode(jax.random.PRNGKey(5), RICH)
  key, hidden = jax.random.PRNGKey(6), (HIDDEN, 5)
  got = np.asarray(_random_delta(episode, RICH, 0.4, hidden, key))
  chex.assert_shape(got, (RICH.episode_steps, RICH.n_out))
  weights = tb.init_random_features(key, RICH.n_in, hidden)
  assert [w.shape for w in weights] == [(RICH.n_in, HIDDEN), (HIDDEN, 5)]
  np.testing.assert_allclose(got, _numpy_random_delta(episode, RICH, 0.4, weights), rtol=1e-4, atol=1e-5)
  assert np.abs(got).max() > 0.1  # it stored something


def test_random_delta_with_step_size_one_stores_a_pair_exactly():
  """K = 1 (store, then query the same key): the readout at the query is the stored value."""
  for seed in range(3):
    episode = _sample_episode(jax.random.PRNGKey(seed), SPEC)
    got = np.asarray(_random_delta(episode, SPEC, 1.0, (HIDDEN,), jax.random.PRNGKey(10 + seed)))
    query = np.flatnonzero(np.asarray(episode.score).reshape(SPEC.episode_steps, -1).any(axis=-1))
    assert len(query) == 1 and query[0] > 0
    target = np.asarray(episode.target)[query[0]]
    np.testing.assert_allclose(got[query[0]], target, atol=1e-4)
    np.testing.assert_array_equal(np.sign(got[query[0]]), np.sign(target))
    np.testing.assert_array_equal(got[0], 0.0)  # read out before the first update, from W = 0


@pytest.mark.parametrize("num_snippets, hidden", [(3, (HIDDEN,)), (3, (HIDDEN, 5)), (6, (3,))])
def test_random_projection_is_the_pseudo_inverse_on_the_stored_features(num_snippets, hidden):
  """At every step, the readout equals the minimum-norm least-squares readout fitted, in float64, on
  the features of the pairs stored before it (snippets shown twice, with gaps, a delay and corrupted
  cues), while they are linearly independent. With more distinct keys than units (the last case: 6
  pairs on 3 units), it is the fit on the first pairs that span the features: no later pair is written."""
  spec = dataclasses.replace(RICH, num_snippets=num_snippets, num_queries=num_snippets)
  episode = _sample_episode(jax.random.PRNGKey(20 + num_snippets), spec)
  key = jax.random.PRNGKey(7)
  got = np.asarray(jax.jit(tb.random_projection, static_argnums=(1, 2))(episode, spec, hidden, key))
  chex.assert_shape(got, (spec.episode_steps, spec.n_out))
  keys, teach = (np.asarray(a, np.float64) for a in baselines.split_input(episode, spec))
  features = np.asarray(tb.random_features(tb.init_random_features(key, spec.n_in, hidden), keys), np.float64)
  stored = np.flatnonzero(np.any(teach != 0, axis=-1))
  # The pairs that get written: each stored step whose features are not spanned by those before it.
  written = []
  for t in stored:
    basis = features[written]
    rest = features[t] - (features[t] @ np.linalg.pinv(basis) @ basis if written else 0.0)
    if rest @ rest > 1e-3 * (features[t] @ features[t]):
      written.append(t)
  # Every snippet is shown twice, and its second showing is spanned by its first.
  assert len(written) == min(num_snippets, hidden[-1])
  for t in range(spec.episode_steps):
    before = [s for s in written if s < t]
    want = features[t] @ np.linalg.pinv(features[before]) @ teach[before] if before else np.zeros(spec.n_out)
    np.testing.assert_allclose(got[t], want, rtol=1e-3, atol=1e-3, err_msg=f"step {t}")
  assert np.abs(got).max() > 0.1  # it stored something


def test_random_delta_on_wide_random_features_recalls_above_the_key_blind_floor():
  """K = n_in pairs, each shown 3 times, on 4 n_in random tanh units: the step size tuned on one key,
  recall on another beats the key-blind floor on the same episodes."""
  spec = _spec(6, cycles=3)
  hidden = (4 * spec.n_in,)
  best, table = tb.tune_random_delta_over_k((spec,), jax.random.PRNGKey(10), (0.3, 1.0), BATCH, hidden)
  assert len(best) == 1 and best[0] in (0.3, 1.0) and np.shape(table) == (2, 1)
  key = jax.random.PRNGKey(11)
  held_out = baselines.evaluate_over_k(tb.random_delta_readout_fn(hidden), best[0], (spec,), key, BATCH)
  floor = baselines.evaluate("key_blind", spec, key, BATCH)
  assert floor["bit_accuracy"] < 0.7, floor  # K = 6: 0.656 expected
  assert _beats_key_blind(held_out, [floor]), (best, table, held_out, floor)


def _beats_key_blind(recall: list[dict], floor: list[dict]) -> bool:
  """Whether a memory's recall beats the key-blind floor on the same episodes by `MARGIN` at every K."""
  return all(r["bit_accuracy"] > f["bit_accuracy"] + MARGIN for r, f in zip(recall, floor, strict=True))


def test_tuned_online_backprop_recalls_above_the_key_blind_floor_and_step_size_zero_is_chance():
  spec = MIX[1]  # K = 3
  best, table = tb.tune_online_backprop(
    spec,
    jax.random.PRNGKey(10),
    step_sizes=(0.0, 0.01, 0.03, 0.1, 0.3, 1.0),
    num_episodes=BATCH,
    hidden=HIDDEN,
  )
  assert best == max(table, key=table.get) and table[best] == max(table.values())
  assert list(table) == [0.0, 0.01, 0.03, 0.1, 0.3, 1.0]
  assert 0.4 < table[0.0] < 0.6, table  # untrained net: chance (768 scored bits)
  assert best > 0.0
  # held out (tuned on one key, evaluated on another), against the key-blind floor on those episodes
  key = jax.random.PRNGKey(11)
  held_out = tb.evaluate_online_backprop(best, spec, key, BATCH, hidden=HIDDEN)
  floor = baselines.evaluate("key_blind", spec, key, BATCH)
  assert floor["bit_accuracy"] < 0.8, floor  # K = 3: 0.75 expected
  assert _beats_key_blind([held_out], [floor]), (best, table, held_out, floor)
  assert not _beats_key_blind([floor], [floor])  # a memory that ignores the key fails


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


@pytest.fixture(scope="module")
def fitted():
  """The recurrent net fitted on the mixture MIX: rates `MIX_RATES` tried, 2 seeds at the best."""
  train_key, tune_key = jax.random.PRNGKey(20), jax.random.PRNGKey(21)
  fit = tb.fit_recurrent(
    MIX,
    train_key,
    tune_key,
    hidden=MIX_HIDDEN,
    learning_rates=MIX_RATES,
    num_seeds=2,
    num_steps=MIX_STEPS,
    batch_size=MIX_BATCH,
    tune_episodes=BATCH,
  )
  return fit, train_key, tune_key


def test_train_recurrent_takes_the_k_of_a_mixture_in_turn():
  params, history = tb.train_recurrent(
    MIX, jax.random.PRNGKey(0), hidden=MIX_HIDDEN, num_steps=7, batch_size=MIX_BATCH, log_every=3
  )
  # the first and the last step of every K, and every third step: step s trains on MIX[s % 2]
  assert [(h["step"], h["K"]) for h in history] == [(0, 2), (1, 3), (3, 3), (5, 3), (6, 2)]
  assert all(np.isfinite(h["loss"]) for h in history)
  chex.assert_shape(
    tb.recurrent(params, _sample_episode(jax.random.PRNGKey(1), MIX[1]), MIX[1], MIX_HIDDEN), (6, 4)
  )
  with pytest.raises(ValueError, match="specs"):
    tb.train_recurrent((MIX[0], _spec(2)), jax.random.PRNGKey(0), hidden=2, num_steps=1)  # other key width


def test_recurrent_trained_on_a_mixture_recalls_every_k_above_the_key_blind_floor(fitted):
  fit, _, _ = fitted
  key = jax.random.PRNGKey(5)  # evaluation episodes: neither training batches nor tuning episodes
  floor = baselines.evaluate_over_k(baselines.READOUT_FNS["key_blind"], None, MIX, key, BATCH)
  assert all(f["bit_accuracy"] < 0.8 for f in floor), floor  # 0.75 expected at K = 2 and 3
  for params in fit.params:  # every seed
    recall = tb.recall_over_k(params, MIX, key, BATCH, MIX_HIDDEN)
    assert _beats_key_blind(recall, floor), (recall, floor)
  assert not _beats_key_blind(floor, floor)  # a memory that ignores the key fails
  untrained = tb.init_recurrent(jax.random.PRNGKey(0), 4, 4, MIX_HIDDEN)
  assert not _beats_key_blind(tb.recall_over_k(untrained, MIX, key, BATCH, MIX_HIDDEN), floor)


def test_fit_recurrent_chooses_the_rate_that_recalls_best_on_the_tuning_episodes(fitted):
  fit, train_key, tune_key = fitted
  assert list(fit.tuning) == list(MIX_RATES)
  assert fit.learning_rate == max(fit.tuning, key=fit.tuning.get) == 3e-2, fit.tuning
  assert fit.tuning[0.0] < 0.6, fit.tuning  # rate 0 trains nothing: chance
  # the score is the mean bit accuracy over the sweep's K on episodes drawn from the tuning key, and the
  # first seed is the tuning run of the chosen rate
  recall = tb.recall_over_k(fit.params[0], MIX, tune_key, BATCH, MIX_HIDDEN)
  assert fit.tuning[fit.learning_rate] == pytest.approx(np.mean([r["bit_accuracy"] for r in recall]))
  assert len(fit.params) == 2
  seeds = [np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(p)]) for p in fit.params]
  assert not np.allclose(seeds[0], seeds[1])  # another seed: another initialisation and other batches
  with pytest.raises(ValueError, match="tuning key"):
    tb.fit_recurrent(MIX, train_key, train_key, hidden=MIX_HIDDEN, num_steps=1)


def test_the_study_tunes_the_recurrent_baselines_on_episodes_of_their_own():
  train_key, tune_key = capacity_baselines.recurrent_keys(0)
  eval_key = evaluate_lib.eval_key(0)
  tuning, _ = evaluate_lib.held_out_episodes(jax.random.fold_in(tune_key, 0), MIX, BATCH)
  held_out, _ = evaluate_lib.held_out_episodes(jax.random.fold_in(eval_key, 0), MIX, BATCH)
  assert not np.array_equal(np.asarray(tuning.x), np.asarray(held_out.x))
  keys = [np.asarray(k) for k in (train_key, tb.seed_key(train_key, 0), tune_key, eval_key)]
  assert len({k.tobytes() for k in keys}) == len(keys)


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


@pytest.mark.slow  # several K in one program against each K alone: compiles both (~10 s)
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
    assert {m: metrics[m] for m in want} == pytest.approx(want, abs=1e-6)  # plus interval, counts
  params = tb.init_recurrent(jax.random.PRNGKey(0), 4, 4, 3)
  got = baselines.evaluate_over_k(tb.recurrent_readout_fn(3), params, specs, key, num_episodes=4)
  for spec, metrics in zip(specs, got, strict=True):
    want = tb.evaluate_recurrent(params, spec, key, num_episodes=4, hidden=3)
    assert {m: metrics[m] for m in want} == pytest.approx(want, abs=1e-6)
  best, table = tb.tune_online_backprop_over_k(specs, key, (0.0, 0.1), num_episodes=4, hidden=4)
  assert best == [0.1 if table[1][k] > table[0][k] else 0.0 for k in range(2)]


def test_random_delta_several_k_at_once_equal_one_k_at_a_time():
  """`random_delta`'s several-K evaluation (episodes padded with blank steps, one step size per K) equals
  the readouts of each K's episodes alone (`sample_episodes` of the first batch's key)."""
  specs = [_spec_for_over_k(k) for k in (1, 3)]
  key, lrs, hidden = jax.random.PRNGKey(4), [0.3, 1.0], (5, 3)
  readout = tb.random_delta_readout_fn(hidden)
  got = baselines.evaluate_over_k(readout, jnp.asarray(lrs), specs, key, num_episodes=4, per_k_args=True)
  for spec, lr, metrics in zip(specs, lrs, got, strict=True):
    want = _random_delta_metrics(spec, jax.random.fold_in(key, 0), 4, lr, hidden)
    for m in ("bit_accuracy", "perfect_recall"):
      assert metrics[m] == pytest.approx(float(want[m]), abs=1e-6), (spec.num_snippets, m)


@functools.partial(jax.jit, static_argnums=(0, 2, 4))
def _random_delta_metrics(spec, key, batch, lr, hidden):
  episodes, init_keys = tb.sample_episodes(spec, key, batch)
  readout = jax.vmap(tb.random_delta, in_axes=(0, None, None, None, 0))(episodes, spec, lr, hidden, init_keys)
  return unroll.recall_metrics(readout, episodes)


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


def test_state_size_counts_the_bodies_and_synapses_of_the_topology():
  # the default network: 64 neurons x Db = 8, 4,032 synapses x Ds = 4
  cfg = capacity_configs.get_config("").base
  topo = config_lib.make_topology(cfg.net)
  assert tb.state_size(topo, config_lib.rule_spec(cfg, topo)) == 64 * 8 + 4032 * 4 == 16_640
  spec = rules.RuleSpec(body_dim=3, synapse_dim=2)
  for topo in (
    network.make_full(4, 4, 4),
    network.make_layered(4, 4, (6,)),
    network.make_sparse(4, 4, 8, density=0.5),
  ):
    assert tb.state_size(topo, spec) == topo.num_neurons * 3 + int(np.asarray(topo.mask).sum()) * 2
  # the study: `recurrent_state` gets min(state size, cap) units, `recurrent` the rule's parameter count
  study = capacity_configs.get_config("tiny")
  rc = capacity_plan.read_plan(study).recurrent
  size = capacity_baselines.recurrent_size
  cfg = study.base
  topo = config_lib.make_topology(cfg.net)
  state = 12 * cfg.rule.body_dim + 12 * 11 * cfg.rule.synapse_dim
  assert size("recurrent_state", rc, cfg, topo, 500) == (study.recurrent.state_hidden_cap, state)
  rc = dataclasses.replace(rc, state_hidden_cap=10**6)
  assert size("recurrent_state", rc, cfg, topo, 500) == (state, state)
  assert size("recurrent", rc, cfg, topo, 500) == (tb.hidden_for_params(500, 4, 4), state)


def test_random_hebbian_is_the_outer_product_memory_on_the_features():
  """Without hidden layers it is `baselines.hebbian` on the key bits; with them, at every step the sum
  over the steps so far of (features . this step's features) x their teaching bits, the key bits first
  when the outputs read them."""
  episode = _sample_episode(jax.random.PRNGKey(31), RICH)
  key = jax.random.PRNGKey(8)
  hebbian = jax.jit(tb.random_hebbian, static_argnums=(1, 2, 4))
  np.testing.assert_allclose(
    hebbian(episode, RICH, (), key, False), baselines.hebbian(episode, RICH), rtol=1e-5, atol=1e-5
  )
  keys, teach = (np.asarray(a, np.float64) for a in baselines.split_input(episode, RICH))
  hidden = np.asarray(
    tb.random_features(tb.init_random_features(key, RICH.n_in, (HIDDEN,)), keys), np.float64
  )
  for with_inputs in (False, True):
    features = np.concatenate([keys, hidden], axis=-1) if with_inputs else hidden
    w, want = np.zeros((features.shape[-1], RICH.n_out)), []
    for f, v in zip(features, teach, strict=True):
      w += np.outer(f, v)
      want.append(f @ w)
    got = np.asarray(hebbian(episode, RICH, (HIDDEN,), key, with_inputs))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-4)
    assert np.abs(got).max() > 0.1  # it stored something
