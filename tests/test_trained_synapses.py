"""Tests of the `net.trained_synapses` control (variant `routing`): synapse updates off, every synapse's
fixed state a meta-parameter of its own."""

from __future__ import annotations

import chex
import jax
import ml_collections
import numpy as np
import pytest

from learned_rules import checkpointing, meta_train, network, pretrained, tasks, unroll
from learned_rules import config as config_lib
from learned_rules.configs import remember

SW = network.SYNAPSE_WEIGHTS


def _routing(variant: str = "tiny") -> ml_collections.ConfigDict:
  cfg = remember.get_config(f"{variant},routing")
  cfg.baseline_synapses_off = False
  return cfg


# ---- config ----


def test_trained_synapses_need_synapse_updates_off():
  cfg = _routing()
  config_lib.validate(cfg)
  cfg.net.synapse_updates = True
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(cfg)
  message = str(info.value)
  assert info.value.field == "net.trained_synapses" and "\n" not in message
  assert message.startswith("net.trained_synapses: ") and "net.synapse_updates=False" in message


def test_a_config_without_the_field_means_false():
  """Configs written before the field (shipped rules, older runs) validate, build the usual topology and
  resume under today's config, whose default is False; True is a difference."""
  today = checkpointing.config_to_dict(remember.get_config("tiny"))
  old = checkpointing.config_to_dict(remember.get_config("tiny"))
  del old["net"]["trained_synapses"]
  config_lib.validate(ml_collections.ConfigDict(old))
  assert config_lib.trained_synapses(old) is False
  assert config_lib.make_topology(ml_collections.ConfigDict(old).net).trained_synapses is False
  assert checkpointing.config_differences(old, today) == []
  routing = checkpointing.config_to_dict(_routing())
  assert "net.trained_synapses: saved False, now True" in checkpointing.config_differences(old, routing)
  assert config_lib.make_topology(_routing().net).trained_synapses is True


# ---- the weights and the network state ----


@pytest.mark.parametrize("variant", ["tiny", "tiny,layered_feedback", "tiny,sparse"])
def test_synapse_weights_are_shaped_like_the_synapse_state(variant):
  cfg = _routing(variant)
  topo = config_lib.make_topology(cfg.net)
  weights = network.init_synapse_weights(jax.random.PRNGKey(0), topo, cfg.rule.synapse_dim)
  assert len(weights) == len(topo.blocks)
  for b, (block, w) in enumerate(zip(topo.blocks, weights, strict=True)):
    chex.assert_shape(w, (block.post_size, block.pre_size, cfg.rule.synapse_dim))
    mask = np.ones(w.shape[:2]) if topo.block_masks[b] is None else np.asarray(topo.block_masks[b])
    assert np.all(np.asarray(w)[mask == 0] == 0)  # absent synapses: zero
    assert 0.5 < np.std(np.asarray(w)[mask > 0]) < 1.5  # standard normal
  # Only a trained_synapses topology gets them.
  theta = {"init_synapse": np.zeros((3, 3, cfg.rule.synapse_dim), np.float32)}
  plain = config_lib.make_topology(remember.get_config(variant).net)
  assert network.with_synapse_weights(theta, plain, None) is theta


def test_init_net_state_without_the_weights_is_refused():
  topo = config_lib.make_topology(_routing().net)
  with pytest.raises(ValueError, match="trained_synapses.*synapse_weights"):
    network.init_net_state({"init_body": np.zeros((3, 8), np.float32)}, topo, jax.random.PRNGKey(0), 0.1)


