"""Tests of `learned_rules.supervised`: the shared train step against optax applied by hand, one compiled
program for every learning rate, and parameter counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from learned_rules import supervised

CLIP = 0.5  # small enough that the first gradients are clipped


def _problem():
  """A linear regression: params `{"w": [3, 2], "b": [2]}`, a batch `(x [8, 3], y [8, 2])`."""
  kx, ky, kw = jax.random.split(jax.random.PRNGKey(0), 3)
  x, y = jax.random.normal(kx, (8, 3)), jax.random.normal(ky, (8, 2))
  params = {"w": jax.random.normal(kw, (3, 2)), "b": jnp.zeros(2)}
  return params, (x, y)


def _loss_fn(params, batch):
  x, y = batch
  error = x @ params["w"] + params["b"] - y
  return jnp.mean(error**2), {"max_error": jnp.max(jnp.abs(error))}


@pytest.mark.parametrize("learning_rate", [0.0, 0.03])
def test_train_step_is_clipped_adam_on_the_loss(learning_rate):
  params, batch = _problem()
  step = supervised.make_train_step(_loss_fn, CLIP)
  optimizer = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(learning_rate))
  want, want_state = params, optimizer.init(params)
  got, got_state = jax.tree.map(jnp.copy, params), supervised.make_optimizer(learning_rate, CLIP).init(params)
  for _ in range(5):
    (loss, aux), grads = jax.value_and_grad(_loss_fn, has_aux=True)(want, batch)
    updates, want_state = optimizer.update(grads, want_state, want)
    out = step(got, got_state, jnp.float32(learning_rate), batch)
    assert isinstance(out, supervised.StepOutput)
    np.testing.assert_allclose(out.loss, loss, rtol=1e-6)  # the loss before the update
    np.testing.assert_allclose(out.aux["max_error"], aux["max_error"], rtol=1e-6)
    want, (got, got_state) = optax.apply_updates(want, updates), (out.params, out.opt_state)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  moved = not all(
    np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params), strict=True)
  )
  assert moved == (learning_rate > 0)


def test_one_compiled_program_serves_every_learning_rate():
  params, batch = _problem()
  traces = []

  def loss_fn(params, batch):
    traces.append(1)  # runs once per trace, not per call
    return _loss_fn(params, batch)

  step = supervised.make_train_step(loss_fn, CLIP)
  for learning_rate in (1e-3, 1e-2, 1e-1):
    p = jax.tree.map(jnp.copy, params)
    step(p, supervised.make_optimizer(learning_rate, CLIP).init(p), jnp.float32(learning_rate), batch)
  assert len(traces) == 1


def test_param_count_of_arrays_and_of_shapes():
  params, _ = _problem()
  assert supervised.param_count(params) == 3 * 2 + 2
  assert supervised.param_count(jax.eval_shape(lambda: params)) == 8
  assert supervised.param_count({}) == 0
