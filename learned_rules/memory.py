"""`PlasticMemory`: a network whose synapses a learned rule updates online, as a Flax module.

A host model writes key -> value snippets into it and reads values back from keys, under its own
`jit`, `vmap`, `lax.scan` and `grad`:

  rule = learned_rules.load_rule("hetero")
  memory = learned_rules.PlasticMemory.from_rule(rule)
  variables = memory.init(jax.random.PRNGKey(0), keys)                     # a fresh, empty memory
  _, written = memory.apply(variables, keys, values, method="write", mutable=["memory"])
  recalled, _ = memory.apply({**variables, **written}, keys, mutable=["memory"])   # [..., L, n_out]

Shapes: `keys` `[*batch, L, n_in]` and `values` `[*batch, L, n_out]` hold `L` snippets for each of
a `batch` of independent memories (`batch` may be empty: one memory); `step` takes the raw external
input `[*batch, N]` of all `N` neurons for one time step.

Variables:
  memory: `state`, the network state of every memory of the batch (`network.NetState`, bodies
    `[*batch, N, Db]` and one `[*batch, P, Q, Ds]` array per synapse block). Every method but
    `init` updates it, so call `apply` with `mutable=["memory"]`. `init` always returns an empty
    memory (whatever method it runs), and that value is the one to start every new sequence from.
  rule: `theta`, the rule's meta-parameters, when the rule is frozen (`trainable=False`): a
    collection of its own, outside `params`, and behind `stop_gradient`, so a host's optimizer
    never sees it and no gradient reaches it.
  params: `theta` instead, when `trainable=True`: the rule is trained jointly with the host.

The memory runs the protocol the rule was meta-trained on (docs/DESIGN.md): `write` shows each key on
the input neurons and its value on the output neurons for `present_steps` steps; `read` waits
`delay_steps` blank steps, then shows each key for `query_steps` steps and returns the output
neurons' readout at the last of them. That protocol and the batched run of the network are pure
functions below the module (`write_inputs`, `read_inputs`, `recalled`, `init_memory`, `run_network`),
which `nnx_memory.NNXPlasticMemory`, the same memory as a Flax NNX module, shares.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learned_rules import network, rules, unroll


def rule_fields(rule, trainable: bool = False, overrides: dict | None = None) -> dict:
  """The network, theta and protocol a loaded rule (`load_rule`) was meta-trained with, as the fields of
  `PlasticMemory` (and `NNXPlasticMemory`), with `overrides` in place of any of them. Warns when an
  overriding topology lacks the fixed random input synapses the rule was trained with (or has others):
  the rule then runs on hidden neurons it never saw."""
  problem = rule.problem()
  fields = dict(
    topology=rule.topology,
    spec=rule.spec,
    theta=rule.theta,
    trainable=trainable,
    present_steps=problem.task.present_steps,
    delay_steps=problem.task.delay_steps,
    query_steps=problem.task.query_steps,
    init_noise=problem.init_noise,
  )
  fields.update(overrides or {})
  differ = network.fixed_inputs_differ(rule.topology, [fields["topology"]])
  if differ:
    trained = rule.topology.random_input_synapses
    warnings.warn(
      f"from_rule: {differ}; to run it as trained, build the topology with random_input_synapses="
      f"{trained}, e.g. make_full(..., random_input_synapses={trained})",
      stacklevel=3,
    )
  return fields


class PlasticMemory(nn.Module):
  """A network of plastic synapses run by a learned rule; `write`, `read` (`__call__`) and `step`.

  Attributes:
    topology: the network (`network.make_full`, `make_layered`, `make_sparse`, ...).
    spec: the rule's sizes (`rules.RuleSpec`; `num_types` must match the topology's).
    theta: the rule's meta-parameters (a loaded rule's, or initial values when trainable), or None
      for fresh ones from `rules.init_theta`.
    trainable: keep theta in `params` (trained with the host) instead of the frozen `rule` collection.
    present_steps, delay_steps, query_steps: the storage and recall protocol (see the module doc).
    init_noise: std of the noise on the learned initial states of a fresh memory.
    remat: what a gradient through the memory's steps stores (`unroll.REMAT_POLICIES`): by default
      "step", the meta-trainer's, which keeps only each step's state and recomputes the rest in the
      backward pass (a host's training step 1.4x faster than "none", with 2.4x less memory;
      docs/PERFORMANCE.md); "none" keeps every step's activations. The same numbers either way.
  """

  topology: network.Topology
  spec: rules.RuleSpec
  theta: Any = None
  trainable: bool = False
  present_steps: int = 2
  delay_steps: int = 2
  query_steps: int = 2
  init_noise: float = 0.1
  remat: str = unroll.DEFAULT_REMAT

  @classmethod
  def from_rule(cls, rule, trainable: bool = False, **overrides) -> PlasticMemory:
    """The network, theta and protocol a loaded rule (`load_rule`) was meta-trained with."""
    return cls(**rule_fields(rule, trainable, overrides))

  @property
  def num_neurons(self) -> int:
    return self.topology.num_neurons

  def _rule(self) -> rules.Theta:
    check_spec("PlasticMemory", self.topology, self.spec)
    if self.trainable:
      return self.param("theta", lambda key: self._initial_theta(key))
    frozen = self.variable("rule", "theta", lambda: self._initial_theta(self.make_rng("params")))
    return jax.lax.stop_gradient(frozen.value)

  def _initial_theta(self, key) -> rules.Theta:
    return rules.init_theta(key, self.spec) if self.theta is None else self.theta

  def _memory(self, theta, batch: tuple[int, ...]):
    def fresh():
      return init_memory(theta, self.topology, self.make_rng("params"), batch, self.init_noise)

    if not self.is_initializing() and not self.has_variable("memory", "state"):
      raise ValueError("PlasticMemory: no `memory` variables; pass those `init` returned to `apply`")
    var = self.variable("memory", "state", fresh)
    check_batch(
      "PlasticMemory",
      var.value,
      batch,
      "initialise it (`init`) with inputs of the batch shape it will be used with",
    )
    return var

  @nn.compact  # every other method runs the network through here, where the variables are made
  def run(self, xs: jax.Array) -> jax.Array:
    """Runs the network over external inputs `xs` `[*batch, T, N]`; returns the readouts
    `[*batch, T, n_out]` of every step (one `lax.scan` over T, vmapped over the batch)."""
    check_shape("PlasticMemory.run", xs, self.num_neurons, 2)
    theta = self._rule()
    var = self._memory(theta, xs.shape[:-2])
    states, readouts = run_network(theta, self.topology, self.spec, var.value, xs, self.remat)
    if not self.is_initializing():  # `init` returns an empty memory
      var.value = states
    return readouts

  def step(self, x: jax.Array) -> jax.Array:
    """One time step with external input `x` `[*batch, N]`; returns the readouts `[*batch, n_out]`."""
    check_shape("PlasticMemory.step", x, self.num_neurons, 1)
    return self.run(x[..., None, :])[..., 0, :]

  def write(self, keys: jax.Array, values: jax.Array) -> jax.Array:
    """Stores `L` snippets: keys `[*batch, L, n_in]` -> values `[*batch, L, n_out]`, in order.
    Returns the readouts of every step `[*batch, L * present_steps, n_out]`."""
    check_snippets("PlasticMemory.write", self.topology, keys, values)
    return self.run(write_inputs(self.topology, keys, values, self.present_steps))

  def read(self, keys: jax.Array) -> jax.Array:
    """Recalls the values of keys `[*batch, L, n_in]`: `[*batch, L, n_out]` readouts (their signs are
    the recalled bits of a +-1 value)."""
    check_shape("PlasticMemory.read", keys, self.topology.n_in, 2)
    readouts = self.run(read_inputs(self.topology, keys, self.delay_steps, self.query_steps))
    return recalled(readouts, self.delay_steps, self.query_steps)

  def __call__(self, keys: jax.Array) -> jax.Array:
    """`read(keys)`."""
    return self.read(keys)


# The memory's protocol and its run of the network, as pure functions: `PlasticMemory` (Linen) and
# `nnx_memory.NNXPlasticMemory` (NNX) are two shells around them. `where` names the caller in errors.


def check_spec(where: str, topology: network.Topology, spec: rules.RuleSpec) -> None:
  if spec.num_types != topology.num_types:
    raise ValueError(
      f"{where}: spec.num_types is {spec.num_types}, the topology has {topology.num_types} neuron types"
    )


def check_shape(where: str, array: jax.Array, width: int, min_ndim: int) -> None:
  """`array` must be `[*batch, width]` (`min_ndim` 1) or `[*batch, L, width]` (`min_ndim` 2)."""
  if array.ndim < min_ndim or array.shape[-1] != width:
    raise ValueError(
      f"{where}: expected shape [*batch{', L' if min_ndim > 1 else ''}, {width}], got {tuple(array.shape)}"
    )


def check_snippets(where: str, topology: network.Topology, keys: jax.Array, values: jax.Array) -> None:
  """Keys `[*batch, L, n_in]` and values `[*batch, L, n_out]` of the same `[*batch, L]`."""
  check_shape(where, keys, topology.n_in, 2)
  check_shape(where, values, topology.n_out, 2)
  if keys.shape[:-1] != values.shape[:-1]:
    raise ValueError(
      f"{where}: keys {tuple(keys.shape)} and values {tuple(values.shape)} differ in their leading "
      "[*batch, L] axes"
    )


def check_batch(where: str, net_state: network.NetState, batch: tuple[int, ...], remedy: str) -> None:
  held = net_state.bodies.shape[:-2]
  if held != batch:
    raise ValueError(
      f"{where}: the memory holds a batch of shape {held}, the inputs have batch shape {batch}; {remedy}"
    )


def init_memory(
  theta: rules.Theta, topology: network.Topology, key: jax.Array, batch: tuple[int, ...], noise: float
) -> network.NetState:
  """Empty memories: a `[*batch]` batch of initial network states (`network.init_net_state`), one key
  of `jax.random.split(key)` each."""
  size = math.prod(batch)
  keys = jax.random.split(key, max(1, size))[:size]
  state = jax.vmap(network.init_net_state, in_axes=(None, None, 0, None))(theta, topology, keys, noise)
  return jax.tree.map(lambda a: a.reshape(*batch, *a.shape[1:]), state)


def run_network(
  theta: rules.Theta,
  topology: network.Topology,
  spec: rules.RuleSpec,
  net_state: network.NetState,
  xs: jax.Array,
  remat: str = unroll.DEFAULT_REMAT,
) -> tuple[network.NetState, jax.Array]:
  """Runs a batch of memories `net_state` (bodies `[*batch, N, Db]`) over external inputs `xs`
  `[*batch, T, N]`: one `unroll.unroll` each, vmapped over the flattened batch. Returns the final states
  and the readouts `[*batch, T, n_out]` of every step."""
  batch = xs.shape[:-2]
  run = functools.partial(unroll.unroll, theta, topology, unroll.Problem(rule=spec, remat=remat))
  xs = xs.astype(jnp.float32)
  if not batch:
    # One memory: no batch axis at all (a vmap over a batch of one leaves an axis of size 1 in
    # every array of the step, which some of XLA's CPU kernels run far slower; docs/PERFORMANCE.md).
    return run(net_state, xs)
  flat = lambda a, lead: a.reshape(-1, *a.shape[lead:])  # noqa: E731
  states = jax.tree.map(lambda a: flat(a, len(batch)), net_state)
  states, readouts = jax.vmap(run)(states, flat(xs, len(batch)))
  states = jax.tree.map(lambda a: a.reshape(*batch, *a.shape[1:]), states)
  return states, readouts.reshape(*batch, *readouts.shape[1:])


def write_inputs(
  topology: network.Topology, keys: jax.Array, values: jax.Array, present_steps: int
) -> jax.Array:
  """The external inputs `[*batch, L * present_steps, N]` that store keys `[*batch, L, n_in]` -> values
  `[*batch, L, n_out]`: each pair on the input and output neurons for `present_steps` steps."""
  hidden = jnp.zeros((*keys.shape[:-1], topology.num_neurons - topology.n_in - topology.n_out))
  return jnp.repeat(jnp.concatenate([keys, values, hidden], axis=-1), present_steps, axis=-2)


def read_inputs(topology: network.Topology, keys: jax.Array, delay_steps: int, query_steps: int) -> jax.Array:
  """The external inputs `[*batch, delay_steps + L * query_steps, N]` that recall keys `[*batch, L, n_in]`:
  `delay_steps` blank steps, then each key alone on the input neurons for `query_steps` steps."""
  xs = write_inputs(topology, keys, jnp.zeros((*keys.shape[:-1], topology.n_out)), query_steps)
  blank = jnp.zeros((*xs.shape[:-2], delay_steps, topology.num_neurons))
  return jnp.concatenate([blank, xs], axis=-2)


def recalled(readouts: jax.Array, delay_steps: int, query_steps: int) -> jax.Array:
  """The recalled values `[*batch, L, n_out]` from the readouts `[*batch, T, n_out]` of a run of
  `read_inputs`: the readout at the last step of each key's query."""
  queries = readouts[..., delay_steps:, :]
  return queries.reshape(*queries.shape[:-2], -1, query_steps, queries.shape[-1])[..., -1, :]
