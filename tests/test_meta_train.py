"""Tests of `learned_rules.meta_train`: the meta step and a tiny meta-training run."""

from __future__ import annotations

import chex
import jax
import numpy as np
import optax
import pytest

from learned_rules import baselines, evaluation, meta_train
from learned_rules.configs import remember

# 50 meta steps take `:tiny` (K = 2) well past the key-blind floor on every seed tried (held-out bit
# accuracy 0.95-0.98 on seeds 0-4; after 30 steps one seed was still at 0.61, below the floor).
META_STEPS = 50
EVAL_EPISODES = 256
# A memory that ignores the cue scores the key-blind floor (0.75 at K = 2) in expectation; on 256
# episodes its score has a standard deviation of at most 0.5 / sqrt(256) = 0.03, so 0.1 above the
# floor is out of its reach.
FLOOR_MARGIN = 0.1


@pytest.fixture(scope="module")
def run():
  """`META_STEPS` meta steps on `:tiny`, with held-out metrics on the same fixed episodes before and
  after, and the key-blind floor on those episodes.

  The meta step is built exactly as `train_and_evaluate` builds it (same key, batch and problem),
  so its compiled program is shared with the driver tests through the compilation cache.
  """
  cfg = remember.get_config("tiny")
  topo, problem, optimizer = meta_train.setup(cfg)
  topos, meta_batch, _ = meta_train.setup_meta_batch(cfg)
  key = meta_train.train_key(cfg.seed)
  state = meta_train.init_train_state(key, topos, meta_batch, optimizer)
  initial_theta = jax.tree.map(np.array, state.theta)  # host copy: the meta step donates `state`
  meta_step = meta_train.make_meta_step(meta_batch, optimizer, meta_train.step_key(cfg.seed))

  def held_out(theta):
    # Batches of the driver's evaluation size, so the compiled eval program is shared as well.
    return evaluation.evaluate(
      theta, topo, problem, evaluation.eval_key(cfg.seed), EVAL_EPISODES, batch=cfg.eval.num_episodes
    )

  before = held_out(state.theta)
  history = []
  for _ in range(META_STEPS):
    state, metrics = meta_step(state, topos)
    history.append(jax.device_get(metrics))
  after = held_out(state.theta)
  # The best answer that ignores the cue, on exactly the episodes `held_out` gives the network.
  floor = baselines.evaluate(
    "key_blind", problem.task, evaluation.eval_key(cfg.seed), EVAL_EPISODES, batch=cfg.eval.num_episodes
  )
  return dict(
    cfg=cfg,
    problem=problem,
    state=state,
    initial_theta=initial_theta,
    history=history,
    before=before,
    after=after,
    floor=floor,
  )


def test_meta_training_lowers_the_held_out_loss(run):
  before, after = run["before"], run["after"]
  assert set(before) == {"loss", "bit_accuracy", "perfect_recall"}
  assert after["loss"] < 0.8 * before["loss"], (before, after)
  assert after["bit_accuracy"] > before["bit_accuracy"] + 0.1, (before, after)


def test_meta_trained_rule_recalls_above_the_key_blind_floor(run):
  """A memory that ignores the key also lowers the loss; only one that uses it clears this floor."""
  task, floor, after = run["problem"].task, run["floor"]["bit_accuracy"], run["after"]["bit_accuracy"]
  assert task.num_snippets >= 2  # the floor is below 1
  # The floor measured on these episodes is the expected one (0.75 at K = 2), up to sampling.
  assert abs(floor - baselines.key_blind_accuracy(task.num_snippets)) < 0.03, floor
  assert after > floor + FLOOR_MARGIN, (after, floor)


