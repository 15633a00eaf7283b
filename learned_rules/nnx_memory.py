"""`NNXPlasticMemory`: `PlasticMemory`'s network and learned rule as a Flax NNX module.

A host model holds it as a submodule, writes key -> value snippets into it and reads values back from
keys, under `nnx.jit` and `nnx.grad`; the memory changes in place:

  rule = learned_rules.load_rule("hetero")
  memory = learned_rules.NNXPlasticMemory.from_rule(rule, batch_shape=(4,), rngs=nnx.Rngs(0))  # empty
  memory.write(keys, values)    # keys [4, L, n_in] -> values [4, L, n_out]; updates memory.net_state
  recalled = memory.read(keys)  # [4, L, n_out]

It runs the functions `memory.PlasticMemory` runs (`memory.write_inputs`, `run_network`, ...): the same
protocol, and from the same state the same numbers. Shapes: `keys` `[*batch, L, n_in]` and `values`
`[*batch, L, n_out]` hold `L` snippets for each of a `batch` of independent memories, where `batch` is
the `batch_shape` the memory was built (or last `reset`) with; `()` is one memory.

Variables, each of its own kind, so that `nnx.state(model, kind)` and `nnx.split(model, nnx.Param,
MemoryState, ...)` pick them out:
  MemoryState: `net_state`, the network state of every memory of the batch (`network.NetState`, bodies
    `[*batch, N, Db]` and one `[*batch, P, Q, Ds]` array per synapse block); `write`, `read` and `step`
    update it.
  FrozenTheta: `theta`, the rule's meta-parameters (a tree of variables shaped like `rules.Theta`), when
    the rule is frozen (`trainable=False`). Not an `nnx.Param`, so neither `nnx.grad` (which
    differentiates `nnx.Param` by default) nor an `nnx.Optimizer(model, tx, wrt=nnx.Param)` touch it;
    and read behind `stop_gradient`.
  nnx.Param: `theta` instead, when `trainable=True`: the rule is trained jointly with the host.

To start a new sequence from an empty memory, either
  - keep the empty memory the module was built with and put it back, the same initial state every
    time (as the Linen module's `init` value): `empty = nnx.state(memory, MemoryState)` once, then
    `nnx.update(memory, empty)`; or
  - `memory.reset(key)`: fresh initial states (their noise drawn from `key`; `batch_shape=` changes
    the batch). Inside a loss, this lets a trainable rule's learned initial states get gradients too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from learned_rules import memory as memory_lib
from learned_rules import network, rules, unroll


class MemoryState(nnx.Variable):
  """The network state (`network.NetState`) of an `NNXPlasticMemory`: what writing and reading change."""


class FrozenTheta(nnx.Variable):
  """A leaf of a frozen rule's theta: no `nnx.Param`, so `nnx.grad` and a host's optimizer leave it alone."""


@dataclasses.dataclass(frozen=True, eq=False)
class _Fixed:
  """A static attribute compared and hashed by identity. A topology holds arrays, which nnx would take
  for state (and traced inputs of `nnx.jit`) and which cannot be hashed into a graph definition; held
  here, it stays a constant of the compiled program, as in the Linen module."""

  value: Any


# Empty memories as one compiled program: run eagerly, building a memory would compile dozens of small
# ops one by one (the topology is a traced argument; the batch shape and the noise are static).
_init_memory = jax.jit(memory_lib.init_memory, static_argnums=(3, 4))


def _values(tree: Any) -> Any:
  return jax.tree.map(lambda v: v.get_value(), tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


class NNXPlasticMemory(nnx.Module):
  """A network of plastic synapses run by a learned rule; `write`, `read` (`__call__`), `step`, `reset`.

  Args:
    topology: the network (`network.make_full`, `make_layered`, `make_sparse`, ...).
    spec: the rule's sizes (`rules.RuleSpec`; `num_types` must match the topology's).
    theta: the rule's meta-parameters (a loaded rule's, or initial values when trainable), or None for
      fresh ones from `rules.init_theta` (drawn from `rngs.params()`).
    rngs: draws the noise of the initial states (`rngs.params()`).
    trainable: keep theta as `nnx.Param` (trained with the host) instead of `FrozenTheta`.
    batch_shape: the batch of independent memories `[*batch]` it holds; `()` for one.
    present_steps, delay_steps, query_steps: the storage and recall protocol (`memory.PlasticMemory`).
    init_noise: std of the noise on the learned initial states of an empty memory.
    remat: what a gradient through the memory's steps stores (`unroll.REMAT_POLICIES`; see
      `memory.PlasticMemory`). The same numbers either way.
  """

  def __init__(
    self,
    topology: network.Topology,
    spec: rules.RuleSpec,
    theta: rules.Theta | None = None,
    *,
    rngs: nnx.Rngs,
    trainable: bool = False,
    batch_shape: tuple[int, ...] = (),
    present_steps: int = 2,
    delay_steps: int = 2,
    query_steps: int = 2,
    init_noise: float = 0.1,
    remat: str = unroll.DEFAULT_REMAT,
  ):
    memory_lib.check_spec(type(self).__name__, topology, spec)
    theta = rules.init_theta(rngs.params(), spec) if theta is None else theta
    kind = nnx.Param if trainable else FrozenTheta
    self._topology = _Fixed(topology)
    self.spec = spec
    self.trainable = trainable
    self.present_steps, self.delay_steps, self.query_steps = present_steps, delay_steps, query_steps
    self.init_noise = init_noise
    self.remat = remat
    self.theta = nnx.data(jax.tree.map(lambda a: kind(jnp.asarray(a)), theta))
    self.net_state = MemoryState(self._empty(rngs.params(), tuple(batch_shape)))

  @classmethod
  def from_rule(cls, rule, trainable: bool = False, *, rngs: nnx.Rngs, **overrides) -> NNXPlasticMemory:
    """The network, theta and protocol a loaded rule (`load_rule`) was meta-trained with; `overrides`
    (e.g. `batch_shape=(4,)`) replace any of the constructor's arguments."""
    return cls(**memory_lib.rule_fields(rule, trainable, overrides), rngs=rngs)

  @property
  def topology(self) -> network.Topology:
    return self._topology.value

  @property
  def num_neurons(self) -> int:
    return self.topology.num_neurons

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return self.net_state.get_value().bodies.shape[:-2]

  def _theta(self) -> rules.Theta:
    theta = _values(self.theta)
    return theta if self.trainable else jax.lax.stop_gradient(theta)

  def _empty(self, key: jax.Array, batch: tuple[int, ...]) -> network.NetState:
    return _init_memory(self._theta(), self.topology, key, batch, self.init_noise)

  def reset(self, key: jax.Array, batch_shape: tuple[int, ...] | None = None) -> None:
    """Empties the memory: fresh initial states, their noise drawn from `key`, for a batch of shape
    `batch_shape` (by default the one it holds)."""
    batch = self.batch_shape if batch_shape is None else tuple(batch_shape)
    self.net_state.set_value(self._empty(key, batch))

  def run(self, xs: jax.Array) -> jax.Array:
    """Runs the network over external inputs `xs` `[*batch, T, N]`; returns the readouts
    `[*batch, T, n_out]` of every step (one `lax.scan` over T, vmapped over the batch)."""
    where = type(self).__name__
    memory_lib.check_shape(f"{where}.run", xs, self.num_neurons, 2)
    state = self.net_state.get_value()
    remedy = "build it with that `batch_shape`, or `reset(key, batch_shape)` it"
    memory_lib.check_batch(where, state, xs.shape[:-2], remedy)
    state, readouts = memory_lib.run_network(self._theta(), self.topology, self.spec, state, xs, self.remat)
    self.net_state.set_value(state)
    return readouts

  def step(self, x: jax.Array) -> jax.Array:
    """One time step with external input `x` `[*batch, N]`; returns the readouts `[*batch, n_out]`."""
    memory_lib.check_shape(f"{type(self).__name__}.step", x, self.num_neurons, 1)
    return self.run(x[..., None, :])[..., 0, :]

  def write(self, keys: jax.Array, values: jax.Array) -> jax.Array:
    """Stores `L` snippets: keys `[*batch, L, n_in]` -> values `[*batch, L, n_out]`, in order.
    Returns the readouts of every step `[*batch, L * present_steps, n_out]`."""
    memory_lib.check_snippets(f"{type(self).__name__}.write", self.topology, keys, values)
    return self.run(memory_lib.write_inputs(self.topology, keys, values, self.present_steps))

  def read(self, keys: jax.Array) -> jax.Array:
    """Recalls the values of keys `[*batch, L, n_in]`: `[*batch, L, n_out]` readouts (their signs are
    the recalled bits of a +-1 value)."""
    memory_lib.check_shape(f"{type(self).__name__}.read", keys, self.topology.n_in, 2)
    readouts = self.run(memory_lib.read_inputs(self.topology, keys, self.delay_steps, self.query_steps))
    return memory_lib.recalled(readouts, self.delay_steps, self.query_steps)

  def __call__(self, keys: jax.Array) -> jax.Array:
    """`read(keys)`."""
    return self.read(keys)
