"""Never-reset streams run far past the training window: recall by lag, over stream time, and state norms.

The streaming protocol (docs/DESIGN.md, "The remember-snippets task") meta-trains a rule on truncated
windows of `W` steps. Here fresh streams run for many windows, never reset, window by window (a
`lax.scan` over windows of `tasks.sample_stream_window`, so memory does not grow with the stream), and
every window is summarised by:

- `RecallCounts`: correct and scored readout bits of every stream, grouped by the lag `d` (in slots)
  that each scored step asks for (`tasks.sample_stream_lags`): summed over windows and streams, a
  forgetting curve; resampled over streams (`resampled_by_lag`, `evaluation.percentile_interval`),
  its 95 % bootstrap interval;
- `StateNorms`: the largest absolute body and synapse state over every step of the window, and their
  root mean square at the window's last step.

A Hebbian memory with decay (the palimpsest, `baselines.hebbian`) runs online on exactly the same
stream steps (`run_hebbian_streams` with the key given to `run_long_streams`), and so does the key-blind
floor (`run_key_blind_streams`, `baselines.stream_key_blind`: the best answer that ignores the cue).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import baselines, network, rules, tasks, unroll


class RecallCounts(NamedTuple):
  """Readout bits of scored steps, summed over a stream's steps, by stream and lag: `[..., B, Dmax]` each,
  index `d - 1` for lag `d`."""

  correct_by_lag: jax.Array
  bits_by_lag: jax.Array


class StateNorms(NamedTuple):
  """`[...]` each: the largest |body state| and |synapse state| entry over every step of a window, every
  neuron (synapse) and every stream, and the root mean square of the bodies (of the synapses that
  exist) at the window's last step, over the streams."""

  max_body: jax.Array
  max_synapse: jax.Array
  rms_body: jax.Array
  rms_synapse: jax.Array


def lag_counts(readout: jax.Array, episodes: tasks.Episode, lags: jax.Array, max_lag: int) -> RecallCounts:
  """`RecallCounts` `[B, Dmax]` of readouts `[B, T, n_out]` against windows `[B, ...]` whose steps ask
  for lags `[B, T]` (`tasks.sample_stream_lags`); unscored steps count nowhere."""
  correct = jnp.sum(unroll.bit_credit(readout, episodes.target), axis=-1)  # [B, T]
  by_lag = jax.nn.one_hot(lags - 1, max_lag) * episodes.score[..., None]  # [B, T, Dmax]
  bits = jnp.full(correct.shape, readout.shape[-1], jnp.float32)
  return RecallCounts(jnp.einsum("bt,btd->bd", correct, by_lag), jnp.einsum("bt,btd->bd", bits, by_lag))


def accuracy(counts: RecallCounts, axis=None) -> np.ndarray:
  """Bit accuracy `correct / bits` summed over `axis` (None: everything); NaN where nothing was scored."""
  correct = np.sum(np.asarray(counts.correct_by_lag, np.float64), axis=axis)
  bits = np.sum(np.asarray(counts.bits_by_lag, np.float64), axis=axis)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(bits > 0, correct / np.maximum(bits, 1.0), np.nan)


def stream_positions(key: jax.Array, spec: tasks.TaskSpec, batch: int) -> tasks.StreamPosition:
  """`[B]` positions of the streams `unroll.init_stream_carry` starts from `key` (the same streams)."""
  _, k_stream = jax.random.split(key)  # as unroll.init_stream_carry
  return tasks.init_stream_positions(k_stream, spec, batch)


def _next_windows(positions: tasks.StreamPosition, spec: tasks.TaskSpec):
  """The next windows `[B, W, ...]` of every stream, the lags they ask `[B, W]`, the new positions."""
  episodes, new_positions = jax.vmap(tasks.sample_stream_window, in_axes=(0, None))(positions, spec)
  return episodes, jax.vmap(tasks.sample_stream_lags, in_axes=(0, None))(positions, spec), new_positions


