"""What a learned synapse rule does: its increment as a function of pre- and post-synaptic input, in the
states the network really goes through.

In a step of the network (`network.network_step`), the synapse update sees the activations the neurons
show after their body update: neuron i, with body `b_i` before the step, message `m_i` (what its synapses
carried this step) and external input `x_i` (what the task clamps: +-1 for a bit, 0 for none), shows

  a_i(x_i) = tanh(b'_i[:Da] + w_in x_i),   b'_i = body_update(b_i, m_i, x_i).

The probe runs the rule's own network on held-out episodes of its own task (`record_contexts`: the
episodes, initial states and network steps its evaluation uses) and records, at every step, every
neuron's `b_i` and `m_i` and every synapse's state `s` before the step. For a pair of neuron types
(pre -> post) it draws `num_contexts` (step, synapse) contexts of that type pair, keeps everything in
them as recorded, sets the two neurons' external inputs to every point of a grid of x in [-1, 1], and
averages the increment of one synapse update over the contexts:

  delta(x_post, x_pre) = mean over contexts of
                         synapse_update(theta, s, a_post(x_post), a_pre(x_pre), e_post, e_pre) - s,   [Ds]

At the step's real inputs a context's increment is exactly the one the network applied
(tests/test_probe.py). What the grid moves is only the two neurons' own inputs, through their body
update and activation: the messages stay as recorded (in the network the pre neuron's input also
reaches the post neuron's message through their synapse, one of its fan-in), and so do all other
neurons. Every step of the episodes counts, storage, delay and recall alike.

Every channel of delta is fitted by least squares to

  c0 + c_post * x_post + c_pre * x_pre + c_hebb * x_post * x_pre.

The share of each channel's variance over the grid that each term explains says what kind of rule it
is: a Hebbian rule lives in the `x_post * x_pre` term; a rule driven by one side only lives in
`x_post` or `x_pre`; what no term explains (`residual`) is the non-linear rest.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from learned_rules import evaluation, network, rules, streaming, tasks, unroll

TERMS = ("post", "pre", "hebbian", "residual")
NUM_EPISODES = 4  # held-out episodes (or fresh streams) the network runs on for the contexts
NUM_CONTEXTS = 256  # (step, synapse) contexts drawn per type pair


@dataclasses.dataclass(frozen=True)
class Probe:
  """One type pair's probe.

  Attributes:
    xs: `[G]` the grid of external inputs, for the post and the pre neuron alike.
    delta: `[G, G, Ds]` the synapse increment, `[post x, pre x, channel]`, averaged over the contexts.
    shares: `{term: [Ds]}` each term's share of each channel's variance over the grid (`TERMS`; they
      sum to 1 per channel).
    coefficients: `[Ds, 4]` the fitted `c0, c_post, c_pre, c_hebb` per channel.
    num_contexts: how many (step, synapse) contexts `delta` averages over.
  """

  xs: np.ndarray
  delta: np.ndarray
  shares: dict
  coefficients: np.ndarray
  num_contexts: int = 0

  @property
  def channel_variance(self) -> np.ndarray:
    """`[Ds]` each channel's variance over the grid."""
    return self.delta.reshape(-1, self.delta.shape[-1]).var(axis=0)

  @property
  def std(self) -> float:
    """Size of the increment: the square root of its total variance over the grid (all channels)."""
    return float(np.sqrt(self.channel_variance.sum()))

  def share(self, term: str) -> float:
    """Share of the increment's total variance (all channels) that `term` of `TERMS` explains."""
    var = self.channel_variance
    return float((self.shares[term] * var).sum() / max(var.sum(), 1e-30))


@dataclasses.dataclass(frozen=True)
class Contexts:
  """What the network went through, step by step (numpy; `S` = episodes x steps, each neuron's and
  synapse's values before the step).

  Attributes:
    bodies: `[S, N, Db]` body states; messages: `[S, N, Ds*Da]` the messages of the step;
    x: `[S, N]` external inputs; synapses: `[S, N, N, Ds]` synapse states (dense, post-major);
    next_synapses: `[S, N, N, Ds]` the synapse states after the step (what the network applied);
    mask, types: the topology's `[N, N]` mask and `[N]` types.
  """

  bodies: np.ndarray
  messages: np.ndarray
  x: np.ndarray
  synapses: np.ndarray
  next_synapses: np.ndarray
  mask: np.ndarray
  types: np.ndarray


