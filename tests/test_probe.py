"""Tests of the rule probe (`learned_rules.probe`) and its study of a rule (`learned_rules.probe_study`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import types

import jax
import numpy as np
import pytest

from learned_rules import Rule, baselines, network, probe, probe_study, rules, tasks, unroll
from learned_rules import config as config_lib
from learned_rules.configs import remember


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


def test_increment_at_the_real_inputs_is_the_one_the_network_applied(theta, small_spec, full_topo):
  """In every recorded context, the probe's increment at the step's real inputs is the network's own
  change of that synapse (`network.network_step`), and the recorded messages give its body update."""
  n_in, n_out = full_topo.n_in, full_topo.n_out
  task = tasks.TaskSpec(
    num_neurons=full_topo.num_neurons, n_in=n_in, n_out=n_out, num_snippets=2, num_queries=2
  )
  problem = unroll.Problem(rule=small_spec, task=task)
  batch = 2
  ctx = probe.record_contexts(theta, full_topo, problem, jax.random.PRNGKey(4), batch)
  steps, n = task.episode_steps * batch, full_topo.num_neurons
  assert ctx.x.shape == (steps, n) and ctx.synapses.shape == (steps, n, n, small_spec.synapse_dim)
  # The inputs are those of the episodes the network's evaluation draws for the same key, step-major.
  episodes, _ = baselines.sample_episodes(task, jax.random.PRNGKey(4), batch)
  np.testing.assert_array_equal(ctx.x, np.swapaxes(np.asarray(episodes.x), 0, 1).reshape(steps, n))
  # Each step (rows t * B + b) starts from the synapses the one before left, and from the body that the
  # one before's recorded message gives.
  np.testing.assert_array_equal(ctx.synapses[batch:], ctx.next_synapses[:-batch])
  emb = np.asarray(theta["type_emb"])[ctx.types]
  body_update = jax.jit(jax.vmap(rules.body_update, in_axes=(None, 0, 0, 0, 0, None)), static_argnums=5)
  new_bodies = body_update(theta, ctx.bodies[:-batch].reshape(-1, small_spec.body_dim),
                           ctx.messages[:-batch].reshape(-1, small_spec.msg_dim), ctx.x[:-batch].reshape(-1),
                           np.tile(emb, (steps - batch, 1)), small_spec)  # fmt: skip
  np.testing.assert_allclose(
    new_bodies.reshape(steps - batch, n, -1), ctx.bodies[batch:], rtol=1e-5, atol=1e-6
  )
  # Every synapse at every step: the probe's increment at the real inputs is the applied one.
  s, post, pre = np.meshgrid(np.arange(steps), np.arange(n), np.arange(n), indexing="ij")
  keep = np.asarray(full_topo.mask)[post, pre] > 0
  s, post, pre = s[keep], post[keep], pre[keep]
  neuron = lambda i: (ctx.bodies[s, i], ctx.messages[s, i], emb[i])  # noqa: E731
  increment = jax.jit(jax.vmap(functools.partial(probe.context_increment, theta, small_spec, True)))
  got = increment(neuron(post), neuron(pre), ctx.synapses[s, post, pre], ctx.x[s, post], ctx.x[s, pre])
  applied = ctx.next_synapses[s, post, pre] - ctx.synapses[s, post, pre]
  np.testing.assert_allclose(got, applied, rtol=1e-4, atol=1e-6)
  assert np.abs(applied).max() > 1e-3  # the rule did change the synapses
  # The probe averages such increments over contexts drawn among the pair's synapses.
  picks = probe.sample_contexts(ctx, 1, 0, 16)
  assert np.all(ctx.types[picks[1]] == 1) and np.all(ctx.types[picks[2]] == 0)
  p = probe.probe(theta, small_spec, ctx, 1, 0, xs=np.array([-1.0, 0.0, 1.0]), num_contexts=16)
  one = lambda i: (ctx.bodies[picks[0], i], ctx.messages[picks[0], i], emb[i])  # noqa: E731
  xs = np.full(16, 1.0, np.float32), np.full(16, -1.0, np.float32)
  want = increment(one(picks[1]), one(picks[2]), ctx.synapses[picks], *xs).mean(axis=0)
  np.testing.assert_allclose(p.delta[2, 0], want, rtol=1e-4, atol=1e-6)
  assert p.delta.shape == (3, 3, small_spec.synapse_dim) and p.num_contexts == 16
  # No synapse of a type pair, no probe: an input neuron receives nothing in a layered network.
  layered = network.make_layered(n_in, n_out, (n - n_in - n_out,))
  assert probe.sample_contexts(dataclasses.replace(ctx, mask=np.asarray(layered.mask)), 0, 0, 4) is None


@pytest.mark.usefixtures("optimized_evaluation")
def test_shipped_rule_probe_table_and_figure(tmp_path, capsys):
  """`python -m experiments.probe_rule` on the shipped rule, in-process: table, storage probe, figure."""
  from experiments import probe_rule

  result = probe_rule.main(None, str(tmp_path), types.SimpleNamespace(rule="hetero", figure_dir=None))
  out = capsys.readouterr().out
  assert "input->output" in out and "hebbian" in out and "error-driven share" in out
  with open(tmp_path / "probe.json") as f:
    saved = json.load(f)
  records = saved["records"]
  assert records == result and len(saved["storage"]) == 2  # at the training K and at 3N/16
  assert {r["rule"] for r in records} == {"learned", "untrained"} and len(records) == 2 * 9
  for r in records:
    assert sum(r[t] for t in probe.TERMS) == pytest.approx(1.0, abs=1e-6)
  assert "contexts of the rule's network" in " ".join(out.split())
  # Meta-training made the synapse that stores key -> value pairs Hebbian (docs/RESULTS.md).
  shares = {r["rule"]: r["hebbian"] for r in records if r["pair"] == "input->output"}
  assert shares["learned"] > 0.6 and shares["learned"] > shares["untrained"] + 0.3, shares
  assert os.path.getsize(os.path.join(tmp_path, "probe.png")) > 10_000


def test_a_network_without_synapse_updates_is_refused():
  cfg = remember.get_config("tiny")
  cfg.net.synapse_updates = False
  topo = config_lib.make_topology(cfg.net)
  theta = rules.init_theta(jax.random.PRNGKey(0), config_lib.rule_spec(cfg, topo))
  with pytest.raises(config_lib.ConfigError, match="^net.synapse_updates: test: .*synapse updates off"):
    probe_study.probe_rule(Rule(theta=theta, config=cfg, meta_steps=0, source="test"))
