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
neurons' readout at the last of them.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learned_rules import network, rules, unroll


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
    return cls(**{**fields, **overrides})

  @property
  def num_neurons(self) -> int:
    return self.topology.num_neurons

  def _rule(self) -> rules.Theta:
    if self.spec.num_types != self.topology.num_types:
      raise ValueError(
        f"PlasticMemory: spec.num_types is {self.spec.num_types}, the topology has "
        f"{self.topology.num_types} neuron types"
      )
    if self.trainable:
      return self.param("theta", lambda key: self._initial_theta(key))
    frozen = self.variable("rule", "theta", lambda: self._initial_theta(self.make_rng("params")))
    return jax.lax.stop_gradient(frozen.value)

  def _initial_theta(self, key) -> rules.Theta:
    return rules.init_theta(key, self.spec) if self.theta is None else self.theta

  def _memory(self, theta, batch: tuple[int, ...]):
    def fresh():
      keys = jax.random.split(self.make_rng("params"), max(1, math.prod(batch)))[: math.prod(batch)]
      init = jax.vmap(network.init_net_state, in_axes=(None, None, 0, None))
      state = init(theta, self.topology, keys, self.init_noise)
      return jax.tree.map(lambda a: a.reshape(*batch, *a.shape[1:]), state)

    if not self.is_initializing() and not self.has_variable("memory", "state"):
      raise ValueError("PlasticMemory: no `memory` variables; pass those `init` returned to `apply`")
    var = self.variable("memory", "state", fresh)
    held = var.value.bodies.shape[:-2]
    if held != batch:
      raise ValueError(
        f"PlasticMemory: the memory holds a batch of shape {held}, the inputs have batch shape {batch}; "
        "initialise it (`init`) with inputs of the batch shape it will be used with"
      )
    return var

  def _check(self, name: str, array: jax.Array, width: int, min_ndim: int) -> None:
    if array.ndim < min_ndim or array.shape[-1] != width:
      raise ValueError(
        f"PlasticMemory.{name}: expected shape [*batch{', L' if min_ndim > 1 else ''}, {width}], "
        f"got {tuple(array.shape)}"
      )

  @nn.compact  # every other method runs the network through here, where the variables are made
  def run(self, xs: jax.Array) -> jax.Array:
    """Runs the network over external inputs `xs` `[*batch, T, N]`; returns the readouts
    `[*batch, T, n_out]` of every step (one `lax.scan` over T, vmapped over the batch)."""
    self._check("run", xs, self.num_neurons, 2)
    theta = self._rule()
    batch = xs.shape[:-2]
    var = self._memory(theta, batch)
    problem = unroll.Problem(rule=self.spec, remat=self.remat)
    run = functools.partial(unroll.unroll, theta, self.topology, problem)
    xs = xs.astype(jnp.float32)
    if not batch:
      # One memory: no batch axis at all (a vmap over a batch of one leaves an axis of size 1 in
      # every array of the step, which some of XLA's CPU kernels run far slower; docs/PERFORMANCE.md).
      states, readouts = run(var.value, xs)
    else:
      flat = lambda a, lead: a.reshape(-1, *a.shape[lead:])  # noqa: E731
      states = jax.tree.map(lambda a: flat(a, len(batch)), var.value)
      states, readouts = jax.vmap(run)(states, flat(xs, len(batch)))
      states = jax.tree.map(lambda a: a.reshape(*batch, *a.shape[1:]), states)
      readouts = readouts.reshape(*batch, *readouts.shape[1:])
    if not self.is_initializing():  # `init` returns an empty memory
      var.value = states
    return readouts

  def step(self, x: jax.Array) -> jax.Array:
    """One time step with external input `x` `[*batch, N]`; returns the readouts `[*batch, n_out]`."""
    self._check("step", x, self.num_neurons, 1)
    return self.run(x[..., None, :])[..., 0, :]

  def _inputs(self, keys: jax.Array, values: jax.Array | None, steps: int) -> jax.Array:
    """External inputs `[*batch, L * steps, N]`: each key (and value) held for `steps` steps."""
    parts = [keys, values if values is not None else jnp.zeros((*keys.shape[:-1], self.topology.n_out))]
    hidden = self.num_neurons - self.topology.n_in - self.topology.n_out
    x = jnp.concatenate([*parts, jnp.zeros((*keys.shape[:-1], hidden))], axis=-1)
    x = jnp.repeat(x, steps, axis=-2)
    return x

  def write(self, keys: jax.Array, values: jax.Array) -> jax.Array:
    """Stores `L` snippets: keys `[*batch, L, n_in]` -> values `[*batch, L, n_out]`, in order.
    Returns the readouts of every step `[*batch, L * present_steps, n_out]`."""
    self._check("write", keys, self.topology.n_in, 2)
    self._check("write", values, self.topology.n_out, 2)
    if keys.shape[:-1] != values.shape[:-1]:
      raise ValueError(
        f"PlasticMemory.write: keys {tuple(keys.shape)} and values {tuple(values.shape)} differ in "
        "their leading [*batch, L] axes"
      )
    return self.run(self._inputs(keys, values, self.present_steps))

  def read(self, keys: jax.Array) -> jax.Array:
    """Recalls the values of keys `[*batch, L, n_in]`: `[*batch, L, n_out]` readouts (their signs are
    the recalled bits of a +-1 value)."""
    self._check("read", keys, self.topology.n_in, 2)
    xs = self._inputs(keys, None, self.query_steps)
    blank = jnp.zeros((*xs.shape[:-2], self.delay_steps, self.num_neurons))
    readouts = self.run(jnp.concatenate([blank, xs], axis=-2))[..., self.delay_steps :, :]
    last = readouts.reshape(*keys.shape[:-1], self.query_steps, -1)[..., -1, :]
    return last

  def __call__(self, keys: jax.Array) -> jax.Array:
    """`read(keys)`."""
    return self.read(keys)
