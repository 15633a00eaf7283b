"""Tests of `NNXPlasticMemory`, the Flax NNX module: the Linen module's numbers with the shipped rule,
`nnx.jit`, `nnx.grad` (to the host, not to a frozen rule), resetting, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import learned_rules
from learned_rules import FrozenTheta, MemoryState, NNXPlasticMemory, PlasticMemory

K, B = 8, 2  # 8 snippets: the shipped rule's K@0.99 (tests/test_readme.py)


@pytest.fixture(scope="module")
def rule():
  return learned_rules.load_rule("hetero")


@pytest.fixture(scope="module")
def snippets():
  rng = np.random.default_rng(0)
  keys = rng.choice([-1.0, 1.0], (B, K, 16))
  values = rng.choice([-1.0, 1.0], (B, K, 16))
  return jnp.asarray(keys, jnp.float32), jnp.asarray(values, jnp.float32)


def _store_recall_step(memory, keys, values):
  memory.write(keys, values)
  recalled = memory.read(keys)
  return recalled, memory.step(jnp.ones((*keys.shape[:-2], memory.num_neurons)))


@pytest.fixture(scope="module")
def linen(rule, snippets):
  """The Linen module's empty memories, and its recall and next step after writing the snippets."""
  keys, values = snippets
  memory = PlasticMemory.from_rule(rule)
  variables = jax.jit(memory.init)(jax.random.PRNGKey(0), keys)

  @jax.jit
  def store_recall_step(variables, keys, values):
    _, written = memory.apply(variables, keys, values, method="write", mutable=["memory"])
    recalled, read = memory.apply({**variables, **written}, keys, mutable=["memory"])
    x = jnp.ones((*keys.shape[:-2], memory.num_neurons))
    out, stepped = memory.apply({**variables, **read}, x, method="step", mutable=["memory"])
    return recalled, out, stepped["memory"]["state"]

  return variables["memory"]["state"], store_recall_step(variables, keys, values)


@pytest.fixture(scope="module")
def recall(rule, snippets, linen):
  """An NNX memory of B memories started from the Linen module's empty ones, its empty state, and what
  `nnx.jit` of write, read and step gave."""
  keys, values = snippets
  memory = NNXPlasticMemory.from_rule(rule, batch_shape=(B,), rngs=nnx.Rngs(0))
  memory.net_state.set_value(linen[0])
  empty = nnx.state(memory, MemoryState)
  recalled, out = nnx.jit(_store_recall_step)(memory, keys, values)
  return memory, empty, recalled, out


def test_write_then_read_recalls_with_the_linen_modules_numbers(snippets, linen, recall):
  keys, values = snippets
  _, (linen_recalled, linen_out, linen_state) = linen
  memory, _, recalled, out = recall
  assert recalled.shape == (B, K, 16) and out.shape == (B, 16)
  assert float(jnp.mean(jnp.sign(recalled) == values)) > 0.95
  np.testing.assert_allclose(recalled, linen_recalled, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out, linen_out, rtol=1e-5, atol=1e-5)
  # nnx.jit carried the written memory out into the module.
  for got, want in zip(
    jax.tree.leaves(memory.net_state.get_value()), jax.tree.leaves(linen_state), strict=True
  ):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_an_empty_memory_is_the_rules_initial_state_and_reset_restores_one(rule, recall):
  memory, empty, _, _ = recall
  copy = nnx.clone(memory)  # the fixture's memory holds the written snippets; keep it so
  nnx.update(copy, empty)
  for got, want in zip(jax.tree.leaves(nnx.state(copy, MemoryState)), jax.tree.leaves(empty), strict=True):
    np.testing.assert_array_equal(got, want)

  copy.reset(jax.random.PRNGKey(1), batch_shape=(3,))
  assert copy.batch_shape == (3,)
  bodies = copy.net_state.get_value().bodies
  assert bodies.shape == (3, memory.num_neurons, rule.spec.body_dim)
  assert not np.array_equal(bodies[0], bodies[1])  # each memory its own noise
  # With no noise, an empty memory is the rule's learned initial state of each neuron's type.
  quiet = NNXPlasticMemory.from_rule(rule, init_noise=0.0, rngs=nnx.Rngs(0))
  expected = np.asarray(rule.theta["init_body"])[np.asarray(quiet.topology.types)]
  np.testing.assert_allclose(quiet.net_state.get_value().bodies, expected, rtol=1e-6)


