"""Tests of `learned_rules.evaluation`: held-out metrics, the problem of a config, and capacity."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from learned_rules import config as config_lib
from learned_rules import evaluation, meta_train, rules
from learned_rules.configs import remember


def test_capacity_is_the_largest_k_at_the_threshold():
  records = [
    {"K": 1, "bit_accuracy": 1.0},
    {"K": 2, "bit_accuracy": 0.995},
    {"K": 4, "bit_accuracy": 0.96},
    {"K": 8, "bit_accuracy": 0.7},
  ]
  assert evaluation.capacity(records, 0.99) == 2
  assert evaluation.capacity(records, 0.95) == 4
  assert evaluation.capacity(records, 0.5) == 8
  assert evaluation.capacity(records, 1.01) == 0
  assert evaluation.capacity([], 0.99) == 0


def test_problem_from_config(make_cfg):
  cfg = make_cfg("tiny")
  cfg.train.loss = "logistic"
  cfg.rule.fast_synapse = False
  cfg.train.remat = "nested"
  topo, problem, _ = meta_train.setup(cfg)
  assert problem.loss == "logistic" and problem.rule.fast_synapse is False and problem.remat == "nested"
  assert problem.init_noise == cfg.net.init_noise
  assert problem.rule.num_types == topo.num_types
  swept = config_lib.problem(cfg, topo, num_snippets=3)
  assert swept.task.num_snippets == swept.task.num_queries == 3
  hash(problem)  # a static argument of the jitted evaluation


def test_evaluate_averages_whole_batches():
  """`evaluate` is the mean of `eval_batch` over batches drawn from `fold_in(key, i)`."""
  cfg = remember.get_config("tiny")
  topo, problem, _ = meta_train.setup(cfg)
  theta = rules.init_theta(jax.random.PRNGKey(0), problem.rule)
  key = evaluation.eval_key(cfg.seed)
  batch = cfg.eval.num_episodes  # the driver's evaluation batch: its program is compiled once
  result = evaluation.evaluate(theta, topo, problem, key, 2 * batch, batch=batch)
  parts = [evaluation.eval_batch(theta, topo, jax.random.fold_in(key, i), problem, batch) for i in range(2)]
  assert set(result) == {"loss", "bit_accuracy", "perfect_recall"}
  for name, value in result.items():
    assert value == pytest.approx(float(np.mean([p[name] for p in parts])), rel=1e-6)
  # Held-out episodes differ from batch to batch, and are a function of the key alone.
  assert float(parts[0]["loss"]) != float(parts[1]["loss"])
  assert evaluation.evaluate(theta, topo, problem, key, 2 * batch, batch=batch) == result
  assert not np.array_equal(evaluation.eval_key(0), meta_train.train_key(0))


def test_recall_vs_k_equals_one_k_at_a_time():
  """One program for every K (episodes padded, each K run for its own steps) gives the numbers of
  `evaluate` at each K alone."""
  cfg = remember.get_config("tiny")
  topo, problem, _ = meta_train.setup(cfg)
  theta = rules.init_theta(jax.random.PRNGKey(1), problem.rule)
  key = evaluation.eval_key(cfg.seed)
  records = evaluation.recall_vs_k(theta, topo, problem, (1, 3), 6, key)
  assert [r["K"] for r in records] == [1, 3]
  for record in records:
    problem_k = config_lib.problem(cfg, topo, num_snippets=record["K"])
    alone = evaluation.evaluate(theta, topo, problem_k, key, 6)
    interval = {"bit_accuracy_low", "bit_accuracy_high", "episodes", "scored_bits"}
    assert set(record) == {"K", *alone, *interval, evaluation.BY_POSITION}
    assert len(record[evaluation.BY_POSITION]) == record["K"]
    assert record["episodes"] == 6 and record["scored_bits"] == 6 * record["K"] * 2 * topo.n_out
    assert record["bit_accuracy_low"] - 1e-6 <= record["bit_accuracy"] <= record["bit_accuracy_high"] + 1e-6
    for name, value in alone.items():
      assert record[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_eval_batch_over_k_rejects_problems_that_differ_beyond_k():
  cfg = remember.get_config("tiny")
  topo, problem, _ = meta_train.setup(cfg)
  theta = rules.init_theta(jax.random.PRNGKey(1), problem.rule)
  other = dataclasses.replace(problem, loss="logistic")
  with pytest.raises(ValueError, match="differ only in K"):
    evaluation.eval_batch_over_k(theta, topo, jax.random.PRNGKey(0), (problem, other), 2)