@pytest.fixture(scope="module")
def episode_run():
  """Initial theta of a `tiny,routing` run (as the trainer makes it), and one jitted pass over a batch of
  episodes: the meta-loss's gradient, the initial and the final network states."""
  cfg = _routing()
  topo, problem, optimizer = meta_train.setup(cfg)
  batch = 2
  state = meta_train.init_train_state(
    meta_train.train_key(0), (topo,), meta_train.MetaBatch.of(problem, batch), optimizer
  )
  key_ep, key_state = jax.random.split(jax.random.PRNGKey(5))
  episodes = jax.vmap(tasks.sample_episode, in_axes=(0, None))(jax.random.split(key_ep, batch), problem.task)

  def objective(theta):
    initial = unroll.init_batch_states(theta, topo, problem, key_state, batch)
    final, readout = jax.vmap(unroll.unroll, in_axes=(None, None, None, 0, 0))(
      theta, topo, problem, initial, episodes.x
    )
    return unroll.readout_loss(readout, episodes, problem.loss), (initial, final)

  (loss, (initial, final)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(state.theta)
  return dict(topo=topo, theta=state.theta, loss=loss, initial=initial, final=final, grads=grads)


def test_initial_synapses_are_the_trained_weights_and_stay_frozen(episode_run):
  topo, theta = episode_run["topo"], episode_run["theta"]
  assert len(theta[SW]) == len(topo.blocks)
  initial, final = episode_run["initial"], episode_run["final"]
  for w, syn0, syn1 in zip(theta[SW], initial.synapses, final.synapses, strict=True):
    for b in range(syn0.shape[0]):  # every episode of the batch: the weights, no noise
      np.testing.assert_array_equal(syn0[b], w)
    np.testing.assert_array_equal(syn1, syn0)  # no synapse changed during the episode
  bodies = np.asarray(initial.bodies)
  assert not np.allclose(bodies[0], bodies[1])  # the bodies keep their noise


def test_the_meta_gradient_reaches_every_synapse_weight(episode_run):
  topo, grads = episode_run["topo"], episode_run["grads"]
  assert np.isfinite(float(episode_run["loss"]))
  for b, g in enumerate(grads[SW]):
    g = np.asarray(g)
    assert np.all(np.isfinite(g))
    mask = np.ones(g.shape[:2]) if topo.block_masks[b] is None else np.asarray(topo.block_masks[b])
    assert np.all(np.abs(g)[mask > 0] > 0), "a synapse weight gets no gradient"
    assert np.all(g[mask == 0] == 0)
  # The synapse rule and the per-type initial synapse state play no part.
  assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree.leaves(grads["synapse"]))
  assert np.all(np.asarray(grads["init_synapse"]) == 0)


# ---- meta-training, resuming, exporting ----


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """`tiny,routing` for 3 meta steps in one go, and for 2 then resumed for a third (no evaluation)."""
  root = tmp_path_factory.mktemp("routing")
  cfg = _routing()
  cfg.train.num_steps = 3
  whole, halves = str(root / "whole"), str(root / "halves")
  meta_train.train_and_evaluate(cfg, whole, evaluate=False)
  first = _routing()
  first.train.num_steps = 2
  meta_train.train_and_evaluate(first, halves, evaluate=False)
  _, _, after_two = meta_train.load_run(halves)
  after_two = jax.device_get(after_two)
  meta_train.train_and_evaluate(cfg, halves, evaluate=False)
  return dict(cfg=cfg, whole=whole, halves=halves, after_two=after_two)


def test_meta_steps_change_the_synapse_weights(runs):
  topo, problem, optimizer = meta_train.setup(runs["cfg"])
  initial = meta_train.initial_train_state(
    (topo,), meta_train.MetaBatch.of(problem, 2), optimizer, runs["cfg"].seed
  )
  trained = runs["after_two"]
  assert int(trained.step) == 2
  for w0, w in zip(initial.theta[SW], trained.theta[SW], strict=True):
    assert np.all(np.isfinite(w)) and not np.allclose(w, w0)
  # The optimizer's state covers them too.
  assert any(SW in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(trained.opt_state))


def test_a_resumed_run_restores_the_synapse_weights(runs):
  _, topo, whole = meta_train.load_run(runs["whole"])
  _, _, resumed = meta_train.load_run(runs["halves"])
  assert topo.trained_synapses and int(whole.step) == int(resumed.step) == 3
  chex.assert_trees_all_equal(resumed, whole)


def test_such_a_run_loads_but_is_not_saved_as_a_rule(runs, tmp_path):
  rule = pretrained.load_rule(runs["whole"])
  assert rule.topology.trained_synapses and SW in rule.theta
  with pytest.raises(pretrained.RuleSaveError, match="trained_synapses"):
    pretrained.save_rule(rule, str(tmp_path / "routing"))
  assert not list(tmp_path.iterdir())
