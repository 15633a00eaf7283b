"""Tests of `PlasticMemory`, the Flax module: the trainer's numbers, jit/vmap/scan/grad, errors."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import PlasticMemory, network, rules, tasks, unroll
from learned_rules import config as config_lib
from learned_rules.configs import remember

K, B = 3, 2


@pytest.fixture(scope="module")
def setting():
  """The `:tiny` network and task, a random rule, and a memory running them with no initial noise."""
  cfg = remember.get_config("tiny")
  cfg.net.init_noise = 0.0
  topo = config_lib.make_topology(cfg.net)
  spec = config_lib.rule_spec(cfg, topo)
  theta = rules.init_theta(jax.random.PRNGKey(3), spec)
  problem = config_lib.problem(cfg, topo, num_snippets=K)
  memory = PlasticMemory(
    topology=topo,
    spec=spec,
    theta=theta,
    present_steps=cfg.task.present_steps,
    delay_steps=cfg.task.delay_steps,
    query_steps=cfg.task.query_steps,
    init_noise=0.0,
  )
  return topo, theta, problem, memory


def _snippets(topo, seed: int, batch=(B,), num: int = K):
  rng = np.random.default_rng(seed)
  keys = rng.choice([-1.0, 1.0], (*batch, num, topo.n_in))
  values = rng.choice([-1.0, 1.0], (*batch, num, topo.n_out))
  return jnp.asarray(keys, jnp.float32), jnp.asarray(values, jnp.float32)


def _write_read(memory, variables, keys, values, cues):
  _, written = memory.apply(variables, keys, values, method="write", mutable=["memory"])
  recalled, _ = memory.apply({**variables, **written}, cues, mutable=["memory"])
  return recalled


def test_write_then_read_is_the_trainers_episode(setting):
  """`write` then `read` run exactly the steps of a training episode: the recalled values equal the
  unroll's readouts at the last step of each query."""
  topo, theta, problem, memory = setting
  spec = problem.task
  episode = tasks.sample_episode(jax.random.PRNGKey(5), spec)
  state = network.init_net_state(theta, topo, jax.random.PRNGKey(0), 0.0)
  _, expected = unroll.unroll(theta, topo, problem, state, episode.x)

  store = spec.num_snippets * spec.present_steps
  keys = episode.x[: store : spec.present_steps, : topo.n_in]
  values = episode.x[: store : spec.present_steps, topo.n_in : topo.n_in + topo.n_out]
  cues = episode.x[store + spec.delay_steps :: spec.query_steps, : topo.n_in]
  variables = memory.init(jax.random.PRNGKey(0), cues)
  recalled = _write_read(memory, variables, keys, values, cues)
  last = expected[store + spec.delay_steps + spec.query_steps - 1 :: spec.query_steps]
  assert recalled.shape == (spec.num_queries, topo.n_out)
  np.testing.assert_allclose(recalled, last, rtol=1e-5, atol=1e-5)
  # The raw step is the same network: `step` over the episode's inputs gives the unroll's readouts.
  out, _ = memory.apply(variables, episode.x[0], method="step", mutable=["memory"])
  np.testing.assert_allclose(out, expected[0], rtol=1e-5, atol=1e-5)


def test_init_returns_an_empty_memory(setting):
  topo, theta, _, memory = setting
  keys, values = _snippets(topo, 0)
  fresh = memory.init(jax.random.PRNGKey(0), keys)
  again = memory.init(jax.random.PRNGKey(0), keys, values, method="write")
  assert set(fresh) == {"memory", "rule"}
  for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(again), strict=True):
    np.testing.assert_array_equal(a, b)
  expected = network.init_net_state(theta, topo, jax.random.PRNGKey(0), 0.0)
  np.testing.assert_allclose(fresh["memory"]["state"].bodies[0], expected.bodies, rtol=1e-6)
  assert fresh["memory"]["state"].bodies.shape == (B, topo.num_neurons, theta["init_body"].shape[1])


def test_jit_vmap_and_scan_give_the_same_recall(setting):
  topo, _, _, memory = setting
  keys, values = _snippets(topo, 1)
  variables = memory.init(jax.random.PRNGKey(0), keys)
  eager = _write_read(memory, variables, keys, values, keys)

  jitted = jax.jit(lambda v, k, x: _write_read(memory, v, k, x, k))(variables, keys, values)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)

  # One memory per example under jax.vmap (the module sees no batch axis).
  single = memory.init(jax.random.PRNGKey(0), keys[0])
  per_example = {**single, "memory": variables["memory"]}
  in_axes = ({"rule": None, "memory": 0}, 0, 0)
  vmapped = jax.vmap(lambda v, k, x: _write_read(memory, v, k, x, k), in_axes=in_axes)(
    per_example, keys, values
  )
  np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-6)

  # Snippets written one at a time by lax.scan, the memory carried: the same as all at once.
  def write_one(mem, kv):
    _, written = memory.apply(
      {**variables, "memory": mem}, kv[0][:, None], kv[1][:, None], method="write", mutable=["memory"]
    )
    return written["memory"], None

  mem, _ = jax.lax.scan(
    write_one, variables["memory"], (jnp.swapaxes(keys, 0, 1), jnp.swapaxes(values, 0, 1))
  )
  scanned, _ = memory.apply({**variables, "memory": mem}, keys, mutable=["memory"])
  np.testing.assert_allclose(scanned, eager, rtol=1e-5, atol=1e-6)


