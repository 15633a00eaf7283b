"""Meta-gradient estimators: every way of turning a batch of experience into a gradient in `theta`.

One small interface (learned_optimization's gradient estimator): `make_estimator(spec, problem, batch)`
returns an `Estimator` of two pure functions,

  init(key, theta, topo) -> state                         what it carries between meta steps (or None)
  grad(theta, topo, state, key) -> (grads, metrics, state) a meta-gradient from one batch, drawn from key

The learner (`learner.py`) applies the gradient with the optimizer and the non-finite guard; the loop
(`meta_train.py`) owns checkpoints, resume, preemption, progress and metrics for every estimator. The
kinds (`EstimatorSpec.kind`; docs/DESIGN.md, "Meta-training"):

- `truncated`, on the episode protocols (`hetero`, `auto`): back-propagation through whole fresh episodes
  (the window is the episode: full back-propagation through time).
- `truncated`, on `streaming` with `horizon == 0`: never-reset streams, one meta step per window of the
  task's `window` steps, the carried state cut from the gradient between windows.
- `truncated`, on `streaming` with `horizon` T: streams restart fresh every T steps (an episode); one
  meta step per window of W steps (`window`, dividing T); `W == T` is full back-propagation through the
  episode, the initial states included. The streams of a batch are staggered in their position within
  the episode (stream `b` starts at window `b mod (T / W)`), so every meta step trains early and late
  windows alike (learned_optimization's staggered truncations).
- `open_es`: OpenAI-ES with antithetic pairs on the loss of whole episodes (of `horizon` steps on
  `streaming`), forward passes only; every member of a generation runs the same experience.
- `pes`: persistent ES (Vicol et al. 2021) on `streaming`, unbiased under truncation: each member carries
  its own network state across windows of W steps and its perturbations accumulate until the episode of
  T steps ends, then every stream restarts fresh.

Shapes: `B` streams (or episodes) per meta step, per member for the ES kinds; `P` population members.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from learned_rules import network, rules, tasks, unroll

KINDS = ("truncated", "open_es", "pes")


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
  """One estimator (hashable). `window` W: steps per meta step on `streaming` (0: the task's own);
  `horizon` T: steps of a `streaming` episode, after which streams restart fresh (0: never; `open_es`
  and `pes` need one); `population` and `std` for the ES kinds only."""

  kind: str = "truncated"
  window: int = 0
  horizon: int = 0
  population: int = 0
  std: float = 0.0

  def window_of(self, task: tasks.TaskSpec) -> int:
    return self.window or (self.horizon if self.kind == "open_es" else task.window)

  def stream_steps(self, task: tasks.TaskSpec, batch: int) -> int:
    """Network steps simulated by one meta step, over every stream and population member."""
    steps = self.horizon if self.kind == "open_es" else self.window_of(task)
    return steps * batch * max(self.population, 1)


def check(spec: EstimatorSpec, task: tasks.TaskSpec) -> None:
  """Raises ValueError naming the offending field (`kind`, `window`, ...) if `spec` cannot train `task`."""
  if spec.kind not in KINDS:
    raise ValueError(f"kind: unknown estimator {spec.kind!r}; one of {', '.join(KINDS)}")
  streaming = task.protocol == "streaming"
  if not streaming and (spec.kind == "pes" or spec.window or spec.horizon):
    raise ValueError("kind: on episodes only `truncated` and `open_es` run, with no window or horizon")
  if streaming and spec.kind != "truncated" and spec.horizon < 1:
    raise ValueError(f"horizon: {spec.kind} needs episodes, a horizon >= 1")
  if streaming and spec.horizon and spec.kind != "open_es" and spec.horizon % spec.window_of(task):
    raise ValueError(f"window: {spec.window_of(task)} must divide the horizon {spec.horizon}")
  if spec.kind != "truncated" and (spec.population < 2 or spec.population % 2 or spec.std <= 0):
    raise ValueError("population: ES needs an even population >= 2 and std > 0")


class Estimator(NamedTuple):
  spec: EstimatorSpec
  init: Callable[[jax.Array, rules.Theta, network.Topology], Any]
  grad: Callable[[rules.Theta, network.Topology, Any, jax.Array], tuple[rules.Theta, dict, Any]]


@flax.struct.dataclass
class EpisodeCarry:
  """Streams in the middle of their episodes: `streams` (`[B, ...]` states and positions) and
  `window` `[B]` int32, the index of each stream's next window in its episode (0: restart it fresh)."""

  streams: unroll.StreamCarry
  window: jax.Array


def window_problem(problem: unroll.Problem, window: int) -> unroll.Problem:
  """`problem` with its streaming windows `window` steps long."""
  return dataclasses.replace(problem, task=dataclasses.replace(problem.task, window=window))


def fresh_streams(theta, topo, problem: unroll.Problem, key: jax.Array, batch: int, start=0):
  """`batch` new streams from fresh network states; stream `b` at global step `start[b]` (`[B]` int, or
  a scalar for all), so nothing shown before it is ever asked for."""
  k_state, k_stream = jax.random.split(key)
  positions = tasks.init_stream_positions(k_stream, problem.task, batch, start)
  return unroll.StreamCarry(unroll.init_batch_states(theta, topo, problem, k_state, batch), positions)


def episode_objective(theta, topo, problem: unroll.Problem, key: jax.Array, batch: int, horizon: int):
  """Loss and recall metrics of `batch` fresh streams run for one whole episode of `horizon` steps,
  the gradient through every step and the initial states. Held-out evaluation uses it too."""
  problem = window_problem(problem, horizon)
  loss, (metrics, _) = unroll.stream_objective(
    theta, topo, problem, fresh_streams(theta, topo, problem, key, batch)
  )
  return loss, metrics


def _select(restart: jax.Array, fresh, carried):
  """Leaves of `fresh` where `restart` `[B]` is true, of `carried` elsewhere (leaves `[B, ...]`)."""
  pick = lambda f, c: jnp.where(restart.reshape(restart.shape + (1,) * (f.ndim - 1)), f, c)  # noqa: E731
  return jax.tree.map(pick, fresh, carried)


def truncated_objective(
  theta, topo, problem: unroll.Problem, carry: EpisodeCarry, key: jax.Array, horizon: int
):
  """Loss of the next window of every stream, restarting fresh (from `key`) the streams at window 0.

  The restart happens inside the objective, so a fresh stream's gradient reaches the initial states;
  with `problem.task.window == horizon` this is exactly `episode_objective`. Returns
  `(loss, (metrics, carry))`.
  """
  n_windows = horizon // problem.task.window
  fresh = fresh_streams(theta, topo, problem, key, carry.window.shape[0])
  streams = _select(carry.window == 0, fresh, jax.lax.stop_gradient(carry.streams))
  loss, (metrics, streams) = unroll.stream_objective(theta, topo, problem, streams)
  return loss, (metrics, EpisodeCarry(streams, (carry.window + 1) % n_windows))


def initial_episode_carry(theta, topo, problem: unroll.Problem, key: jax.Array, batch: int, horizon: int):
  """Streams staggered over the episode: stream `b` starts fresh at window `b mod (T / W)` (so its first
  episode is shorter; every later one is whole)."""
  window = problem.task.window
  first = jnp.arange(batch, dtype=jnp.int32) % (horizon // window)
  return EpisodeCarry(fresh_streams(theta, topo, problem, key, batch, first * window), first)


def _make_truncated(spec: EstimatorSpec, problem: unroll.Problem, batch: int) -> Estimator:
  if problem.task.protocol != "streaming":

    def episodes_grad(theta, topo, state, key):
      grad_fn = jax.value_and_grad(unroll.episode_objective, has_aux=True)
      (_, metrics), grads = grad_fn(theta, topo, problem, key, batch)
      return grads, metrics, state

    return Estimator(spec, lambda key, theta, topo: None, episodes_grad)
  if not spec.horizon:  # never-reset streams

    def init_streams(key, theta, topo):
      return unroll.init_stream_carry(theta, topo, problem, key, batch)

    def streams_grad(theta, topo, carry, key):
      del key  # the streams carry their own randomness
      grad_fn = jax.value_and_grad(unroll.stream_objective, has_aux=True)
      (_, (metrics, carry)), grads = grad_fn(theta, topo, problem, carry)
      return grads, metrics, carry

    return Estimator(spec, init_streams, streams_grad)
  windowed = window_problem(problem, spec.window_of(problem.task))

  def init_episodes(key, theta, topo):
    return initial_episode_carry(theta, topo, windowed, key, batch, spec.horizon)

  def episodes_window_grad(theta, topo, carry, key):
    grad_fn = jax.value_and_grad(truncated_objective, has_aux=True)
    (_, (metrics, carry)), grads = grad_fn(theta, topo, windowed, carry, key, spec.horizon)
    return grads, metrics, carry

  return Estimator(spec, init_episodes, episodes_window_grad)


def _antithetic(key: jax.Array, theta: rules.Theta, population: int, std: float):
  """`(perturbations [P, D], unravel)`: `P / 2` Gaussian draws of std `std` and their negatives."""
  flat, unravel = ravel_pytree(theta)
  half = std * jax.random.normal(key, (population // 2, flat.shape[0]), flat.dtype)
  return jnp.concatenate([half, -half]), unravel


def _members(theta: rules.Theta, eps: jax.Array, unravel) -> rules.Theta:
  """The population's theta, leaves `[P, ...]`: theta plus each row of `eps`."""
  flat, _ = ravel_pytree(theta)
  return jax.vmap(unravel)(flat[None] + eps)


def _es_gradient(weights: jax.Array, fitness: jax.Array, scale: float, unravel) -> rules.Theta:
  """`sum_i fitness_i weights_i / scale` as a theta; the mean fitness is subtracted first (a baseline:
  with antithetic pairs it changes nothing in expectation and lowers the variance)."""
  centred = fitness - jnp.mean(fitness)
  return unravel(centred @ weights / scale)


def _mean_metrics(metrics: dict) -> dict:
  return jax.tree.map(jnp.mean, metrics)


def _make_open_es(spec: EstimatorSpec, problem: unroll.Problem, batch: int) -> Estimator:
  if problem.task.protocol == "streaming":

    def run(theta, topo, key):
      return episode_objective(theta, topo, problem, key, batch, spec.horizon)

  else:

    def run(theta, topo, key):
      return unroll.episode_objective(theta, topo, problem, key, batch)

  def grad(theta, topo, state, key):
    k_eps, k_run = jax.random.split(key)
    eps, unravel = _antithetic(k_eps, theta, spec.population, spec.std)
    # Every member runs the same experience (common random numbers): the fitness differences are the rule's.
    fitness, metrics = jax.vmap(run, in_axes=(0, None, None))(_members(theta, eps, unravel), topo, k_run)
    # E[L(theta + eps) eps] / std^2 estimates the gradient of the smoothed loss.
    grads = _es_gradient(eps, fitness, spec.population * spec.std**2, unravel)
    return grads, _mean_metrics(metrics), state

  return Estimator(spec, lambda key, theta, topo: None, grad)


class PESState(NamedTuple):
  """`next_window` `[]` int32, the next window of the (shared) episode; `xi` `[P, D]` each member's
  perturbations accumulated over the episode; `streams` `[P, B, ...]` each member's own streams."""

  next_window: jax.Array
  xi: jax.Array
  streams: unroll.StreamCarry


def _make_pes(spec: EstimatorSpec, problem: unroll.Problem, batch: int) -> Estimator:
  problem = window_problem(problem, spec.window_of(problem.task))
  n_windows = spec.horizon // problem.task.window

  def init(key, theta, topo):
    flat, _ = ravel_pytree(theta)
    # The carried streams need a fixed structure for jit: start them as the first window's fresh ones.
    one = fresh_streams(theta, topo, problem, key, batch)
    streams = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (spec.population, *leaf.shape)), one)
    xi = jnp.zeros((spec.population, flat.shape[0]), flat.dtype)
    return PESState(jnp.zeros((), jnp.int32), xi, streams)

  def grad(theta, topo, state: PESState, key):
    k_eps, k_streams = jax.random.split(key)
    eps, unravel = _antithetic(k_eps, theta, spec.population, spec.std)
    members = _members(theta, eps, unravel)
    # At an episode's first window every member restarts the same fresh streams, from its own initial
    # states, and its accumulated perturbations restart from this window's.
    restart = state.next_window == 0
    fresh = jax.vmap(lambda th: fresh_streams(th, topo, problem, k_streams, batch))(members)
    streams = jax.tree.map(lambda f, c: jnp.where(restart, f, c), fresh, state.streams)
    xi = jnp.where(restart, eps, state.xi + eps)
    run = lambda th, s: unroll.stream_objective(th, topo, problem, s)  # noqa: E731
    fitness, (metrics, streams) = jax.vmap(run)(members, streams)
    grads = _es_gradient(xi, fitness, spec.population * spec.std**2, unravel)
    return grads, _mean_metrics(metrics), PESState((state.next_window + 1) % n_windows, xi, streams)

  return Estimator(spec, init, grad)


def make_estimator(spec: EstimatorSpec, problem: unroll.Problem, batch: int) -> Estimator:
  """The estimator of `spec` on `problem` with `batch` episodes or streams per meta step (per member).

  Raises ValueError naming the field if `spec` cannot train `problem`'s task (`check`).
  """
  check(spec, problem.task)
  make = {"truncated": _make_truncated, "open_es": _make_open_es, "pes": _make_pes}[spec.kind]
  return make(spec, problem, batch)
