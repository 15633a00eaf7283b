"""Tests of meta-batches that mix problems (`train.mixture`): two network sizes at two K train one rule.

The meta-gradient is the mean of the members' own; a two-size run checkpoints, is stopped by SIGTERM,
and resumes to the same bits as an uninterrupted run; an invalid member is refused naming the field.
"""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
import pytest

from learned_rules import config as config_lib
from learned_rules import meta_train
from learned_rules.configs import remember

STEPS = 4


def _mixture():
  cfg = remember.get_config("tiny,mixture")
  cfg.train.num_steps = STEPS
  cfg.train.checkpoint_every = 2
  cfg.eval.num_episodes = 4
  return cfg


def test_the_mixture_variant_has_two_sizes_and_two_k():
  topos, meta_batch, _ = meta_train.setup_meta_batch(_mixture())
  sizes = [t.num_neurons for t in topos]
  ks = [p.task.num_snippets for p in meta_batch.problems]
  assert sizes[1] == 2 * sizes[0] and ks[1] == 2 * ks[0]
  assert meta_batch.problems[0].rule == meta_batch.problems[1].rule  # one rule for both


def test_the_meta_gradient_is_the_mean_of_the_members(trees_close):
  cfg = _mixture()
  topos, meta_batch, optimizer = meta_train.setup_meta_batch(cfg)
  state = meta_train.init_train_state(meta_train.train_key(0), topos, meta_batch, optimizer)
  key = meta_train.step_key(0)
  metrics, grads, _ = jax.jit(meta_train.objective_and_grads, static_argnums=2)(state, topos, meta_batch, key)
  step_key = jax.random.fold_in(key, state.step)
  each = []
  for i, est in enumerate(meta_batch.made()):
    member_key = step_key if i == 0 else jax.random.fold_in(step_key, i)
    each.append(jax.jit(est.grad)(state.theta, topos[i], state.carries[i], member_key))
  trees_close(grads, jax.tree.map(lambda a, b: (a + b) / 2, each[0][0], each[1][0]), rtol=1e-5, atol=1e-7)
  for i, (_, member_metrics, _) in enumerate(each):
    assert float(metrics[f"p{i}_loss"]) == pytest.approx(float(member_metrics["loss"]), rel=1e-6)
  assert float(metrics["loss"]) == pytest.approx(float(each[0][1]["loss"] + each[1][1]["loss"]) / 2, rel=1e-6)


def test_a_two_size_run_stopped_by_sigterm_resumes_to_the_same_bits(tmp_path, monkeypatch):
  cfg = _mixture()
  whole = str(tmp_path / "whole")
  results = meta_train.train_and_evaluate(cfg, whole)
  assert len(results["members"]) == 2 and results["meta_steps"] == STEPS
  assert results["bit_accuracy"] == pytest.approx(np.mean([m["bit_accuracy"] for m in results["members"]]))

  make = meta_train.make_run_meta_step

  def make_signalling(*args, **kwargs):
    meta_step = make(*args, **kwargs)

    def step(state, topos):
      state, step_metrics = meta_step(state, topos)
      if int(state.step) == 3:  # between checkpoints: the run saves step 3 and stops
        os.kill(os.getpid(), signal.SIGTERM)
      return state, step_metrics

    return step

  halves = str(tmp_path / "halves")
  with monkeypatch.context() as patch:
    patch.setattr(meta_train, "make_run_meta_step", make_signalling)
    with pytest.raises(meta_train.Preempted, match="after step 3"):
      meta_train.train_and_evaluate(cfg, halves, evaluate=False)
  assert sorted(os.listdir(os.path.join(halves, "checkpoints"))) == ["2", "3"]
  meta_train.train_and_evaluate(cfg, halves, evaluate=False)
  _, _, a = meta_train.load_run(whole)
  _, _, b = meta_train.load_run(halves)
  assert int(a.step) == int(b.step) == STEPS
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
  "mixture,match",
  [
    (("", "net.nope=3"), "member 1: net.nope: no such field"),
    (("", "rule.hidden=3"), "member 1: every member must share the rule"),
    (("seed=1",), "member 0: seed: only net, rule, task"),
    (("net.num_hidden=-1",), "member 0: net.num_hidden: must be >= 0"),
  ],
)
def test_an_invalid_member_is_refused_naming_it(mixture, match):
  cfg = remember.get_config("tiny")
  cfg.train.mixture = mixture
  with pytest.raises(config_lib.ConfigError, match=match) as info:
    config_lib.validate(cfg)
  assert info.value.field == "train.mixture"