def _run_window(theta, topo, problem: unroll.Problem, states: network.NetState, xs: jax.Array):
  """Runs `[B]` networks over inputs `[B, W, N]`: final states, readouts `[B, W, n_out]`, and the
  largest |body| and |synapse| entry over the window's steps."""
  run = functools.partial(unroll.unroll, theta, topo, problem, record=unroll.state_bounds)
  states, (readout, max_body, max_syn) = jax.vmap(run)(states, xs)
  return states, readout, jnp.max(max_body), jnp.max(max_syn)


def _rms(topo: network.Topology, states: network.NetState) -> tuple[jax.Array, jax.Array]:
  """RMS of the bodies `[B, N, Db]` and of the existing synapses (masked-out entries are zero)."""
  sum_sq = sum(jnp.sum(jnp.square(s)) for s in states.synapses)
  batch, ds = states.bodies.shape[0], states.synapses[0].shape[-1]
  return jnp.sqrt(jnp.mean(jnp.square(states.bodies))), jnp.sqrt(sum_sq / (batch * jnp.sum(topo.mask) * ds))


@functools.partial(jax.jit, static_argnames=("problem", "batch", "num_windows"))
def run_long_streams(
  theta: rules.Theta,
  topo: network.Topology,
  problem: unroll.Problem,
  key: jax.Array,
  batch: int,
  num_windows: int,
) -> tuple[RecallCounts, StateNorms]:
  """Runs `batch` fresh streams of `problem.task` from `key` (`unroll.init_stream_carry`) for
  `num_windows` windows, never reset. Returns per window `RecallCounts` `[num_windows, B, Dmax]` and
  `StateNorms` `[num_windows]` (maxed over the streams)."""
  spec = problem.task
  carry = unroll.init_stream_carry(theta, topo, problem, key, batch)

  def window(carry: unroll.StreamCarry, _):
    episodes, lags, positions = _next_windows(carry.position, spec)
    states, readout, max_body, max_syn = _run_window(theta, topo, problem, carry.net_state, episodes.x)
    counts = lag_counts(readout, episodes, lags, spec.max_lag)
    norms = StateNorms(max_body, max_syn, *_rms(topo, states))
    return unroll.StreamCarry(states, positions), (counts, norms)

  _, (counts, norms) = jax.lax.scan(window, carry, None, length=num_windows)
  return counts, norms


