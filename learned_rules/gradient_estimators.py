"""Meta-gradient estimators for the streaming task: truncated and full back-propagation, and evolution.

The problem every estimator solves is the same: an **episode** is a stream of `horizon` (T) steps of the
`streaming` protocol (docs/DESIGN.md) run from a fresh network state; the meta-loss is the readout loss on
its scored steps. The estimators differ in how they turn episodes into updates of `theta`:

- `truncated`, window `W < T`: one meta step per window of `W` steps; the network state is carried to the
  next window with its gradient stopped (`unroll.stream_objective`), and each stream restarts fresh after
  `T / W` windows. The streams of a batch are staggered in their position within the episode (stream `b`
  starts at window `b mod (T / W)`), so every meta step trains early and late windows alike
  (learned_optimization's staggered truncations) instead of all streams starting fresh on the same step.
- `truncated` with `W = T` is **full back-propagation through the episode**: every meta step starts every
  stream fresh and differentiates through all `T` steps, the initial states included.
- `open_es`: OpenAI-ES (`evosax.algorithms.Open_ES`, antithetic) on the whole-episode loss, forward passes
  only; every member of a generation runs the same streams.
- `pes`: persistent ES (`evosax.algorithms.PersistentES`, Vicol et al. 2021), unbiased under truncation:
  each population member carries its own network state across windows of `W` steps, its perturbations
  accumulate until the episode of `T` steps ends, then every stream restarts fresh.

Each estimator is a pair of pure functions made by `make_estimator`: `init(key, theta, topo)` and a jitted
`step(state, topo) -> (state, metrics)`; `theta_of(state)` reads the current meta-parameters. evosax
minimises its fitness, here the loss. Shapes: `B` streams per meta step, `P` population members.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import evosax.algorithms
import flax
import jax
import jax.numpy as jnp
import optax

from learned_rules import meta_train, network, rules, tasks, unroll

KINDS = ("truncated", "open_es", "pes")


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
  """One estimator (hashable). `window` is W for `truncated` and `pes` (ignored by `open_es`, which
  always runs the whole episode); `population` and `std` are for the two ES kinds only."""

  name: str
  kind: str
  window: int
  learning_rate: float
  batch: int  # B streams per meta step (per population member for the ES kinds)
  population: int = 0
  std: float = 0.0
  clip_norm: float = 1.0

  def windows_per_episode(self, horizon: int) -> int:
    return 1 if self.kind == "open_es" else horizon // self.window

  def stream_steps(self, horizon: int) -> int:
    """Network steps simulated by one meta step, over every stream and population member."""
    steps = horizon if self.kind == "open_es" else self.window
    return steps * self.batch * max(self.population, 1)


def check(spec: EstimatorSpec, horizon: int) -> None:
  """Raises ValueError naming the offending field if `spec` cannot run episodes of `horizon` steps."""
  if spec.kind not in KINDS:
    raise ValueError(f"kind: unknown estimator {spec.kind!r}; one of {KINDS}")
  if spec.kind != "open_es" and (spec.window < 1 or horizon % spec.window):
    raise ValueError(f"window: {spec.window} must divide the horizon {horizon}")
  if spec.kind != "truncated" and (spec.population < 2 or spec.population % 2 or spec.std <= 0):
    raise ValueError("population: ES needs an even population >= 2 and std > 0")
  if spec.batch < 1 or spec.learning_rate <= 0:
    raise ValueError("batch, learning_rate: must be positive")


@flax.struct.dataclass
class EpisodeCarry:
  """Streams in the middle of their episodes: `streams` (`[B, ...]` states and positions) and
  `window` `[B]` int32, the index of each stream's next window in its episode (0: restart it fresh)."""

  streams: unroll.StreamCarry
  window: jax.Array


class Estimator(NamedTuple):
  spec: EstimatorSpec
  init: Callable[[jax.Array, rules.Theta, network.Topology], Any]
  step: Callable[[Any, network.Topology], tuple[Any, dict]]
  theta_of: Callable[[Any], rules.Theta]


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


class TruncatedState(NamedTuple):
  step: jax.Array
  theta: rules.Theta
  opt_state: optax.OptState
  carry: EpisodeCarry
  key: jax.Array


def _make_truncated(spec: EstimatorSpec, problem: unroll.Problem, horizon: int) -> Estimator:
  problem = window_problem(problem, spec.window)
  optimizer = _optimizer(spec)

  def init(key, theta, topo):
    k_carry, k_steps = jax.random.split(key)
    carry = initial_episode_carry(theta, topo, problem, k_carry, spec.batch, horizon)
    return TruncatedState(jnp.zeros((), jnp.int32), theta, optimizer.init(theta), carry, k_steps)

  def step(state: TruncatedState, topo):
    grad_fn = jax.value_and_grad(truncated_objective, has_aux=True)
    key = jax.random.fold_in(state.key, state.step)
    (_, (metrics, carry)), grads = grad_fn(state.theta, topo, problem, state.carry, key, horizon)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
    return TruncatedState(state.step + 1, theta, opt_state, carry, state.key), metrics

  return Estimator(spec, jax.jit(init), jax.jit(step, donate_argnums=0), lambda s: s.theta)


