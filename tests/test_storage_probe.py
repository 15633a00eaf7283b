"""Tests of `learned_rules.storage_probe`: a rule that writes the pre x post product whatever the
synapses hold reads as Hebbian; the ratios' arithmetic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import config as config_lib
from learned_rules import evaluation, rules, storage_probe
from learned_rules.configs import remember


def _hebbian_theta(spec: rules.RuleSpec) -> rules.Theta:
  """A rule whose synapse write is a function of a_post x a_pre only (no synapse-state input, no
  per-neuron terms), with an input drive so strong that every clamped neuron shows sign(x): it writes
  the same for a stored pair as for a new one."""
  theta = rules.init_theta(jax.random.PRNGKey(3), spec)
  syn = dict(theta["synapse"])
  for name in ("w_s", "w_post", "w_pre", "b1", "b2"):
    syn[name] = jnp.zeros_like(syn[name])
  syn["w_bi"] = jnp.zeros_like(syn["w_bi"]).at[:, 0, 0].set(0.5)
  return {**theta, "synapse": syn, "w_in": jnp.full_like(theta["w_in"], 30.0)}


def test_a_rule_that_ignores_what_it_holds_reads_as_hebbian():
  cfg = remember.get_config("tiny")
  cfg.task.num_snippets = 3
  topo = config_lib.make_topology(cfg)
  problem = config_lib.problem(cfg, topo)
  theta = _hebbian_theta(problem.rule)
  # Each episode's write is measured against the blank branch, whose own (input-free) write projects
  # on the shown pair by chance; over many episodes that averages out.
  result = storage_probe.storage_probe(theta, topo, problem, evaluation.eval_key(0), num_episodes=512)
  assert np.abs(result["alpha"]["new"]).max() > 1e-2  # it writes
  assert result["ratio"]["old"] == pytest.approx(1.0, abs=0.03)
  assert result["ratio"]["flipped"] == pytest.approx(1.0, abs=0.03)
  assert result["kind"] == "hebbian" and abs(result["error_share"]) < 0.03
  assert result["K"] == 3 and result["episodes"] == 512 and 0.0 <= result["recall"] <= 1.0


def test_error_share_runs_from_hebbian_to_delta():
  assert storage_probe.error_share({"old": 1.0, "flipped": 1.0}) == 0.0
  assert storage_probe.error_share({"old": 0.0, "flipped": 2.0}) == 1.0
  assert storage_probe.error_share({"old": 0.26, "flipped": 1.19}) == pytest.approx(0.465)
  kinds = [storage_probe.kind_of(s) for s in (0.1, 0.5, 0.9)]
  assert kinds == ["hebbian", "between", "delta"]
