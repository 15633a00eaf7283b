"""The remember-snippets task: episode protocols (`hetero`, `auto`) and the `streaming` protocol.

Everything here is pure `jnp` driven by `jax.random` keys, so episodes are generated inside `jit`.
The time schedule (which step shows which snippet) is static and built with numpy at trace time; only
the patterns, the query order and the cue corruption are random. See docs/DESIGN.md, "The remember-snippets
task". An episode is the external input of every neuron at every step plus the scored targets:

  store:  C cycles x K snippets, each P steps (key on the inputs, value on the outputs as a teaching
          input) followed by G blank steps;
  delay:  D blank steps;
  recall: Q queries, each a stored snippet's cue (key with a fraction of bits zeroed) for R steps,
          scored on the output neurons.

Latency. A key shown at step t reaches a neuron k synapses away only at step t + k - 1, so in a
network whose outputs are k synapses from its inputs, the first L = k - 1 steps of a query cannot see
its key (`network.key_latency`; L = 0 in `full` and `sparse`, the hidden-layer count in `layered`).
`TaskSpec.latency` is L; `score_reachable` scores only the query steps r >= L, `first_scored_step` none
before it either (with or without `score_reachable`), and `hold_for_latency` shows each snippet's key L
steps before its value (the key for L + P steps, the value on the last P), so that the value meets its
key at the outputs. A task whose scored steps could never see the key is refused by `config.validate`.

In `auto` the pattern is both key and value (`n_in == n_out`): recall is completion from a cue.
"""

from __future__ import annotations

import dataclasses
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

PROTOCOLS = ("hetero", "auto", "streaming")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Static description of a task (hashable). Field names follow docs/DESIGN.md's knobs."""

  protocol: str = "hetero"
  num_neurons: int = 64  # N
  n_in: int = 16  # key width
  n_out: int = 16  # value width
  num_snippets: int = 8  # K
  present_steps: int = 2  # P
  gap_steps: int = 0  # G
  cycles: int = 1  # C
  delay_steps: int = 2  # D
  num_queries: int = 8  # Q
  query_steps: int = 2  # R
  cue_corruption: float = 0.0  # fraction of cue bits zeroed at recall
  max_lag: int = 4  # Dmax, streaming only
  window: int = 24  # W, streaming only
  latency: int = 0  # L: steps before a key shown on the inputs reaches the outputs (network.key_latency)
  score_reachable: bool = True  # score only query steps r >= L, from which the key can reach the outputs
  # Score no query step before this one either: in `full`, 1 scores only the steps a key can have
  # reached the outputs through a hidden neuron (two synapses), not through the direct input synapses
  # alone (docs/RESULTS.md, "Past the linear store: what the wiring allows").
  first_scored_step: int = 0
  hold_for_latency: bool = False  # show each key L steps before its value (the key for L + P steps)

  @property
  def lead_steps(self) -> int:
    """Steps a snippet's key is shown before its value: L with `hold_for_latency`, else 0."""
    return self.latency if self.hold_for_latency else 0

  @property
  def show_steps(self) -> int:
    """Steps a snippet's key is shown while storing: lead + P."""
    return self.lead_steps + self.present_steps

  @property
  def first_scored_query_step(self) -> int:
    """The first step (0-based, of R) of a query that is scored: L with `score_reachable`, else 0, or
    `first_scored_step` if that is later."""
    return max(self.latency if self.score_reachable else 0, self.first_scored_step)

  @property
  def slot_steps(self) -> int:
    """Streaming: steps per snippet slot (show lead + P, gap G, query R)."""
    return self.show_steps + self.gap_steps + self.query_steps

  @property
  def store_steps(self) -> int:
    """Steps of an episode before its first query: C x K snippets of lead + P + G steps, then D."""
    return self.cycles * self.num_snippets * (self.show_steps + self.gap_steps) + self.delay_steps

  @property
  def episode_steps(self) -> int:
    """Time steps T of one episode (the window W for streaming)."""
    if self.protocol == "streaming":
      return self.window
    return self.store_steps + self.num_queries * self.query_steps


@flax.struct.dataclass
class Episode:
  """Inputs and targets of one episode (or one streaming window).

  Attributes:
    x: `[T, N]` external input of every neuron at every step (0 = none).
    target: `[T, n_out]` +-1 target of the output neurons (0 where not scored).
    score: `[T]` 1.0 on scored steps.
  """

  x: jax.Array
  target: jax.Array
  score: jax.Array


def with_snippets(spec: TaskSpec, num_snippets: int) -> TaskSpec:
  """`spec` at another K, every stored snippet queried (the evaluation's sweep over K)."""
  return dataclasses.replace(spec, num_snippets=num_snippets, num_queries=num_snippets)


