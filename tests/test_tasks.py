"""Tests of `learned_rules.tasks`: the episode protocols (`hetero`, `auto`) and the stream."""

from __future__ import annotations

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import tasks

N_IN, N_OUT, N_HIDDEN = 16, 5, 3  # 16 key bits: distinct random keys collide with odds 2^-16
HETERO = tasks.TaskSpec(
  protocol="hetero",
  num_neurons=N_IN + N_OUT + N_HIDDEN,
  n_in=N_IN,
  n_out=N_OUT,
  num_snippets=3,
  present_steps=2,
  gap_steps=1,
  cycles=2,
  delay_steps=3,
  num_queries=2,
  query_steps=2,
)
AUTO = dataclasses.replace(
  HETERO, protocol="auto", n_out=N_IN, num_neurons=2 * N_IN + N_HIDDEN, num_queries=3, cue_corruption=0.25
)
STREAM = tasks.TaskSpec(
  protocol="streaming",
  num_neurons=N_IN + N_OUT + N_HIDDEN,
  n_in=N_IN,
  n_out=N_OUT,
  present_steps=2,
  gap_steps=1,
  query_steps=2,
  max_lag=3,
  window=200,
)


def _episode(spec: tasks.TaskSpec, seed: int = 0) -> tasks.Episode:
  return jax.tree.map(np.asarray, tasks.sample_episode(jax.random.PRNGKey(seed), spec))


def _split(spec: tasks.TaskSpec, x: np.ndarray):
  """Key bits `[T, n_in]`, teaching bits `[T, n_out]` and hidden inputs `[T, N - n_in - n_out]`."""
  return x[:, : spec.n_in], x[:, spec.n_in : spec.n_in + spec.n_out], x[:, spec.n_in + spec.n_out :]


def _stored(spec: tasks.TaskSpec, episode: tasks.Episode):
  """The stored snippets as read off the episode's first presentation: keys, values."""
  keys, teach, _ = _split(spec, episode.x)
  starts = [k * (spec.present_steps + spec.gap_steps) for k in range(spec.num_snippets)]
  return keys[starts], teach[starts]


def _query_steps(spec: tasks.TaskSpec) -> np.ndarray:
  store = spec.cycles * spec.num_snippets * (spec.present_steps + spec.gap_steps)
  return np.arange(store + spec.delay_steps, spec.episode_steps)


@pytest.mark.parametrize("spec", [HETERO, AUTO], ids=["hetero", "auto"])
def test_episode_shapes(spec):
  episode = tasks.sample_episode(jax.random.PRNGKey(0), spec)
  t = spec.episode_steps
  assert t == (
    spec.cycles * spec.num_snippets * (spec.present_steps + spec.gap_steps)
    + spec.delay_steps
    + spec.num_queries * spec.query_steps
  )
  chex.assert_shape(episode.x, (t, spec.num_neurons))
  chex.assert_shape(episode.target, (t, spec.n_out))
  chex.assert_shape(episode.score, (t,))


def test_hetero_storage_schedule():
  spec = HETERO
  episode = _episode(spec)
  keys, teach, hidden = _split(spec, episode.x)
  stored_keys, stored_values = _stored(spec, episode)
  assert np.all(hidden == 0)  # hidden neurons never receive input
  assert np.all(np.abs(stored_keys) == 1) and np.all(np.abs(stored_values) == 1)
  assert len({tuple(k) for k in stored_keys}) == spec.num_snippets
  step = 0
  for _ in range(spec.cycles):
    for k in range(spec.num_snippets):
      for _ in range(spec.present_steps):  # the key on the inputs, the value as teaching input
        np.testing.assert_array_equal(keys[step], stored_keys[k])
        np.testing.assert_array_equal(teach[step], stored_values[k])
        step += 1
      for _ in range(spec.gap_steps):
        np.testing.assert_array_equal(episode.x[step], 0.0)
        step += 1
  for _ in range(spec.delay_steps):
    np.testing.assert_array_equal(episode.x[step], 0.0)
    step += 1
  np.testing.assert_array_equal(_query_steps(spec), np.arange(step, spec.episode_steps))
  # Nothing before the queries is scored, and there is no target there.
  np.testing.assert_array_equal(episode.score[:step], 0.0)
  np.testing.assert_array_equal(episode.target[:step], 0.0)


