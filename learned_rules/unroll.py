"""`lax.scan` unrolls of the network over an episode or a streaming window, and the meta-loss.

`Problem` bundles everything static about one meta-training problem (rule sizes, task, loss, how to
compute the step), so jitted functions close over a single hashable object. The topology is passed as
an argument instead: its mask is an array and should not be baked into the program as a constant.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp

from learned_rules import network, rules, tasks


@dataclasses.dataclass(frozen=True)
class Problem:
  """Static description of one meta-training problem."""

  rule: rules.RuleSpec
  task: tasks.TaskSpec
  init_noise: float = 0.1
  loss: str = "mse"
  fast_synapse: bool = True  # split-first-layer synapse update (same numbers, faster)
  remat: bool = True  # jax.checkpoint on the scan body: store only the carried states per step


@flax.struct.dataclass
class StreamCarry:
  """What a batch of never-reset streams carries between windows: `[B, ...]` states, positions."""

  net_state: network.NetState
  position: tasks.StreamPosition


def unroll(
  theta: rules.Theta,
  topo: network.Topology,
  problem: Problem,
  net_state: network.NetState,
  xs: jax.Array,
) -> tuple[network.NetState, jax.Array]:
  """Runs the network over the inputs `xs` `[T, N]`; returns the final state and readouts `[T, n_out]`."""

  def body(state, x):
    state, out = network.network_step(theta, topo, problem.rule, state, x, problem.fast_synapse)
    return state, out.readout

  if problem.remat:
    body = jax.checkpoint(body)
  return jax.lax.scan(body, net_state, xs)


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


def recall_metrics(readout: jax.Array, episode: tasks.Episode) -> dict[str, jax.Array]:
  """Bit accuracy of `sign(readout)` and the fraction of scored steps recalled perfectly."""
  correct = (readout * episode.target > 0).astype(jnp.float32)
  perfect = jnp.all(correct > 0, axis=-1).astype(jnp.float32)
  return {
    "bit_accuracy": _scored_mean(correct, episode.score),
    "perfect_recall": jnp.sum(perfect * episode.score) / jnp.maximum(jnp.sum(episode.score), 1.0),
  }


def init_batch_states(theta, topo, problem: Problem, key: jax.Array, batch: int) -> network.NetState:
  """`[B, ...]` initial network states, each with its own noise."""
  keys = jax.random.split(key, batch)
  return jax.vmap(network.init_net_state, in_axes=(None, None, 0, None))(
    theta, topo, keys, problem.init_noise
  )


def _batched_unroll(theta, topo, problem, states, episodes):
  return jax.vmap(unroll, in_axes=(None, None, None, 0, 0))(theta, topo, problem, states, episodes.x)


def episode_objective(
  theta: rules.Theta, topo: network.Topology, problem: Problem, key: jax.Array, batch: int
) -> tuple[jax.Array, dict]:
  """Meta-loss over `batch` fresh episodes drawn from `key`, and recall metrics.

  The loss is differentiable in `theta`; metrics are computed on the same readouts.
  """
  k_ep, k_state = jax.random.split(key)
  episodes = jax.vmap(tasks.sample_episode, in_axes=(0, None))(jax.random.split(k_ep, batch), problem.task)
  states = init_batch_states(theta, topo, problem, k_state, batch)
  _, readout = _batched_unroll(theta, topo, problem, states, episodes)
  loss = readout_loss(readout, episodes, problem.loss)
  return loss, {"loss": loss, **recall_metrics(readout, episodes)}


def init_stream_carry(theta, topo, problem: Problem, key: jax.Array, batch: int) -> StreamCarry:
  """A batch of fresh streams, staggered in phase over one window."""
  k_state, k_stream = jax.random.split(key)
  phases = jnp.asarray(tasks.stream_phases(problem.task, batch), jnp.int32)
  positions = jax.vmap(tasks.init_stream_position, in_axes=(0, None, 0))(
    jax.random.split(k_stream, batch), problem.task, phases
  )
  return StreamCarry(init_batch_states(theta, topo, problem, k_state, batch), positions)


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
  return loss, (metrics, StreamCarry(jax.lax.stop_gradient(states), positions))
