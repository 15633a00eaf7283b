"""Tests of `experiments.capacity`: a tiny study end to end, and its config checks."""

from __future__ import annotations

import json
import os

import pytest

from experiments import capacity
from experiments.configs import capacity as capacity_configs
from learned_rules import config as config_lib


def _tiny_study():
  study = capacity_configs.get_config("tiny")
  study.networks = "full"
  study.k_values = (1, 2)
  return study


def test_tiny_study_writes_records_and_figure(tmp_path):
  records = capacity.run(_tiny_study(), str(tmp_path))
  assert {(r["rule"], r["K"]) for r in records} == {
    (rule, k) for rule in ("learned", "hebbian", "pseudo_inverse") for k in (1, 2)
  }
  for r in records:
    assert r["network"] == "full" and r["N"] == 12 and r["synapses"] == 12 * 11
    assert 0.0 <= r["perfect_recall"] <= r["bit_accuracy"] <= 1.0
  # K = 1 holds no cross-talk: both linear memories recall it perfectly.
  for r in records:
    if r["rule"] != "learned" and r["K"] == 1:
      assert r["bit_accuracy"] == 1.0, r
  with open(os.path.join(tmp_path, "capacity.json")) as f:
    assert json.load(f)["records"] == records
  assert os.path.getsize(os.path.join(tmp_path, "recall_vs_k.png")) > 1000
  assert os.path.isdir(os.path.join(tmp_path, "full", "checkpoints"))  # a resumable meta-training run


@pytest.mark.parametrize(
  "field,value",
  [("networks", "full,ring"), ("baselines", "oracle"), ("k_values", ()), ("k_values", (0, 1))],
)
def test_invalid_study_fails_before_anything_runs(tmp_path, field, value):
  study = _tiny_study()
  study[field] = value
  with pytest.raises(config_lib.ConfigError, match=field):
    capacity.run(study, str(tmp_path / "study"))
  assert not os.path.exists(tmp_path / "study")  # nothing written
