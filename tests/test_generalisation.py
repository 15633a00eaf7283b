"""Tests of `learned_rules.generalisation_study`: a rule evaluated off the setting it was trained in."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import (
  Rule,
  baselines,
  generalisation_study,
  load_rule,
  rules,
  save_rule,
  streaming,
  tasks,
)
from learned_rules import config as config_lib
from learned_rules import evaluation as evaluate_lib
from learned_rules.configs import remember


def test_settings_move_the_config_as_named():
  cfg = remember.get_config("")
  n = config_lib.make_topology(cfg.net).num_neurons
  for name, overrides in generalisation_study.SETTINGS.items():
    moved = config_lib.with_overrides(cfg, overrides(config_lib.experiment_spec(cfg)))
    config_lib.validate(moved)
    topo = config_lib.make_topology(moved.net)
    assert topo.num_types == 3, name  # the rule's type embeddings still fit
    if name.startswith("4x neurons"):
      assert topo.num_neurons == 4 * n and topo.n_in == cfg.net.num_inputs
  assert config_lib.with_overrides(cfg, {"task.num_snippets": 3}).task.num_snippets == 3
  assert cfg.task.num_snippets == 8  # the rule's own config is left alone


def test_settings_make_the_table(tmp_path):
  cfg = remember.get_config("tiny")
  topo = config_lib.make_topology(cfg.net)
  theta = rules.init_theta(jax.random.PRNGKey(0), config_lib.rule_spec(cfg, topo))
  save_rule(Rule(theta=theta, config=cfg, meta_steps=0, source="test"), str(tmp_path / "tiny"))
  keep = ("in distribution", "2x snippets", "other protocol")
  rule = load_rule(str(tmp_path / "tiny"))
  num_episodes = 64
  settings = {k: generalisation_study.SETTINGS[k] for k in keep}
  records = generalisation_study.evaluate_settings(rule, num_episodes, settings)
  out = generalisation_study.format_table("tiny", rule, records, num_episodes)
  assert [r["setting"] for r in records] == list(keep)
  assert records[1]["K"] == 2 * cfg.task.num_snippets
  assert records[2]["overrides"]["task.protocol"] == "auto"
  base = records[0]["bit_accuracy"]
  for r in records:
    assert r["relative_bit_accuracy"] == pytest.approx(r["bit_accuracy"] / base, rel=1e-12), r
    # The key-blind floor on the network's own held-out episodes of the setting: recomputed from the
    # setting's config, and near its expectation (0.75 at K = 2, 0.6875 at K = 4; 64 episodes).
    moved = config_lib.with_overrides(cfg, r["overrides"])
    spec = config_lib.problem(moved, config_lib.make_topology(moved.net)).task
    want = baselines.evaluate("key_blind", spec, evaluate_lib.eval_key(cfg.seed), num_episodes)
    assert r["key_blind_bit_accuracy"] == want["bit_accuracy"], r
    assert abs(r["key_blind_bit_accuracy"] - baselines.key_blind_accuracy(r["K"])) < 0.07, r
    assert r["beats_key_blind"] == (r["bit_accuracy"] > r["key_blind_bit_accuracy"] + 0.01), r
    assert not r["beats_key_blind"], r  # an untrained rule does not use the key
    row = next(line for line in out.splitlines() if line.startswith(r["setting"]))
    assert row.split()[-2:] == [f"{r['key_blind_bit_accuracy']:.3f}", "NO"], row
  assert "key-blind" in out and "beats it" in out
  assert json.loads(json.dumps(records)) == records  # as experiments.generalisation writes them
  assert load_rule(str(tmp_path / "tiny")).meta_steps == 0


@functools.partial(jax.jit, static_argnums=(0, 2))
def _streams_and_floor(spec: tasks.TaskSpec, key: jax.Array, batch: int):
  """The streams `evaluate.eval_batch` runs for `key`, concatenated `[B, T, ...]`, their starts, the
  floor's readouts on them, the value of every slot `[B, slots, n_out]`, and the floor's metrics
  (`stream_key_blind_batch`). One program."""
  starts = streaming.stream_positions(key, spec, batch)
  positions, windows = starts, []
  for _ in range(evaluate_lib.STREAM_EVAL_WINDOWS):
    window, positions = jax.vmap(tasks.sample_stream_window, in_axes=(0, None))(positions, spec)
    windows.append(window)
  whole = jax.tree.map(lambda *w: jnp.concatenate(w, axis=1), *windows)
  readout = jax.vmap(baselines.stream_key_blind, in_axes=(0, 0, None))(whole, starts, spec)
  slots = jnp.arange((spec.window * (evaluate_lib.STREAM_EVAL_WINDOWS + 1)) // spec.slot_steps + 1)
  value = lambda k, s: tasks.sample_snippets(jax.random.fold_in(k, s), spec, 1)[1][0]  # noqa: E731  as the stream
  values = jax.vmap(jax.vmap(value, in_axes=(None, 0)), in_axes=(0, None))(starts.key, slots)
  return whole, starts, readout, values, baselines.stream_key_blind_batch(spec, key, batch)


def test_streaming_floor_is_the_majority_of_the_values_a_query_can_ask_for():
  """The streaming key-blind floor, recomputed from the streams' own snippets (`tasks.sample_snippets`
  of every slot), on the streams `evaluate.eval_batch` gives the network for the same key."""
  cfg = remember.get_config("tiny,streaming")
  spec = config_lib.task_spec(cfg, config_lib.make_topology(cfg.net))
  key, batch = jax.random.PRNGKey(3), 3
  whole, starts, readout, values, floor = jax.device_get(_streams_and_floor(spec, key, batch))
  num_windows = evaluate_lib.STREAM_EVAL_WINDOWS
  credit, scored_bits = np.zeros(num_windows), np.zeros(num_windows)
  for b in range(batch):
    t0, first_slot = int(starts.t[b]), int(starts.first_slot[b])
    for i, row in enumerate(readout[b]):
      slot = (t0 + i) // spec.slot_steps
      askable = values[b, max(slot - spec.max_lag, first_slot) : max(slot, first_slot)]
      np.testing.assert_array_equal(row, spec.present_steps * askable.sum(axis=0))
      if whole.score[b, i]:  # the asked value is one of those summed
        assert any(np.array_equal(whole.target[b, i], v) for v in askable)
        w = i // spec.window
        credit[w] += np.sum(np.where(row == 0, 0.5, row * whole.target[b, i] > 0))
        scored_bits[w] += spec.n_out
  assert scored_bits.sum() > 0
  # Windows weigh the same, as in the network's evaluation (one without a scored step counts 0).
  per_window = np.where(scored_bits > 0, credit / np.maximum(scored_bits, 1.0), 0.0)
  assert floor["bit_accuracy"] == pytest.approx(np.mean(per_window), rel=1e-6)