def _strong(tree):
  """`tree` with weakly typed leaves (evosax starts its counters as Python numbers) made strong, so
  the first step's input has the same types as every later step's and `step` compiles once."""
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)), tree)


class ESState(NamedTuple):
  step: jax.Array
  es_state: Any  # evosax's state: the mean (ravelled theta), optimizer state, PES's perturbations
  streams: unroll.StreamCarry | None  # PES: `[P, B, ...]` each member's own streams
  key: jax.Array


def _optimizer(spec: EstimatorSpec) -> optax.GradientTransformation:
  """The trainer's optimizer (`meta_train.make_optimizer`) at this estimator's settings."""
  return meta_train.make_optimizer(spec.learning_rate, spec.clip_norm)


def _make_open_es(spec: EstimatorSpec, problem: unroll.Problem, horizon: int, template) -> Estimator:
  es = evosax.algorithms.Open_ES(
    spec.population, template, optimizer=_optimizer(spec), std_schedule=optax.constant_schedule(spec.std)
  )
  params = es.default_params

  def init(key, theta, topo):
    del topo
    k_es, k_steps = jax.random.split(key)
    return ESState(jnp.zeros((), jnp.int32), _strong(es.init(k_es, theta, params)), None, k_steps)

  def step(state: ESState, topo):
    k_ask, k_streams = jax.random.split(jax.random.fold_in(state.key, state.step))
    population, es_state = es.ask(k_ask, state.es_state, params)
    # Every member runs the same streams (common random numbers): the fitness differences are the rule's.
    run = lambda th: episode_objective(th, topo, problem, k_streams, spec.batch, horizon)  # noqa: E731
    fitness, metrics = jax.vmap(run)(population)
    es_state = _strong(es.tell(k_ask, population, fitness, es_state, params)[0])
    return ESState(state.step + 1, es_state, None, state.key), jax.tree.map(jnp.mean, metrics)

  return Estimator(spec, jax.jit(init), jax.jit(step, donate_argnums=0), lambda s: es.get_mean(s.es_state))


def _make_pes(spec: EstimatorSpec, problem: unroll.Problem, horizon: int, template) -> Estimator:
  es = evosax.algorithms.PersistentES(
    spec.population, template, optimizer=_optimizer(spec), std_schedule=optax.constant_schedule(spec.std)
  )
  params = es.default_params.replace(T=horizon, K=spec.window)
  problem = window_problem(problem, spec.window)
  n_windows = horizon // spec.window

  def init(key, theta, topo):
    del topo
    k_es, k_steps = jax.random.split(key)
    return ESState(jnp.zeros((), jnp.int32), _strong(es.init(k_es, theta, params)), None, k_steps)

  def step(state: ESState, topo):
    key = jax.random.fold_in(state.key, state.step)
    k_ask, k_streams = jax.random.split(key)
    population, es_state = es.ask(k_ask, state.es_state, params)
    # At an episode's first window every member restarts the same fresh streams, from its own initial
    # states; evosax resets its accumulated perturbations at the same point (`T / K` tells).
    restart = state.step % n_windows == 0
    member_fresh = lambda th: fresh_streams(th, topo, problem, k_streams, spec.batch)  # noqa: E731
    fresh = jax.vmap(member_fresh)(population)
    streams = jax.tree.map(lambda f, c: jnp.where(restart, f, c), fresh, state.streams)
    run = lambda th, s: unroll.stream_objective(th, topo, problem, s)  # noqa: E731
    fitness, (metrics, streams) = jax.vmap(run)(population, streams)
    es_state = _strong(es.tell(k_ask, population, fitness, es_state, params)[0])
    return ESState(state.step + 1, es_state, streams, state.key), jax.tree.map(jnp.mean, metrics)

  def init_with_streams(key, theta, topo):
    # The carried streams need a fixed structure for jit: start them at the first window's fresh ones.
    state = init(key, theta, topo)
    pop = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (spec.population, *leaf.shape)), theta)
    streams = jax.vmap(lambda th: fresh_streams(th, topo, problem, key, spec.batch))(pop)
    return state._replace(streams=streams)

  return Estimator(
    spec, jax.jit(init_with_streams), jax.jit(step, donate_argnums=0), lambda s: es.get_mean(s.es_state)
  )


@functools.cache
def make_estimator(spec: EstimatorSpec, problem: unroll.Problem, horizon: int) -> Estimator:
  """The estimator of `spec` on episodes of `horizon` steps of `problem` (a `streaming` problem; its
  own window is ignored). Cached: the same arguments give the same (already compiled) functions."""
  check(spec, horizon)
  theta_template = rules.init_theta(jax.random.PRNGKey(0), problem.rule)  # evosax ravels its structure
  if problem.task.protocol != "streaming":
    raise ValueError(f"estimators run the streaming protocol, not {problem.task.protocol!r}")
  if spec.kind == "truncated":
    return _make_truncated(spec, problem, horizon)
  if spec.kind == "open_es":
    return _make_open_es(spec, problem, horizon, theta_template)
  return _make_pes(spec, problem, horizon, theta_template)
