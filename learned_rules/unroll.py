"""`lax.scan` unrolls of the network over an episode or a streaming window, and the meta-loss.

`Problem` bundles everything static about one meta-training problem (rule sizes, task, loss, how to
compute the step), so jitted functions close over a single hashable object. The topology is passed as
an argument instead: its mask is an array and should not be baked into the program as a constant.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp

from learned_rules import network, rules, sharding, tasks

# What the meta-gradient keeps from the forward pass of an unroll (docs/PERFORMANCE.md measures each):
#   none     everything autodiff saves: the carried states plus the per-neuron values of every step (the
#            synapse update's backward pass recomputes its own hidden layer in any case);
#   step     only the carried states of every step; the backward pass reruns each step;
#   neurons  the carried states and the per-neuron values of every step, nothing of synapse size;
#   nested   the carried states every ~sqrt(T) steps only, rerunning each chunk of steps in the backward
#            pass: memory grows with sqrt(T) instead of T, for one more forward pass.
REMAT_POLICIES = ("none", "step", "neurons", "nested")
DEFAULT_REMAT = "step"  # measured: as fast as "neurons" with less memory (docs/PERFORMANCE.md)


@dataclasses.dataclass(frozen=True)
class Problem:
  """Static description of one meta-training problem."""

  rule: rules.RuleSpec
  task: tasks.TaskSpec | None = None  # None: a network that is only run (`memory.PlasticMemory`)
  init_noise: float = 0.1
  loss: str = "mse"
  remat: str = DEFAULT_REMAT  # what the meta-gradient stores per step; one of REMAT_POLICIES
  # The device mesh the batch and the synapses are split over (`sharding.py`), or None: no sharding
  # constraints (one device, or whatever the inputs' shardings give).
  mesh: jax.sharding.Mesh | None = None

  def __post_init__(self):
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat: unknown policy {self.remat!r}; one of {REMAT_POLICIES}")


@flax.struct.dataclass
class StreamCarry:
  """What a batch of never-reset streams carries between windows: `[B, ...]` states, positions."""

  net_state: network.NetState
  position: tasks.StreamPosition


def _chunk_size(num_steps: int) -> int:
  """The largest divisor of `num_steps` that is at most `ceil(sqrt(num_steps))`."""
  limit = math.isqrt(num_steps - 1) + 1 if num_steps > 1 else 1
  return max(c for c in range(1, limit + 1) if num_steps % c == 0)


class Step(NamedTuple):
  """One step of an unroll, as its `record` hook sees it: the state `before` it, the external input
  `x` `[N]`, the state `after` it and the step's output (the readouts)."""

  before: network.NetState
  x: jax.Array
  after: network.NetState
  out: network.StepOutput


def readouts(step: Step) -> jax.Array:
  """What `unroll` records by default at each step: the output neurons' readouts `[n_out]`."""
  return step.out.readout


