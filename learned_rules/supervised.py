"""Supervised training of ordinary networks: the optimizer and the jitted step every such model shares.

The recurrent baselines (`trained_baselines.train_recurrent`) and the token-recall host models
(`host_study.train_host`) train with `make_optimizer` (the meta-learner's: Adam after global-norm
clipping, docs/DESIGN.md "Meta-training") and a step of `make_train_step`. Its learning rate is an
argument of the compiled step, not a constant of it, so the runs of a whole learning-rate grid, and
every seed, share one compiled program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from learned_rules.learner import make_optimizer

# `loss_fn(params, batch) -> (loss, aux)`: a scalar loss to minimise and any pytree to report with it.
LossFn = Callable[[Any, Any], tuple[jax.Array, Any]]

__all__ = ["LossFn", "StepOutput", "make_optimizer", "make_train_step", "param_count"]


class StepOutput(NamedTuple):
  """What a train step returns: the updated parameters and optimizer state, and the loss and auxiliary
  outputs of the batch, both computed before the update."""

  params: Any
  opt_state: optax.OptState
  loss: jax.Array  # []
  aux: Any


def param_count(params) -> int:
  """Number of scalars in a parameter tree (of arrays, or of their shapes from `jax.eval_shape`)."""
  return sum(int(leaf.size) for leaf in jax.tree.leaves(params))


def make_train_step(loss_fn: LossFn, clip_norm: float):
  """`train_step(params, opt_state, learning_rate, batch) -> StepOutput`, jitted: one step of
  `make_optimizer(learning_rate, clip_norm)` on `loss_fn(params, batch)`, the learning rate a traced
  scalar `[]`.

  `batch` is any pytree of arrays (a batch of data, or the key the loss draws its batch from). The step
  donates the buffers of `params` and `opt_state`: the caller must not read the ones it passed in
  afterwards. Build the step once per `loss_fn` (e.g. under `functools.cache`): each call of
  `make_train_step` compiles anew.
  """

  def train_step(params, opt_state, learning_rate, batch) -> StepOutput:
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = make_optimizer(learning_rate, clip_norm).update(grads, opt_state, params)
    return StepOutput(optax.apply_updates(params, updates), opt_state, loss, aux)

  return jax.jit(train_step, donate_argnums=(0, 1))
