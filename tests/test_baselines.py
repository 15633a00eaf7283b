"""Tests of `learned_rules.baselines`: the classical memories against explicit loops and theory."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from learned_rules import baselines, tasks, unroll


def _spec(protocol: str, n: int, k: int, **kw) -> tasks.TaskSpec:
  fields = dict(present_steps=1, delay_steps=0, query_steps=1, num_queries=k)
  fields.update(kw)
  n_out = n if protocol == "auto" else n // 2
  return tasks.TaskSpec(
    protocol=protocol, num_neurons=n + n_out + 3, n_in=n, n_out=n_out, num_snippets=k, **fields
  )


@pytest.mark.parametrize("protocol,decay", [("hetero", 1.0), ("auto", 1.0), ("auto", 0.8)])
def test_hebbian_equals_an_online_outer_product_loop(protocol, decay):
  spec = _spec(protocol, 8, 3, present_steps=2, gap_steps=1, delay_steps=1, cue_corruption=0.25)
  episode = tasks.sample_episode(jax.random.PRNGKey(3), spec)
  got = np.asarray(baselines.hebbian(episode, spec, decay))
  x = np.asarray(episode.x, np.float64)
  w = np.zeros((spec.n_out, spec.n_in))
  want = []
  for step in range(x.shape[0]):
    key, teach = x[step, : spec.n_in], x[step, spec.n_in : spec.n_in + spec.n_out]
    w = decay * w + np.outer(teach, key)
    want.append(w @ key)  # every synapse the network has: in auto, input i -> output i too
  np.testing.assert_allclose(got, np.array(want), rtol=1e-5, atol=1e-4)
  assert np.abs(got).max() > 1.0  # the memory holds something


def test_hopfield_drops_the_diagonal_in_auto_only():
  spec = _spec("auto", 8, 3, present_steps=2, cue_corruption=0.25)
  episode = tasks.sample_episode(jax.random.PRNGKey(4), spec)
  x = np.asarray(episode.x, np.float64)
  w = np.zeros((spec.n_out, spec.n_in))
  want = []
  for step in range(x.shape[0]):
    key, teach = x[step, : spec.n_in], x[step, spec.n_in : spec.n_in + spec.n_out]
    w = w + np.outer(teach, key)
    want.append((w - np.diag(np.diag(w))) @ key)
  np.testing.assert_allclose(np.asarray(baselines.hopfield(episode, spec)), np.array(want), atol=1e-4)
  assert not np.allclose(np.asarray(baselines.hebbian(episode, spec)), np.array(want))
  hetero = _spec("hetero", 8, 3)
  episode = tasks.sample_episode(jax.random.PRNGKey(4), hetero)
  np.testing.assert_array_equal(baselines.hopfield(episode, hetero), baselines.hebbian(episode, hetero))


def test_key_blind_is_the_majority_of_the_values_stored_so_far():
  spec = _spec("hetero", 6, 4, present_steps=2, gap_steps=1)
  episode = tasks.sample_episode(jax.random.PRNGKey(2), spec)
  readout = np.asarray(baselines.key_blind(episode, spec))
  values = np.asarray(episode.x)[:, spec.n_in : spec.n_in + spec.n_out]
  np.testing.assert_array_equal(readout, np.cumsum(values, axis=0))
  # It ignores the cue: the same values under other keys give the same readouts.
  other = episode.replace(x=episode.x.at[:, : spec.n_in].multiply(-1.0))
  np.testing.assert_array_equal(baselines.key_blind(other, spec), readout)


def test_key_blind_scores_its_exact_expectation():
  """Over 2,048 episodes per K the measured floor lies within 4 standard errors of the exact
  expectation (0.750, 0.6875, 0.6367 at K = 2, 4, 8; ties are half a bit)."""
  ks = (1, 2, 3, 4, 8)
  specs = [_spec("hetero", 8, k, present_steps=2) for k in ks]
  fn = baselines.READOUT_FNS["key_blind"]
  got = baselines.evaluate_over_k(fn, None, specs, jax.random.PRNGKey(1), num_episodes=2048, batch=1024)
  for k, spec, metrics in zip(ks, specs, got, strict=True):
    want = baselines.key_blind_accuracy(k)
    bits = 2048 * k * spec.n_out
    assert abs(metrics["bit_accuracy"] - want) < 4 * np.sqrt(0.25 / bits) + 1e-6, (k, metrics, want)
  expected = [round(baselines.key_blind_accuracy(k), 4) for k in (2, 4, 8, 12, 16)]
  assert expected == [0.75, 0.6875, 0.6367, 0.6128, 0.5982]


def test_a_readout_of_exactly_zero_scores_half_a_bit():
  target = np.array([[1.0, -1.0, 1.0, -1.0]])
  readout = np.array([[0.0, 0.0, 2.0, 3.0]])  # two ties, one right, one wrong
  episode = tasks.Episode(x=np.zeros((1, 8)), target=target, score=np.ones(1))
  metrics = unroll.recall_metrics(readout, episode)
  assert float(metrics["bit_accuracy"]) == (0.5 + 0.5 + 1.0 + 0.0) / 4
  assert float(metrics["perfect_recall"]) == 0.0  # a tie is not a recalled bit
  np.testing.assert_array_equal(unroll.bit_credit(readout, target), [[0.5, 0.5, 1.0, 0.0]])


def test_pseudo_inverse_recalls_linearly_independent_keys_exactly():
  spec = _spec("hetero", 16, 8)  # K = 8 random keys in 16 dimensions: independent
  metrics = baselines.eval_batch("pseudo_inverse", spec, jax.random.PRNGKey(0), 16)
  assert float(metrics["bit_accuracy"]) == 1.0 and float(metrics["perfect_recall"]) == 1.0
  # ... which the Hebbian memory, with its cross-talk, does not.
  hebb = baselines.eval_batch("hebbian", spec, jax.random.PRNGKey(0), 16)
  assert float(hebb["bit_accuracy"]) < 0.99


def test_baselines_see_the_networks_episodes():
  """`eval_batch` draws its episodes from the key exactly as `unroll.episode_objective` does."""
  spec = _spec("hetero", 6, 2)
  key = jax.random.PRNGKey(7)
  k_ep, _ = jax.random.split(key)
  episodes = jax.vmap(tasks.sample_episode, in_axes=(0, None))(jax.random.split(k_ep, 4), spec)
  readout = jax.vmap(baselines.pseudo_inverse, in_axes=(0, None))(episodes, spec)
  credit = (np.asarray(readout) * np.asarray(episodes.target) > 0) + 0.5 * (np.asarray(readout) == 0)
  correct = credit[np.asarray(episodes.score) > 0]
  got = baselines.eval_batch("pseudo_inverse", spec, key, 4)
  np.testing.assert_allclose(float(got["bit_accuracy"]), correct.mean(), rtol=1e-6)


def test_unknown_baseline_raises():
  with pytest.raises(ValueError, match="baseline"):
    baselines.eval_batch("oracle", _spec("hetero", 6, 2), jax.random.PRNGKey(0), 2)


def _capacity(name: str, n: int, threshold: float, episodes: int) -> int:
  """Largest K with bit accuracy >= threshold on `auto` with half the cue bits zeroed (bisection:
  accuracy falls with K)."""

  def accuracy(k: int) -> float:
    spec = _spec("auto", n, k, cue_corruption=0.5)
    return float(baselines.eval_batch(name, spec, jax.random.PRNGKey(0), episodes)["bit_accuracy"])

  low, high = 1, n // 4  # accuracy(low) >= threshold > accuracy(high)
  assert accuracy(low) >= threshold > accuracy(high)
  while high - low > 1:
    mid = (low + high) // 2
    low, high = (mid, high) if accuracy(mid) >= threshold else (low, mid)
  return low


@pytest.mark.parametrize("n", [64, pytest.param(256, marks=pytest.mark.slow)])
def test_hopfield_capacity_matches_theory(n):
  """0.99 capacity of one-step Hopfield recall from half a cue: theory about 0.092 n (baselines.py)."""
  k = _capacity("hopfield", n, 0.99, episodes=128)
  assert 0.08 * n <= k <= 0.16 * n, k
  # With the input i -> output i synapse the network has, the Hebbian memory holds more.
  spec = _spec("auto", n, k + 1, cue_corruption=0.5)
  assert float(baselines.eval_batch("hebbian", spec, jax.random.PRNGKey(0), 128)["bit_accuracy"]) >= 0.99


@pytest.mark.slow  # several K in one program against each K alone: compiles both (~10 s)
def test_several_k_at_once_equal_one_k_at_a_time():
  """Padding every K's episodes to the longest with blank steps changes no baseline's recall."""
  specs = [_spec("hetero", 6, k, present_steps=2, delay_steps=1) for k in (1, 3, 5)]
  key = jax.random.PRNGKey(5)
  for name in ("key_blind", "hebbian", "pseudo_inverse"):  # hopfield is hebbian on hetero
    got = baselines.evaluate_over_k(baselines.READOUT_FNS[name], None, specs, key, num_episodes=6, batch=4)
    for spec, metrics in zip(specs, got, strict=True):
      want = baselines.evaluate(name, spec, key, num_episodes=6, batch=4)
      # The several-K records add an interval and counts to the one-K metrics.
      assert {m: metrics[m] for m in want} == pytest.approx(want, abs=1e-6), (name, spec.num_snippets)
      assert metrics["bit_accuracy_low"] <= metrics["bit_accuracy"] <= metrics["bit_accuracy_high"]
  assert got[0]["bit_accuracy"] == 1.0 > got[-1]["bit_accuracy"]  # K = 1 exact, K = 5 not