def test_meta_step_advances_the_state(run):
  state, history = run["state"], run["history"]
  assert int(state.step) == META_STEPS and int(state.nonfinite_steps) == int(state.nonfinite_streak) == 0
  assert state.carries == (None,)  # episode protocol: nothing carried between meta steps
  chex.assert_trees_all_equal_shapes(state.theta, run["initial_theta"])
  assert not np.allclose(state.theta["body"]["w1"], run["initial_theta"]["body"]["w1"])
  for metrics in history:
    assert set(metrics) == {
      "loss",
      "bit_accuracy",
      "perfect_recall",
      "grad_norm",
      "nonfinite",
      "nonfinite_streak",
      "nonfinite_steps",
    }
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["nonfinite"] == metrics["nonfinite_steps"] == 0
    assert metrics["grad_norm"] > 0
  # The training loss falls too (means over 5 steps of fresh episodes each).
  losses = [m["loss"] for m in history]
  assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_optimizer_is_adam_on_globally_clipped_gradients():
  optimizer = meta_train.make_optimizer(learning_rate=0.1, clip_norm=0.5)
  reference, unclipped = optax.adam(0.1), optax.adam(0.1)
  params = {"a": np.zeros(3, np.float32), "b": np.zeros((), np.float32)}
  state, ref_state, raw_state = (o.init(params) for o in (optimizer, reference, unclipped))
  differs = False
  for g in ([30.0, 40.0, 0.0, 1.0], [0.1, -0.2, 0.3, 0.0], [-5.0, 1.0, 2.0, 3.0]):
    grads = {"a": np.array(g[:3], np.float32), "b": np.array(g[3], np.float32)}
    norm = np.sqrt(sum(x * x for x in g))
    clipped = jax.tree.map(lambda x, n=norm: x * min(1.0, 0.5 / n), grads)
    updates, state = optimizer.update(grads, state, params)
    want, ref_state = reference.update(clipped, ref_state, params)
    raw, raw_state = unclipped.update(grads, raw_state, params)
    chex.assert_trees_all_close(updates, want, rtol=1e-5, atol=1e-7)
    differs |= not np.allclose(raw["a"], want["a"], atol=1e-4)
  assert differs  # the clipping mattered on this gradient sequence


def test_decay_steps_give_a_cosine_learning_rate_down_to_a_tenth():
  """With a constant gradient Adam's step is the learning rate itself: it starts at 0.1, is halfway
  down the cosine (0.055) at step 10 of 20, a tenth (0.01) from step 20 on; without decay it stays."""
  decayed = meta_train.make_optimizer(learning_rate=0.1, clip_norm=10.0, decay_steps=20)
  constant = meta_train.make_optimizer(learning_rate=0.1, clip_norm=10.0)
  params, grads = np.zeros(2, np.float32), np.ones(2, np.float32)
  steps = {}
  for name, optimizer in (("decayed", decayed), ("constant", constant)):
    state, sizes = optimizer.init(params), []
    for _ in range(25):
      updates, state = optimizer.update(grads, state, params)
      sizes.append(float(-updates[0]))
    steps[name] = sizes
  np.testing.assert_allclose(
    [steps["decayed"][i] for i in (0, 10, 20, 24)], [0.1, 0.055, 0.01, 0.01], rtol=1e-3
  )
  np.testing.assert_allclose(steps["constant"], 0.1, rtol=1e-3)


def test_init_train_state():
  cfg = remember.get_config("tiny")
  topos, meta_batch, optimizer = meta_train.setup_meta_batch(cfg)
  state = meta_train.init_train_state(jax.random.PRNGKey(0), topos, meta_batch, optimizer)
  assert state.carries == (None,) and int(state.step) == 0
  streaming = remember.get_config("tiny,streaming")
  streaming.train.batch_size = 2
  topos_s, batch_s, optimizer_s = meta_train.setup_meta_batch(streaming)
  state_s = meta_train.init_train_state(jax.random.PRNGKey(0), topos_s, batch_s, optimizer_s)
  # Streaming runs carry their never-reset streams, staggered in phase, in the train state.
  (carry,) = state_s.carries
  chex.assert_shape(carry.net_state.bodies, (2, topos_s[0].num_neurons, streaming.rule.body_dim))
  np.testing.assert_array_equal(carry.position.t, [0, streaming.task.window // 2])