def _random_bits(key: jax.Array, shape) -> jax.Array:
  return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0)


def corrupt(key: jax.Array, pattern: jax.Array, fraction: float) -> jax.Array:
  """Zeroes exactly `floor(fraction * width + 0.5)` randomly chosen bits of `pattern` `[..., width]`."""
  width = pattern.shape[-1]
  n_zero = math.floor(fraction * width + 0.5)  # halves round up
  if n_zero == 0:
    return pattern
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, pattern.shape), axis=-1), axis=-1)
  return jnp.where(ranks >= n_zero, pattern, 0.0)


def sample_snippets(key: jax.Array, spec: TaskSpec, num: int) -> tuple[jax.Array, jax.Array]:
  """`num` random snippets: keys `[num, n_in]` and values `[num, n_out]` (+-1)."""
  kk, kv = jax.random.split(key)
  keys = _random_bits(kk, (num, spec.n_in))
  if spec.protocol == "auto":
    return keys, keys
  return keys, _random_bits(kv, (num, spec.n_out))


def _store_schedule(spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
  """Snippet index whose key is shown at each storage/delay step (-1 for blank steps), and whether its
  value is taught there (the last P of its lead + P steps)."""
  one_snippet = lambda k: [k] * spec.show_steps + [-1] * spec.gap_steps  # noqa: E731
  teach_one = [False] * spec.lead_steps + [True] * spec.present_steps + [False] * spec.gap_steps
  cycle = [i for k in range(spec.num_snippets) for i in one_snippet(k)]
  taught = teach_one * spec.num_snippets * spec.cycles + [False] * spec.delay_steps
  return np.array(cycle * spec.cycles + [-1] * spec.delay_steps, np.int32), np.array(taught)


def query_score(spec: TaskSpec) -> np.ndarray:
  """`[R]` 1.0 on the steps of a query that are scored (`first_scored_query_step` on)."""
  return (np.arange(spec.query_steps) >= spec.first_scored_query_step).astype(np.float32)


def place_inputs(spec: TaskSpec, inputs: jax.Array, teach: jax.Array) -> jax.Array:
  """The external input `[T, N]` of every neuron from key bits `[T, n_in]` (the input neurons) and
  teaching bits `[T, n_out]` (the output neurons); the hidden neurons get none."""
  t = inputs.shape[0]
  rest = jnp.zeros((t, spec.num_neurons - spec.n_in - spec.n_out))
  return jnp.concatenate([inputs, teach, rest], axis=-1)


def query_order(key: jax.Array, spec: TaskSpec) -> jax.Array:
  """`[Q]` the stored position of the snippet each query of `sample_episode(key, spec)` asks for (0: the
  first snippet stored, the oldest at recall)."""
  k_order = jax.random.split(key, 3)[1]
  return jax.random.permutation(k_order, spec.num_snippets)[: spec.num_queries]


def sample_episode(key: jax.Array, spec: TaskSpec) -> Episode:
  """One `hetero` or `auto` episode (see the module docstring for the protocol)."""
  k_snip, _, k_cue = jax.random.split(key, 3)
  keys, values = sample_snippets(k_snip, spec, spec.num_snippets)
  sched, taught = _store_schedule(spec)
  shown = (sched >= 0)[:, None]
  idx = np.maximum(sched, 0)
  store_in = jnp.where(shown, keys[idx], 0.0)
  store_teach = jnp.where(taught[:, None], values[idx], 0.0)

  order = query_order(key, spec)
  cues = corrupt(k_cue, keys[order], spec.cue_corruption)
  query_in = jnp.repeat(cues, spec.query_steps, axis=0)
  query_target = jnp.repeat(values[order], spec.query_steps, axis=0)
  n_query = query_in.shape[0]

  inputs = jnp.concatenate([store_in, query_in])
  teach = jnp.concatenate([store_teach, jnp.zeros((n_query, spec.n_out))])
  target = jnp.concatenate([jnp.zeros((len(sched), spec.n_out)), query_target])
  score = jnp.concatenate([jnp.zeros(len(sched)), jnp.tile(query_score(spec), spec.num_queries)])
  return Episode(x=place_inputs(spec, inputs, teach), target=target, score=score)


@flax.struct.dataclass
class StreamPosition:
  """Where one never-reset stream is.

  Attributes:
    key: the stream's key; the snippet of slot `s` is a pure function of `(key, s)`.
    t: `[]` int32 global step of the next window's first step.
    first_slot: `[]` int32 first slot the stream saw whole; older lags are never scored.
  """

  key: jax.Array
  t: jax.Array
  first_slot: jax.Array


def pad_episodes(episodes: Episode, steps: int) -> Episode:
  """Episodes `[..., T, ...]` padded to `steps` time steps with blank, unscored steps at the end."""
  pad = steps - episodes.score.shape[-1]
  widths = lambda a, trailing: [(0, 0)] * (a.ndim - 1 - trailing) + [(0, pad)] + [(0, 0)] * trailing  # noqa: E731
  return Episode(
    x=jnp.pad(episodes.x, widths(episodes.x, 1)),
    target=jnp.pad(episodes.target, widths(episodes.target, 1)),
    score=jnp.pad(episodes.score, widths(episodes.score, 0)),
  )


def init_stream_position(key: jax.Array, spec: TaskSpec, phase: int) -> StreamPosition:
  """A new stream starting at global step `phase` (streams in a batch use different phases)."""
  t = jnp.asarray(phase, jnp.int32)
  return StreamPosition(key=key, t=t, first_slot=(t + spec.slot_steps - 1) // spec.slot_steps)


def init_stream_positions(key: jax.Array, spec: TaskSpec, batch: int, starts=None) -> StreamPosition:
  """`[B]` new streams, one key each split from `key`: stream `b` starts at global step `starts[b]`
  (`[B]` ints, or one for all; default `stream_phases`, staggered over one window)."""
  starts = stream_phases(spec, batch) if starts is None else starts
  starts = jnp.broadcast_to(jnp.asarray(starts, jnp.int32), (batch,))
  return jax.vmap(init_stream_position, in_axes=(0, None, 0))(jax.random.split(key, batch), spec, starts)


def stream_phases(spec: TaskSpec, batch: int) -> list[int]:
  """Start steps that stagger `batch` streams evenly over one window, so every window position of
  the protocol is trained at every meta step (learned_optimization's staggered truncations)."""
  return [math.floor(b * spec.window / batch) for b in range(batch)]


def _stream_step(pos: StreamPosition, t: jax.Array, spec: TaskSpec):
  """Key bits `[n_in]`, teaching bits `[n_out]`, target `[n_out]` and score `[]` at global step t."""
  slot, phase = t // spec.slot_steps, t % spec.slot_steps
  slot_key = jax.random.fold_in(pos.key, slot)
  keys, values = sample_snippets(slot_key, spec, 1)
  lag = jax.random.randint(jax.random.fold_in(slot_key, 1), (), 1, spec.max_lag + 1)
  old_slot = slot - lag
  old_keys, old_values = sample_snippets(jax.random.fold_in(pos.key, old_slot), spec, 1)
  cue = corrupt(jax.random.fold_in(slot_key, 2), old_keys[0], spec.cue_corruption)
  showing = phase < spec.show_steps
  teaching = (phase >= spec.lead_steps) & showing
  query_step = phase - spec.show_steps - spec.gap_steps
  querying = query_step >= 0
  scored = (query_step >= spec.first_scored_query_step) & (old_slot >= pos.first_slot)
  key_bits = jnp.where(showing, keys[0], jnp.where(querying, cue, 0.0))
  teach = jnp.where(teaching, values[0], 0.0)
  target = jnp.where(scored, old_values[0], 0.0)
  return key_bits, teach, target, scored.astype(jnp.float32)


def sample_stream_window(pos: StreamPosition, spec: TaskSpec) -> tuple[Episode, StreamPosition]:
  """The next `W` steps of a stream, and the stream position after them."""
  ts = pos.t + jnp.arange(spec.window, dtype=jnp.int32)
  key_bits, teach, target, score = jax.vmap(_stream_step, in_axes=(None, 0, None))(pos, ts, spec)
  episode = Episode(x=place_inputs(spec, key_bits, teach), target=target, score=score)
  return episode, pos.replace(t=pos.t + spec.window)


def sample_stream_lags(pos: StreamPosition, spec: TaskSpec) -> jax.Array:
  """`[W]` int32: the lag `d` (in slots, `1..Dmax`) of the snippet asked for in the slot of each step of
  the next window, drawn exactly as `_stream_step` draws it. The lag is asked on the slot's query steps
  only, and scored where `sample_stream_window`'s `score` is 1; it is given at every step, so that
  scored steps can be grouped by lag (a forgetting curve)."""
  ts = pos.t + jnp.arange(spec.window, dtype=jnp.int32)
  slot_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(pos.key, ts // spec.slot_steps)
  draw = lambda k: jax.random.randint(jax.random.fold_in(k, 1), (), 1, spec.max_lag + 1)  # noqa: E731
  return jax.vmap(draw)(slot_keys)
