"""Tests of the rule probe (`learned_rules.probe`) and its command."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from experiments import probe_rule
from learned_rules import probe, rules


def test_variance_shares_recover_a_known_mixture():
  xs = np.linspace(-1.0, 1.0, 11)
  post, pre = np.meshgrid(xs, xs, indexing="ij")
  rng = np.random.default_rng(0)
  wiggle = rng.standard_normal(post.shape)
  wiggle -= np.mean(wiggle)
  channels = [2.0 * post * pre + 0.5 * pre + 3.0, post - 0.25 * post * pre, 0.1 * wiggle]
  delta = np.stack(channels, axis=-1)
  shares, coefficients = probe.variance_shares(xs, delta)
  np.testing.assert_allclose(coefficients[0], [3.0, 0.0, 0.5, 2.0], atol=1e-9)
  np.testing.assert_allclose(coefficients[1], [0.0, 1.0, 0.0, -0.25], atol=1e-9)
  var = lambda a: np.var(a)  # noqa: E731
  expected_hebb = var(2.0 * post * pre) / var(channels[0])
  assert shares["hebbian"][0] == pytest.approx(expected_hebb)
  assert shares["pre"][0] == pytest.approx(1.0 - expected_hebb)
  assert shares["residual"][0] == pytest.approx(0.0, abs=1e-12)
  assert shares["post"][1] == pytest.approx(var(post) / var(channels[1]))
  assert shares["residual"][2] > 0.5  # noise is mostly none of the terms
  total = sum(shares[t] for t in probe.TERMS)
  np.testing.assert_allclose(total, 1.0, atol=1e-9)


def test_increment_is_one_synapse_update(small_spec):
  theta = rules.init_theta(jax.random.PRNGKey(2), small_spec)
  xs = np.array([-1.0, 0.5, 1.0])
  delta = probe.synapse_increment(theta, small_spec, 1, 0, xs)
  a = lambda t, x: rules.activation(theta, theta["init_body"][t], x, small_spec)  # noqa: E731
  s0 = theta["init_synapse"][1, 0]
  want = (
    rules.synapse_update(theta, s0, a(1, xs[2]), a(0, xs[0]), theta["type_emb"][1], theta["type_emb"][0]) - s0
  )
  np.testing.assert_allclose(delta[2, 0], want, rtol=1e-5, atol=1e-6)
  assert delta.shape == (3, 3, small_spec.synapse_dim)


def test_command_writes_table_and_figure(tmp_path, capsys):
  probe_rule.run("hetero", str(tmp_path))
  out = capsys.readouterr().out
  assert "input->output" in out and "hebbian" in out
  with open(os.path.join(tmp_path, "probe.json")) as f:
    records = json.load(f)["records"]
  assert {r["rule"] for r in records} == {"learned", "untrained"} and len(records) == 2 * 9
  for r in records:
    assert sum(r[t] for t in probe.TERMS) == pytest.approx(1.0, abs=1e-6)
  assert os.path.getsize(os.path.join(tmp_path, "probe.png")) > 10_000