def held_out_inputs(key: jax.Array, task: tasks.TaskSpec, batch: int) -> tuple[jax.Array, jax.Array]:
  """The inputs `[B, T, N]` of the `batch` held-out episodes that `evaluation.eval_batch` draws from `key`
  (for `streaming`, its fresh streams' `evaluation.STREAM_EVAL_WINDOWS` windows, concatenated), and the
  key it draws the networks' initial states from."""
  first, second = jax.random.split(key)
  if task.protocol != "streaming":  # as unroll.episode_objective: episodes from the first, states the second
    episodes = jax.vmap(tasks.sample_episode, in_axes=(0, None))(jax.random.split(first, batch), task)
    return episodes.x, second
  positions, xs = streaming.stream_positions(key, task, batch), []  # as unroll.init_stream_carry
  for _ in range(evaluation.STREAM_EVAL_WINDOWS):
    window, positions = jax.vmap(tasks.sample_stream_window, in_axes=(0, None))(positions, task)
    xs.append(window.x)
  return jnp.concatenate(xs, axis=1), first


@functools.partial(jax.jit, static_argnames=("problem", "batch"))
def _record(theta, topo: network.Topology, problem: unroll.Problem, key: jax.Array, batch: int):
  xs, k_state = held_out_inputs(key, problem.task, batch)
  states = unroll.init_batch_states(theta, topo, problem, k_state, batch)
  spec = problem.rule

  def contexts(step: unroll.Step):
    state, x = step.before, step.x
    act = jax.vmap(rules.activation, in_axes=(None, 0, 0, None))(theta, state.bodies, x, spec)
    msg = network.block_messages(topo, state.synapses, act, spec.message_norm, spec.reference_fan_in)
    dense = lambda s: network.dense_synapses(topo, s.synapses)  # noqa: E731
    return state.bodies, msg, x, dense(state), dense(step.after)

  run = functools.partial(unroll.unroll, theta, topo, problem, record=contexts)
  _, out = jax.vmap(run)(states, xs)  # [B, T, ...]
  return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1).reshape(-1, *a.shape[2:]), out)


def record_contexts(
  theta: rules.Theta,
  topo: network.Topology,
  problem: unroll.Problem,
  key: jax.Array,
  batch: int = NUM_EPISODES,
) -> Contexts:
  """Runs the network of `topo` with rule `theta` on `batch` held-out episodes of `problem.task` drawn
  from `key` (those `evaluation.evaluate` gives it for that key, from the same initial states) and records
  every step's contexts."""
  out = jax.device_get(_record(theta, topo, problem, key, batch))
  return Contexts(*(np.asarray(a) for a in out), mask=np.asarray(topo.mask), types=np.asarray(topo.types))


def context_increment(theta, spec: rules.RuleSpec, recurrence: bool, post, pre, syn, x_post, x_pre):
  """The increment `[Ds]` of one synapse update in a context: `post` and `pre` are `(body [Db],
  message [Ds*Da], type embedding [E])` of the two neurons before the step, `syn` `[Ds]` the synapse's
  state, and `x_post`, `x_pre` `[]` the neurons' external inputs (module doc)."""

  def activation(neuron, x):
    body, msg, emb = neuron
    return rules.activation(theta, rules.body_update(theta, body, msg, x, emb, spec, recurrence), x, spec)

  a_post, a_pre = activation(post, x_post), activation(pre, x_pre)
  if spec.error_input:
    error = rules.own_error(theta, post[0], post[1], x_post, post[2], spec, recurrence)
    a_post = jnp.concatenate([a_post, error[None]])
  return rules.synapse_update(theta, syn, a_post, a_pre, post[2], pre[2]) - syn