@pytest.mark.parametrize("spec", [HETERO, AUTO], ids=["hetero", "auto"])
def test_queries_are_scored_at_the_end_against_stored_values(spec):
  for seed in range(3):
    episode = _episode(spec, seed)
    keys, teach, _ = _split(spec, episode.x)
    stored_keys, stored_values = _stored(spec, episode)
    steps = _query_steps(spec)
    np.testing.assert_array_equal(episode.score[steps], 1.0)
    assert episode.score.sum() == spec.num_queries * spec.query_steps
    np.testing.assert_array_equal(teach[steps], 0.0)  # no teaching input at recall
    asked = []
    for q in range(spec.num_queries):
      block = steps[q * spec.query_steps : (q + 1) * spec.query_steps]
      cue = keys[block[0]]
      np.testing.assert_array_equal(keys[block], np.broadcast_to(cue, keys[block].shape))
      # The cue agrees with exactly one stored key on its visible bits.
      visible = cue != 0
      matches = [k for k in range(spec.num_snippets) if np.array_equal(stored_keys[k][visible], cue[visible])]
      assert len(matches) == 1, matches
      asked.append(matches[0])
      np.testing.assert_array_equal(
        episode.target[block], np.broadcast_to(stored_values[matches[0]], (len(block), spec.n_out))
      )
    assert len(set(asked)) == spec.num_queries  # every query asks for another snippet


@pytest.mark.parametrize("spec", [HETERO, AUTO], ids=["hetero", "auto"])
def test_query_order_is_the_stored_position_each_query_asks_for(spec):
  """`tasks.query_order` names, for each query of the episode drawn from the same key, the position at
  which its snippet was stored: read off the episode, the value the query is scored against is the one
  taught at that position."""
  for seed in range(4):
    episode = _episode(spec, seed)
    _, stored_values = _stored(spec, episode)
    order = np.asarray(tasks.query_order(jax.random.PRNGKey(seed), spec))
    assert order.shape == (spec.num_queries,)
    steps = _query_steps(spec)[:: spec.query_steps]  # the first step of each query
    np.testing.assert_array_equal(episode.target[steps], stored_values[order])


def test_auto_values_equal_keys():
  spec = AUTO
  episode = _episode(spec)
  keys, teach, _ = _split(spec, episode.x)
  shown = np.flatnonzero(np.any(keys != 0, axis=1))
  store = shown[shown < _query_steps(spec)[0]]
  np.testing.assert_array_equal(teach[store], keys[store])
  stored_keys, stored_values = _stored(spec, episode)
  np.testing.assert_array_equal(stored_values, stored_keys)


def test_query_order_is_random():
  firsts = set()
  for seed in range(8):
    episode = _episode(HETERO, seed)
    stored_keys, _ = _stored(HETERO, episode)
    cue = _split(HETERO, episode.x)[0][_query_steps(HETERO)[0]]
    firsts.add(int(np.flatnonzero(np.all(stored_keys == cue, axis=1))[0]))
  assert len(firsts) > 1


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.3, 0.5, 0.9])
def test_cue_corruption_zeroes_exactly_round_fraction_bits(fraction):
  spec = dataclasses.replace(HETERO, cue_corruption=fraction, num_queries=3)
  n_zero = math.floor(fraction * spec.n_in + 0.5)
  episode = _episode(spec, seed=4)
  keys = _split(spec, episode.x)[0]
  stored_keys, _ = _stored(spec, episode)
  zero_sets = set()
  for t in _query_steps(spec):
    cue = keys[t]
    assert np.sum(cue == 0) == n_zero
    visible = cue != 0
    assert any(np.array_equal(k[visible], cue[visible]) for k in stored_keys)
    zero_sets.add(tuple(np.flatnonzero(~visible)))
  if 0 < n_zero < spec.n_in:
    assert len(zero_sets) > 1  # the zeroed bits differ between cues


def test_corrupt_directly():
  patterns = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, (50, 12)), 1.0, -1.0)
  out = np.asarray(tasks.corrupt(jax.random.PRNGKey(1), patterns, 0.4))
  chex.assert_shape(out, (50, 12))
  np.testing.assert_array_equal(np.sum(out == 0, axis=-1), math.floor(0.4 * 12 + 0.5))
  kept = out != 0
  np.testing.assert_array_equal(out[kept], np.asarray(patterns)[kept])
  # Every bit position gets zeroed somewhere: the choice is random, not a fixed slice.
  assert np.all(np.any(~kept, axis=0))
  np.testing.assert_array_equal(tasks.corrupt(jax.random.PRNGKey(1), patterns, 0.0), patterns)


def test_sample_snippets():
  keys, values = tasks.sample_snippets(jax.random.PRNGKey(0), HETERO, 7)
  chex.assert_shape(keys, (7, N_IN))
  chex.assert_shape(values, (7, N_OUT))
  assert set(np.unique(keys)) == {-1.0, 1.0} and set(np.unique(values)) == {-1.0, 1.0}
  auto_keys, auto_values = tasks.sample_snippets(jax.random.PRNGKey(0), AUTO, 7)
  np.testing.assert_array_equal(auto_values, auto_keys)