def state_bounds(step: Step) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A record for `unroll`: the readouts, and the largest absolute body and synapse entry after the step."""
  return step.out.readout, *network.max_abs_state(step.after)


def unroll(
  theta: rules.Theta,
  topo: network.Topology,
  problem: Problem,
  net_state: network.NetState,
  xs: jax.Array,
  record: Callable = readouts,
  length: jax.Array | None = None,
) -> tuple[network.NetState, Any]:
  """Runs the network over the inputs `xs` `[T, N]`: the one scan of `network_step` in the library.

  Returns the final state and what `record(Step(before, x, after, out))` gives at each step, stacked over T
  (default: the readouts `[T, n_out]`). `problem.remat` chooses what a gradient through the unroll
  stores (see `REMAT_POLICIES`); the numbers are the same under every policy. With `length` (a traced
  step count <= T, for padded episodes: another length compiles nothing), only the first `length`
  steps run and later records are zeros; that form is forward-only.
  """

  def body(state, x):
    after, out = network.network_step(theta, topo, problem.rule, state, x)
    # Under `_batched_unroll`'s vmap the batch axis is added to these specs (`spmd_axis_name`).
    after = sharding.constrain_net_state(after, problem.mesh, batched=False)
    return after, record(Step(state, x, after, out))

  if length is not None:
    return _unroll_for(body, net_state, xs, length)
  if problem.remat == "none":
    return jax.lax.scan(body, net_state, xs)
  if problem.remat == "step":
    return jax.lax.scan(jax.checkpoint(body), net_state, xs)
  step = jax.checkpoint(body, policy=jax.checkpoint_policies.save_only_these_names(rules.NEURON_VALUES))
  if problem.remat == "neurons":
    return jax.lax.scan(step, net_state, xs)
  # nested: an outer scan over chunks of ~sqrt(T) steps whose bodies (inner scans) are rematerialised.
  num_steps = xs.shape[0]
  chunk = _chunk_size(num_steps)

  @jax.checkpoint
  def run_chunk(state, xs_chunk):
    return jax.lax.scan(step, state, xs_chunk)

  state, recorded = jax.lax.scan(run_chunk, net_state, xs.reshape(num_steps // chunk, chunk, *xs.shape[1:]))
  return state, jax.tree.map(lambda r: r.reshape(num_steps, *r.shape[2:]), recorded)


def _unroll_for(body, net_state, xs: jax.Array, length: jax.Array):
  """`body` over the first `length` steps of `xs` (a loop with a run-time trip count); the records of
  the steps not run are zeros."""
  shapes = jax.eval_shape(body, net_state, xs[0])[1]
  recorded = jax.tree.map(lambda s: jnp.zeros((xs.shape[0], *s.shape), s.dtype), shapes)

  def step(t, carry):
    state, recorded = carry
    state, out = body(state, xs[t])
    return state, jax.tree.map(lambda r, o: r.at[t].set(o), recorded, out)

  return jax.lax.fori_loop(0, length, step, (net_state, recorded))


def _scored_mean(values: jax.Array, score: jax.Array) -> jax.Array:
  """Mean of `values` `[..., T, n_out]` over scored steps `score` `[..., T]` and bits."""
  weights = jnp.broadcast_to(score[..., None], values.shape)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def readout_loss(readout: jax.Array, episode: tasks.Episode, loss: str) -> jax.Array:
  """MSE (or logistic loss) of readouts `[..., T, n_out]` against the +-1 targets on scored steps."""
  if loss == "logistic":
    per_bit = jax.nn.softplus(-episode.target * readout)
  else:
    per_bit = jnp.square(readout - episode.target)
  return _scored_mean(per_bit, episode.score)


def bit_credit(readout: jax.Array, target: jax.Array) -> jax.Array:
  """Credit of every bit of `sign(readout)` against the +-1 `target` (same shape): 1 right, 0 wrong,
  and 0.5 for a readout of exactly 0, the expectation of a fair coin's tie-break. The one tie
  convention of every score in the project (integer Hebbian readouts tie on a few percent of bits)."""
  return (readout * target > 0).astype(jnp.float32) + 0.5 * (readout == 0).astype(jnp.float32)


def recall_metrics(readout: jax.Array, episode: tasks.Episode) -> dict[str, jax.Array]:
  """Bit accuracy of `sign(readout)` (a readout of 0 is half a bit, `bit_credit`) and the fraction of
  scored steps recalled perfectly (every bit right; a tie is not)."""
  correct = bit_credit(readout, episode.target)
  perfect = jnp.all(correct == 1.0, axis=-1).astype(jnp.float32)
  return {
    "bit_accuracy": _scored_mean(correct, episode.score),
    "perfect_recall": jnp.sum(perfect * episode.score) / jnp.maximum(jnp.sum(episode.score), 1.0),
  }


def step_bit_accuracy(readout: jax.Array, episode: tasks.Episode) -> jax.Array:
  """Bit accuracy of every step of readouts `[..., T, n_out]` (ties half, `bit_credit`), `[..., T]`,
  NaN on unscored steps: what a bootstrap over queries resamples (`evaluation.with_interval`)."""
  per_step = jnp.mean(bit_credit(readout, episode.target), axis=-1)
  return jnp.where(episode.score > 0, per_step, jnp.nan)


def init_batch_states(theta, topo, problem: Problem, key: jax.Array, batch: int) -> network.NetState:
  """`[B, ...]` initial network states, each with its own noise."""
  keys = jax.random.split(key, batch)
  states = jax.vmap(network.init_net_state, in_axes=(None, None, 0, None))(
    theta, topo, keys, problem.init_noise
  )
  return sharding.constrain_net_state(states, problem.mesh)


def _split_batch(problem: Problem, tree):
  """`tree` (leaves `[B, ...]`) split over the mesh's batch axis."""
  return sharding.constrain(tree, problem.mesh, lambda _: sharding.P(sharding.BATCH))


def _batched_unroll(theta, topo, problem, states, episodes):
  axis = sharding.BATCH if problem.mesh is not None else None
  run = jax.vmap(unroll, in_axes=(None, None, None, 0, 0), spmd_axis_name=axis)
  return run(theta, topo, problem, states, _split_batch(problem, episodes).x)


def episode_objective(
  theta: rules.Theta, topo: network.Topology, problem: Problem, key: jax.Array, batch: int
) -> tuple[jax.Array, dict]:
  """Meta-loss over `batch` fresh episodes drawn from `key`, and recall metrics.

  The loss is differentiable in `theta`; metrics are computed on the same readouts.
  """
  k_ep, k_state = jax.random.split(key)
  episodes = jax.vmap(tasks.sample_episode, in_axes=(0, None))(jax.random.split(k_ep, batch), problem.task)
  episodes = _split_batch(problem, episodes)  # each device draws only its own episodes
  states = init_batch_states(theta, topo, problem, k_state, batch)
  _, readout = _batched_unroll(theta, topo, problem, states, episodes)
  loss = readout_loss(readout, episodes, problem.loss)
  return loss, {"loss": loss, **recall_metrics(readout, episodes)}


def init_stream_carry(theta, topo, problem: Problem, key: jax.Array, batch: int) -> StreamCarry:
  """A batch of fresh streams, staggered in phase over one window."""
  k_state, k_stream = jax.random.split(key)
  positions = tasks.init_stream_positions(k_stream, problem.task, batch)
  return StreamCarry(
    init_batch_states(theta, topo, problem, k_state, batch), _split_batch(problem, positions)
  )


def stream_objective(
  theta: rules.Theta, topo: network.Topology, problem: Problem, carry: StreamCarry
) -> tuple[jax.Array, tuple[dict, StreamCarry]]:
  """Meta-loss over the next window of every stream; returns the carry for the next window.

  The carried state is cut from the gradient between windows (truncated back-propagation).
  """
  episodes, positions = jax.vmap(tasks.sample_stream_window, in_axes=(0, None))(carry.position, problem.task)
  states, readout = _batched_unroll(theta, topo, problem, carry.net_state, episodes)
  loss = readout_loss(readout, episodes, problem.loss)
  metrics = {"loss": loss, **recall_metrics(readout, episodes)}
  carry = StreamCarry(jax.lax.stop_gradient(states), _split_batch(problem, positions))
  return loss, (metrics, carry)