@functools.partial(jax.jit, static_argnames=("spec", "recurrence"))
def _mean_increment(theta, spec, recurrence, post, pre, syn, xs):
  """`[G, G, Ds]`: `context_increment` on the grid `xs` `[G]`, averaged over contexts (leading axis C)."""
  one = lambda post, pre, syn, xp, xq: context_increment(theta, spec, recurrence, post, pre, syn, xp, xq)  # noqa: E731
  grid = jax.vmap(jax.vmap(one, (None, None, None, None, 0)), (None, None, None, 0, None))
  per_context = jax.vmap(grid, in_axes=(0, 0, 0, None, None))
  return jnp.mean(per_context(post, pre, syn, xs, xs), axis=0)


def sample_contexts(contexts: Contexts, post_type: int, pre_type: int, num: int, seed: int = 0):
  """`(step, post, pre)` index arrays `[num]` of contexts drawn uniformly (with replacement) among every
  step and every synapse `pre -> post` of the type pair, or None if the network has no such synapse."""
  post, pre = np.nonzero(
    (contexts.mask > 0) & (contexts.types[:, None] == post_type) & (contexts.types[None, :] == pre_type)
  )
  if not len(post):
    return None
  rng = np.random.default_rng([seed, post_type, pre_type])
  steps = rng.integers(0, contexts.x.shape[0], num)
  which = rng.integers(0, len(post), num)
  return steps, post[which], pre[which]


def synapse_increment(
  theta: rules.Theta, spec: rules.RuleSpec, recurrence: bool, contexts: Contexts, picks, xs
) -> jax.Array:
  """`delta` `[G, G, Ds]` on the grid `xs` averaged over the contexts `picks` (`sample_contexts`)."""
  steps, post, pre = picks
  emb = np.asarray(theta["type_emb"])[contexts.types]
  neuron = lambda i: (contexts.bodies[steps, i], contexts.messages[steps, i], emb[i])  # noqa: E731
  syn = contexts.synapses[steps, post, pre]
  return _mean_increment(
    theta, spec, recurrence, neuron(post), neuron(pre), syn, jnp.asarray(xs, jnp.float32)
  )


def probe(
  theta: rules.Theta,
  spec: rules.RuleSpec,
  contexts: Contexts,
  post_type: int,
  pre_type: int,
  recurrence: bool = True,
  xs=None,
  num_contexts: int = NUM_CONTEXTS,
) -> Probe | None:
  """The probe of the type pair `pre_type -> post_type` on the grid `xs` (default 21 points in [-1, 1]),
  over `num_contexts` contexts of `contexts` (`record_contexts` with the same theta; `recurrence` is the
  topology's `body_recurrence`), or None if the network has no synapse of that type pair."""
  xs = np.linspace(-1.0, 1.0, 21) if xs is None else np.asarray(xs, np.float64)
  picks = sample_contexts(contexts, post_type, pre_type, num_contexts)
  if picks is None:
    return None
  delta = np.asarray(synapse_increment(theta, spec, recurrence, contexts, picks, xs), np.float64)
  shares, coefficients = variance_shares(xs, delta)
  return Probe(xs=xs, delta=delta, shares=shares, coefficients=coefficients, num_contexts=num_contexts)


def variance_shares(xs: np.ndarray, delta: np.ndarray) -> tuple[dict, np.ndarray]:
  """Least-squares fit of `delta` `[G, G, C]` (post x, pre x, channel) on the grid `xs` (symmetric
  about 0) to `c0 + c_post x_post + c_pre x_pre + c_hebb x_post x_pre`: each term's share of each
  channel's variance (`{term: [C]}`, `TERMS`) and the coefficients `[C, 4]`."""
  post, pre = np.meshgrid(xs, xs, indexing="ij")
  design = np.stack([np.ones(post.size), post.ravel(), pre.ravel(), (post * pre).ravel()], axis=1)
  targets = delta.reshape(-1, delta.shape[-1])  # [G*G, C]
  coefficients, *_ = np.linalg.lstsq(design, targets, rcond=None)  # [4, C]
  total = targets.var(axis=0)
  safe = np.where(total > 0, total, 1.0)
  # On a grid symmetric about 0 the three centred regressors are orthogonal: their variances add up.
  shares = {
    name: np.var(np.outer(design[:, i], coefficients[i]), axis=0) / safe
    for i, name in ((1, "post"), (2, "pre"), (3, "hebbian"))
  }
  shares["residual"] = np.var(targets - design @ coefficients, axis=0) / safe
  return shares, coefficients.T