class _Host(nnx.Module):
  """A host model: a learned encoder of the keys before the plastic memory."""

  def __init__(self, memory: NNXPlasticMemory, rngs: nnx.Rngs):
    self.encoder = nnx.Linear(16, 16, rngs=rngs)
    self.memory = memory

  def __call__(self, keys, values):
    encoded = jnp.tanh(self.encoder(keys))
    self.memory.write(encoded, values)
    return self.memory.read(encoded)


def _host_loss(host, keys, values):
  return jnp.mean((host(keys, values) - values) ** 2)


def _abs_sums(grads, kind) -> dict[str, float]:
  flat = nnx.to_flat_state(nnx.state(grads, kind))
  return {"/".join(map(str, path)): float(jnp.abs(v.get_value()).sum()) for path, v in flat}


def test_gradients_reach_the_host_and_not_a_frozen_rule(rule, snippets):
  keys, values = snippets
  host = _Host(NNXPlasticMemory.from_rule(rule, batch_shape=(B,), rngs=nnx.Rngs(0)), nnx.Rngs(1))
  params = _abs_sums(nnx.state(host, nnx.Param), nnx.Param)
  assert set(params) == {"encoder/kernel", "encoder/bias"}  # the rule is no parameter: no optimizer sees it
  assert set(nnx.state(host, MemoryState)) == {"memory"}

  # Differentiate with respect to the frozen rule too: it is behind stop_gradient.
  wrt = nnx.DiffState(0, nnx.Any(nnx.Param, FrozenTheta))
  grads = nnx.jit(nnx.grad(_host_loss, argnums=wrt))(host, keys, values)
  host_grads, rule_grads = _abs_sums(grads, nnx.Param), _abs_sums(grads, FrozenTheta)
  assert set(host_grads) == set(params) and len(rule_grads) == len(jax.tree.leaves(rule.theta))
  assert all(np.isfinite(g) and g > 0 for g in host_grads.values()), host_grads  # through the memory
  assert all(g == 0 for g in rule_grads.values()), rule_grads


def test_a_trainable_rule_is_a_parameter_and_gets_gradients(rule, snippets):
  keys, values = snippets
  memory = NNXPlasticMemory.from_rule(rule, trainable=True, batch_shape=(B,), rngs=nnx.Rngs(0))
  assert not nnx.state(memory, FrozenTheta)
  np.testing.assert_array_equal(memory.theta["synapse"]["w2"].get_value(), rule.theta["synapse"]["w2"])
  host = _Host(memory, nnx.Rngs(1))

  def loss(host, keys, values):
    # Empty memories made inside the loss, from theta's learned initial states.
    host.memory.reset(jax.random.PRNGKey(2))
    return _host_loss(host, keys, values)

  grads = _abs_sums(nnx.jit(nnx.grad(loss))(host, keys, values), nnx.Param)
  assert grads["memory/theta/synapse/w2"] > 0 and grads["encoder/kernel"] > 0
  assert grads["memory/theta/init_synapse"] > 0  # through reset
  assert all(np.isfinite(g) for g in grads.values())


def test_wrong_shapes_raise_clear_errors(rule, snippets):
  keys, values = snippets
  memory = NNXPlasticMemory.from_rule(rule, batch_shape=(B,), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"NNXPlasticMemory.read: expected shape \[\*batch, L, 16\]"):
    memory.read(keys[..., :-1])
  with pytest.raises(ValueError, match="differ in their leading"):
    memory.write(keys, values[:, :-1])
  with pytest.raises(ValueError, match=r"NNXPlasticMemory.step: expected shape \[\*batch, 64\]"):
    memory.step(keys)
  with pytest.raises(ValueError, match=r"holds a batch of shape \(2,\).*batch shape \(\).*reset"):
    memory.read(keys[0])