class _Host(nn.Module):
  """A host model: a learned encoder of the keys, the plastic memory, a learned decoder."""

  memory: PlasticMemory

  @nn.compact
  def __call__(self, keys, values):
    n_in = keys.shape[-1]
    encoded = jnp.tanh(nn.Dense(n_in, name="encoder")(keys))
    self.memory.write(encoded, values)
    return nn.Dense(values.shape[-1], name="decoder")(self.memory.read(encoded))


def _host_loss(host, variables, keys, values):
  recalled, _ = host.apply(variables, keys, values, mutable=["memory"])
  return jnp.mean((recalled - values) ** 2)


def _host_grads(host, variables, collection, keys, values):
  """Gradient of `_host_loss` in the collection `collection` of `variables`, one compiled program."""
  loss = lambda v: _host_loss(host, {**variables, collection: v}, keys, values)  # noqa: E731
  return jax.jit(jax.grad(loss))(variables[collection])


def test_gradients_reach_the_host_and_not_a_frozen_rule(setting):
  topo, theta, _, memory = setting
  keys, values = _snippets(topo, 2)
  host = _Host(memory)
  variables = host.init(jax.random.PRNGKey(1), keys, values)
  assert set(variables) == {"params", "rule", "memory"}
  assert set(variables["params"]) == {"encoder", "decoder"}  # the rule is not a parameter

  grads = _host_grads(host, variables, "params", keys, values)
  for name in ("encoder", "decoder"):
    assert float(jnp.abs(grads[name]["kernel"]).sum()) > 0, name  # through the memory, for the encoder
  rule_grads = _host_grads(host, variables, "rule", keys, values)
  assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(rule_grads))


def test_a_trainable_rule_is_a_parameter_and_gets_gradients(setting):
  topo, theta, _, memory = setting
  keys, values = _snippets(topo, 3)
  host = _Host(memory.clone(trainable=True))
  variables = host.init(jax.random.PRNGKey(1), keys, values)
  assert "rule" not in variables
  for got, want in zip(
    jax.tree.leaves(variables["params"]["memory"]["theta"]), jax.tree.leaves(theta), strict=True
  ):
    np.testing.assert_array_equal(got, want)  # starts from the given rule
  grads = _host_grads(host, variables, "params", keys, values)
  assert float(jnp.abs(grads["memory"]["theta"]["synapse"]["w2"]).sum()) > 0


def test_fresh_rule_when_none_is_given(setting):
  topo, theta, _, memory = setting
  keys, _ = _snippets(topo, 4)
  fresh = memory.clone(theta=None).init(jax.random.PRNGKey(7), keys)
  assert jax.tree.structure(fresh["rule"]["theta"]) == jax.tree.structure(theta)
  assert not np.array_equal(fresh["rule"]["theta"]["synapse"]["w2"], theta["synapse"]["w2"])


def test_wrong_shapes_raise_clear_errors(setting):
  topo, _, _, memory = setting
  keys, values = _snippets(topo, 5)
  variables = memory.init(jax.random.PRNGKey(0), keys)
  with pytest.raises(ValueError, match=r"PlasticMemory.read: expected shape \[\*batch, L, 4\]"):
    memory.apply(variables, keys[..., :-1], mutable=["memory"])
  with pytest.raises(ValueError, match="PlasticMemory.write: expected shape"):
    memory.apply(variables, keys, values[..., :-1], method="write", mutable=["memory"])
  with pytest.raises(ValueError, match="differ in their leading"):
    memory.apply(variables, keys, values[:, :-1], method="write", mutable=["memory"])
  with pytest.raises(ValueError, match=r"PlasticMemory.step: expected shape \[\*batch, 12\]"):
    memory.apply(variables, keys, method="step", mutable=["memory"])
  with pytest.raises(ValueError, match=r"holds a batch of shape \(2,\).*batch shape \(\)"):
    memory.apply(variables, keys[0], mutable=["memory"])
  with pytest.raises(ValueError, match="no `memory` variables"):
    memory.apply({"rule": variables["rule"]}, keys, mutable=["memory"])
  wrong_types = dataclasses.replace(memory.spec, num_types=memory.spec.num_types + 1)
  with pytest.raises(ValueError, match="num_types"):
    memory.clone(spec=wrong_types).init(jax.random.PRNGKey(0), keys)
