"""The learner: one optax update of `theta` from a meta-gradient, guarded against non-finite steps.

Every estimator (`gradient_estimators.py`) hands its gradient here, and the loop (`meta_train.py`) keeps
the state: `TrainState` holds theta, the optimizer state, the non-finite counts and what each estimator
of the meta-batch carries between steps. A step whose loss or gradient is not finite changes nothing
but the step and the counts (docs/RELIABILITY.md).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax

from learned_rules import rules


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs: `step` `[]`, `theta` (with `network.SYNAPSE_WEIGHTS` on a
  `net.trained_synapses` network), `opt_state`, the count of skipped (non-finite) meta steps in all
  and in a row so far (`[]` int32 each), and `carries`, one entry per problem of the meta-batch: what
  its estimator carries between meta steps (None for fresh episodes; the `[B, ...]` never-reset
  streams for `streaming`)."""

  step: jax.Array
  theta: rules.Theta
  opt_state: optax.OptState
  nonfinite_steps: jax.Array
  nonfinite_streak: jax.Array
  carries: tuple = ()


DECAY_FLOOR = 0.1  # a decayed learning rate ends at this fraction of its peak


def make_optimizer(
  learning_rate: float, clip_norm: float, decay_steps: int = 0
) -> optax.GradientTransformation:
  """Adam with global-norm clipping (docs/DESIGN.md, "Meta-training"); also the recurrent baselines'
  and host models' optimizer (`supervised.py`). With `decay_steps` > 0 the learning rate follows a
  cosine from `learning_rate` down to a tenth of it at step `decay_steps` (`train.decay_steps`)."""
  if decay_steps > 0:
    learning_rate = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=DECAY_FLOOR)
  return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


def init_state(theta: rules.Theta, optimizer: optax.GradientTransformation, carries: tuple) -> TrainState:
  zero = jnp.zeros((), jnp.int32)
  return TrainState(zero, theta, optimizer.init(theta), zero, zero, tuple(carries))


def apply(
  optimizer: optax.GradientTransformation,
  state: TrainState,
  grads: rules.Theta,
  metrics: dict,
  carries: tuple,
) -> tuple[TrainState, dict]:
  """The next train state: theta updated by `grads` and the estimators' new `carries`, or, if the loss
  (`metrics["loss"]`) or the gradient is not finite, everything as it was but the step and the
  non-finite counts. The metrics gain `grad_norm`, `nonfinite` (1.0 for a skipped step) and the counts."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
  theta = optax.apply_updates(state.theta, updates)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
  bad = (~finite).astype(jnp.int32)
  new_state = TrainState(
    step=state.step + 1,
    theta=keep(theta, state.theta),
    opt_state=keep(opt_state, state.opt_state),
    nonfinite_steps=state.nonfinite_steps + bad,
    nonfinite_streak=(state.nonfinite_streak + 1) * bad,
    carries=keep(tuple(carries), state.carries),
  )
  metrics = {
    **metrics,
    "grad_norm": grad_norm,
    "nonfinite": bad.astype(jnp.float32),
    "nonfinite_streak": new_state.nonfinite_streak,
    "nonfinite_steps": new_state.nonfinite_steps,
  }
  return new_state, metrics