@pytest.mark.parametrize("spec", [HETERO, AUTO], ids=["hetero", "auto"])
def test_episode_generation_under_jit_and_vmap(spec, trees_close):
  key = jax.random.PRNGKey(5)
  jitted = jax.jit(tasks.sample_episode, static_argnums=1)(key, spec)
  trees_close(jitted, tasks.sample_episode(key, spec), rtol=0, atol=0)
  keys = jax.random.split(key, 3)
  batch = jax.jit(jax.vmap(tasks.sample_episode, in_axes=(0, None)), static_argnums=1)(keys, spec)
  chex.assert_shape(batch.x, (3, spec.episode_steps, spec.num_neurons))
  trees_close(jax.tree.map(lambda a: a[2], batch), tasks.sample_episode(keys[2], spec), rtol=0, atol=0)
  assert not np.array_equal(batch.x[0], batch.x[1])


# ---- streaming ----


@functools.cache
def _stream(phase: int, seed: int = 0):
  """One window of a stream that starts at global step `phase`, as numpy."""
  pos = tasks.init_stream_position(jax.random.PRNGKey(seed), STREAM, phase)
  episode, new_pos = jax.jit(tasks.sample_stream_window, static_argnums=1)(pos, STREAM)
  return jax.tree.map(np.asarray, (pos, episode, new_pos))