def hebbian_window(
  weights: jax.Array, episode: tasks.Episode, spec: tasks.TaskSpec, decay: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """`baselines.hebbian` online, carrying its weights `[n_out, n_in]` across windows: at every step
  `W = decay W + teach key^T`, readout `W key`. Returns the weights after the window `[n_out, n_in]` and
  the readouts `[T, n_out]` (from zero weights, exactly `baselines.hebbian(episode, spec, decay)`)."""
  keys, teach = baselines.split_input(episode, spec)

  def step(w, kt):
    key_bits, teach_bits = kt
    w = decay * w + jnp.outer(teach_bits, key_bits)
    return w, w @ key_bits

  return jax.lax.scan(step, weights, (keys, teach))


@functools.partial(jax.jit, static_argnames=("spec", "batch", "num_windows"))
def run_hebbian_streams(
  spec: tasks.TaskSpec, key: jax.Array, batch: int, num_windows: int, decays: jax.Array
) -> tuple[RecallCounts, jax.Array]:
  """The palimpsest on the streams `run_long_streams` runs for the same key, one memory per decay of
  `decays` `[M]`. Returns per decay and window `RecallCounts` `[M, num_windows, B, Dmax]` and the
  largest |weight| at the window's end over the streams `[M, num_windows]`."""
  per_stream = jax.vmap(hebbian_window, in_axes=(0, 0, None, None))
  per_decay = jax.vmap(per_stream, in_axes=(0, None, None, 0))

  def window(carry, _):
    weights, positions = carry
    episodes, lags, positions = _next_windows(positions, spec)
    weights, readout = per_decay(weights, episodes, spec, decays)  # [M, B, ...]
    counts = jax.vmap(lag_counts, in_axes=(0, None, None, None))(readout, episodes, lags, spec.max_lag)
    return (weights, positions), (counts, jnp.max(jnp.abs(weights), axis=(1, 2, 3)))

  weights = jnp.zeros((decays.shape[0], batch, spec.n_out, spec.n_in))
  carry = (weights, stream_positions(key, spec, batch))
  _, (counts, max_weight) = jax.lax.scan(window, carry, None, length=num_windows)
  swap = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731  (windows, decays) -> (decays, windows)
  return RecallCounts(*map(swap, counts)), swap(max_weight)


def history_windows(spec: tasks.TaskSpec) -> int:
  """Windows before the current one that a query of it can ask about: lags reach `Dmax` slots back
  from a slot that may start up to a slot before the window."""
  return -(-(spec.max_lag + 1) * spec.slot_steps // spec.window)


@functools.partial(jax.jit, static_argnames=("spec", "batch", "num_windows"))
def run_key_blind_streams(spec: tasks.TaskSpec, key: jax.Array, batch: int, num_windows: int) -> RecallCounts:
  """The key-blind floor (`baselines.stream_key_blind`) on the streams `run_long_streams` runs for the
  same key: `RecallCounts` `[num_windows, B, Dmax]`. Each window is answered with the teaching bits of
  the `history_windows` windows before it in view (blank before the stream starts), so the readouts are
  those of `stream_key_blind` on the whole stream at once."""
  past_steps = history_windows(spec) * spec.window
  positions = stream_positions(key, spec, batch)
  shapes = jax.eval_shape(lambda p: _next_windows(p, spec)[0], positions)
  blank = jax.tree.map(lambda a: jnp.zeros((batch, past_steps, *a.shape[2:]), a.dtype), shapes)
  answer = jax.vmap(baselines.stream_key_blind, in_axes=(0, 0, None))

  def window(carry, _):
    past, positions = carry
    episodes, lags, next_positions = _next_windows(positions, spec)
    seen = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), past, episodes)
    readout = answer(seen, positions.replace(t=positions.t - past_steps), spec)[:, past_steps:]
    past = jax.tree.map(lambda a: a[:, spec.window :], seen)
    return (past, next_positions), lag_counts(readout, episodes, lags, spec.max_lag)

  _, counts = jax.lax.scan(window, (blank, positions), None, length=num_windows)
  return counts


def resampled_by_lag(counts: RecallCounts, resamples: np.ndarray) -> np.ndarray:
  """`[R, Dmax]`: the forgetting curve of `counts` `[num_windows, B, Dmax]` on each resample of streams
  (`evaluation.resample_indices` over the B streams, the independent units of a never-reset run; the
  same indices for every memory make their differences paired); NaN at a lag a resample never scored."""
  per_stream = RecallCounts(*(np.sum(np.asarray(c, np.float64), axis=0) for c in counts))  # [B, Dmax]
  picked = RecallCounts(*(c[resamples] for c in per_stream))  # [R, B, Dmax]
  return accuracy(picked, axis=1)


def synapse_bound(theta: rules.Theta, spec: rules.RuleSpec | None = None, fan_in=None) -> float | None:
  """What the bounded synapse update `s' = decay s + rate tanh(.)` guarantees from a start inside it:
  `|s| <= max rate / (1 - decay)` over channels and, for a rule that scales both by fan-in
  (`RuleSpec.reference_fan_in`, `scale_rate`), over the post neurons' fan-ins `fan_in` `[N]`.

  None for a rule that centres its synapses (`RuleSpec.center_synapses`): subtracting the mean of a
  neuron's incoming synapses after each update keeps no such bound.
  """
  if spec is not None and spec.center_synapses:
    return None
  plain = spec is None or fan_in is None  # else the rule's own scales (None where it has none)
  decay = rules.synapse_decay(theta, None if plain else rules.time_scales(spec, fan_in))
  rate = rules.synapse_rate(theta, None if plain else rules.rate_scales(spec, fan_in))
  return float(jnp.max(rate / (1.0 - decay)))
