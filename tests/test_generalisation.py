"""Tests of `experiments.generalisation`: a rule evaluated off the setting it was trained in."""

from __future__ import annotations

import json
import os

import jax

from experiments import generalisation
from experiments.configs import remember
from learned_rules import Rule, load_rule, network, rules, save_rule
from learned_rules import config as config_lib


def test_settings_move_the_config_as_named():
  cfg = remember.get_config("")
  n = network.make_topology(cfg.net).num_neurons
  for name, overrides in generalisation.SETTINGS.items():
    moved = config_lib.with_overrides(cfg, overrides(cfg))
    config_lib.validate(moved)
    topo = network.make_topology(moved.net)
    assert topo.num_types == 3, name  # the rule's type embeddings still fit
    if name.startswith("4x neurons"):
      assert topo.num_neurons == 4 * n and topo.n_in == cfg.net.num_inputs
  assert config_lib.with_overrides(cfg, {"task.num_snippets": 3}).task.num_snippets == 3
  assert cfg.task.num_snippets == 8  # the rule's own config is left alone


def test_run_writes_the_table(tmp_path, monkeypatch):
  cfg = remember.get_config("tiny")
  topo = network.make_topology(cfg.net)
  theta = rules.init_theta(jax.random.PRNGKey(0), config_lib.rule_spec(cfg, topo))
  save_rule(Rule(theta=theta, config=cfg, meta_steps=0, source="test"), str(tmp_path / "tiny"))
  keep = ("in distribution", "2x snippets", "other protocol")
  monkeypatch.setattr(generalisation, "SETTINGS", {k: generalisation.SETTINGS[k] for k in keep})
  records = generalisation.run(str(tmp_path / "tiny"), 4, str(tmp_path / "out"))
  assert [r["setting"] for r in records] == list(keep)
  assert records[0]["relative_bit_accuracy"] == 1.0 and records[1]["K"] == 2 * cfg.task.num_snippets
  assert records[2]["overrides"]["task.protocol"] == "auto"
  for r in records:
    assert 0.0 <= r["bit_accuracy"] <= 1.0
  with open(os.path.join(tmp_path, "out", "generalisation.json")) as f:
    assert len(json.load(f)["records"]) == 3
  assert load_rule(str(tmp_path / "tiny")).meta_steps == 0