@pytest.mark.parametrize("phase", [0, 7])
def test_stream_window_shapes_and_position(phase):
  pos, episode, new_pos = _stream(phase)
  s = STREAM.slot_steps
  assert s == STREAM.present_steps + STREAM.gap_steps + STREAM.query_steps
  assert STREAM.episode_steps == STREAM.window
  chex.assert_shape(episode.x, (STREAM.window, STREAM.num_neurons))
  chex.assert_shape(episode.target, (STREAM.window, STREAM.n_out))
  chex.assert_shape(episode.score, (STREAM.window,))
  assert int(pos.t) == phase and int(new_pos.t) == phase + STREAM.window
  assert int(pos.first_slot) == -(-phase // s)  # the first slot the stream sees whole
  assert int(new_pos.first_slot) == int(pos.first_slot)


@pytest.mark.parametrize("phase", [0, 7])
def test_stream_schedule_and_lagged_targets(phase):
  spec, (pos, episode, _) = STREAM, _stream(phase)
  s, p, g = spec.slot_steps, spec.present_steps, spec.gap_steps
  keys, teach, hidden = _split(spec, episode.x)
  assert np.all(hidden == 0)
  first_slot = int(pos.first_slot)
  ts = phase + np.arange(spec.window)
  slots, phases = ts // s, ts % s
  shown = {}  # slot -> (key, value), for the slots the stream saw whole
  for i in np.flatnonzero(phases < p):
    if slots[i] >= first_slot:
      key, value = shown.setdefault(slots[i], (keys[i], teach[i]))
      np.testing.assert_array_equal(keys[i], key)
      np.testing.assert_array_equal(teach[i], value)
  querying = phases >= p + g
  np.testing.assert_array_equal(episode.x[(phases >= p) & ~querying], 0.0)  # gap steps blank
  np.testing.assert_array_equal(teach[querying], 0.0)
  assert np.all(episode.score[~querying] == 0)  # only queries are ever scored
  np.testing.assert_array_equal(episode.target[episode.score == 0], 0.0)

  lags = set()
  for slot in np.unique(slots[querying]):
    steps = np.flatnonzero(querying & (slots == slot))
    cue = keys[steps[0]]
    np.testing.assert_array_equal(keys[steps], np.broadcast_to(cue, keys[steps].shape))
    candidates = [
      lag
      for lag in range(1, spec.max_lag + 1)
      if slot - lag in shown and np.array_equal(shown[slot - lag][0], cue)
    ]
    scored = episode.score[steps]
    assert np.all(scored == scored[0])
    if scored[0]:
      # The target is the value shown `lag` slots earlier, in a slot the stream saw whole.
      assert len(candidates) == 1, (slot, candidates)
      lag = candidates[0]
      lags.add(lag)
      np.testing.assert_array_equal(
        episode.target[steps], np.broadcast_to(shown[slot - lag][1], (len(steps), spec.n_out))
      )
    else:
      # Unscored: the cue names a slot from before the stream started, which only happens early.
      assert not candidates
      assert slot - spec.max_lag < first_slot
  assert lags == set(range(1, spec.max_lag + 1))
  assert episode.score.sum() > 0


def test_stream_is_a_function_of_key_and_time():
  """Two consecutive windows equal one window of twice the length: the stream depends only on
  (key, t), so truncation into windows does not change what the network sees."""
  half = dataclasses.replace(STREAM, window=30)
  double = dataclasses.replace(STREAM, window=60)
  sample = jax.jit(tasks.sample_stream_window, static_argnums=1)
  pos = tasks.init_stream_position(jax.random.PRNGKey(3), half, 4)
  first, pos1 = sample(pos, half)
  second, pos2 = sample(pos1, half)
  whole, pos_whole = sample(tasks.init_stream_position(jax.random.PRNGKey(3), double, 4), double)
  for field in ("x", "target", "score"):
    np.testing.assert_array_equal(
      np.concatenate([getattr(first, field), getattr(second, field)]), getattr(whole, field)
    )
  assert int(pos2.t) == int(pos_whole.t) == 4 + 60
  assert whole.score.sum() > 0
  other, _ = sample(tasks.init_stream_position(jax.random.PRNGKey(4), half, 4), half)
  assert not np.array_equal(other.x, first.x)


@pytest.mark.parametrize("window,batch", [(8, 2), (24, 16), (10, 3), (7, 7), (24, 1)])
def test_stream_phases_are_staggered_evenly(window, batch):
  spec = dataclasses.replace(STREAM, window=window)
  phases = tasks.stream_phases(spec, batch)
  assert len(phases) == batch and phases[0] == 0
  assert all(0 <= ph < window for ph in phases)
  gaps = np.diff(phases + [window])  # including the wrap-around to the next window
  assert np.all(gaps >= 1)
  assert gaps.max() - gaps.min() <= 1


def test_latency_scores_reachable_steps_and_holds_keys():
  """L = 2: each key is shown L + P steps with its value on the last P; the first L steps of every
  query are unscored. With both options off the episode is the plain one."""
  spec = dataclasses.replace(HETERO, cycles=1, latency=2, hold_for_latency=True, query_steps=3)
  episode = _episode(spec)
  keys, teach, _ = _split(spec, episode.x)
  show = spec.latency + spec.present_steps
  assert spec.episode_steps == spec.num_snippets * (show + spec.gap_steps) + spec.delay_steps + 2 * 3
  for k in range(spec.num_snippets):
    start = k * (show + spec.gap_steps)
    assert np.all(keys[start : start + show] == keys[start])  # the key for L + P steps
    assert np.all(np.abs(keys[start]) == 1.0)
    assert np.all(teach[start : start + spec.latency] == 0.0)  # no value while the key travels
    assert np.all(np.abs(teach[start + spec.latency : start + show]) == 1.0)
  query_score = episode.score[-spec.num_queries * spec.query_steps :].reshape(spec.num_queries, 3)
  np.testing.assert_array_equal(query_score, [[0, 0, 1]] * spec.num_queries)
  plain = dataclasses.replace(spec, latency=2, hold_for_latency=False, score_reachable=False)
  np.testing.assert_array_equal(_episode(plain).x, _episode(dataclasses.replace(spec, latency=0)).x)
  assert _episode(plain).score.sum() == spec.num_queries * 3


@pytest.mark.parametrize("latency, first, scored", [(0, 1, [0, 1, 1]), (0, 2, [0, 0, 1]), (2, 1, [0, 0, 1])])
def test_first_scored_step_leaves_the_earlier_query_steps_unscored(latency, first, scored):
  """`first_scored_step` scores no query step before it, nor one before the latency's first: the
  later of the two is the first scored. The inputs are the episode's without it."""
  spec = dataclasses.replace(HETERO, cycles=1, latency=latency, query_steps=3)
  later = dataclasses.replace(spec, first_scored_step=first)
  episode = _episode(later)
  query_score = episode.score[-spec.num_queries * 3 :].reshape(spec.num_queries, 3)
  np.testing.assert_array_equal(query_score, [scored] * spec.num_queries)
  np.testing.assert_array_equal(episode.x, _episode(spec).x)


def test_stream_latency_scores_reachable_steps_and_holds_keys():
  spec = dataclasses.replace(STREAM, latency=1, hold_for_latency=True, query_steps=3, window=60)
  assert spec.slot_steps == 1 + spec.present_steps + spec.gap_steps + 3
  pos = tasks.init_stream_position(jax.random.PRNGKey(0), spec, 0)
  episode, _ = tasks.sample_stream_window(pos, spec)
  keys, teach, _ = _split(spec, np.asarray(episode.x))
  phase = np.arange(spec.window) % spec.slot_steps
  assert np.all(np.abs(keys[phase < 3]) == 1.0) and np.all(teach[phase == 0] == 0.0)
  assert np.all(np.abs(teach[(phase >= 1) & (phase < 3)]) == 1.0)
  scored = np.asarray(episode.score) > 0
  assert scored.any() and set(phase[scored]) == {spec.slot_steps - 2, spec.slot_steps - 1}
