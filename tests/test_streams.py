"""Tests of `learned_rules.streaming`, `learned_rules.streams_study` and `experiments.streams`: never-reset
streams run for many windows."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import (
  Rule,
  baselines,
  load_rule,
  rule_export,
  rules,
  save_rule,
  streaming,
  streams_figures,
  streams_study,
  tasks,
)
from learned_rules import config as config_lib
from learned_rules import evaluation as evaluate_lib
from learned_rules.configs import remember

# A stream wide enough for a Hebbian memory to recall recent snippets well (n_in = n_out = 16).
WIDE = tasks.TaskSpec(protocol="streaming", num_neurons=32, n_in=16, n_out=16, max_lag=8, window=24)


def _tiny_rule(synapse_updates: bool = True) -> Rule:
  cfg = remember.get_config("tiny,streaming")
  cfg.net.synapse_updates = synapse_updates
  topo = config_lib.make_topology(cfg.net)
  theta = rules.init_theta(jax.random.PRNGKey(0), config_lib.rule_spec(cfg, topo))
  return Rule(theta=theta, config=cfg, meta_steps=0, source="test")


SIZES = {"num_streams": 2, "num_windows": 30}  # 30 windows of W = 8: 240 steps, never reset


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, run_module):
  """`(folder, results.json, stdout, stderr)`: the tiny rule (and its synapses-off twin) saved in `folder` and
  run by the command on its own protocol (no probe: a probe compiles every program again). Requested
  after `test_long_stream_...`, whose programs it then finds in the tests' compilation cache."""
  folder = tmp_path_factory.mktemp("streams")
  save_rule(_tiny_rule(), str(folder / "tiny"))
  save_rule(_tiny_rule(synapse_updates=False), str(folder / "tiny_off"))
  args = [f"--rule={folder}/tiny", f"--synapses_off={folder}/tiny_off", "--probe_max_lag=4"]
  args += [f"--num_streams={SIZES['num_streams']}", f"--num_windows={SIZES['num_windows']}"]
  done = run_module("experiments.streams", *args, f"--workdir={folder}/out", f"--figure_dir={folder}/fig")
  assert done.returncode == 0, done.stderr[-3000:]
  with open(folder / "out" / "results.json") as f:
    return folder, json.load(f), done.stdout, done.stderr


@pytest.fixture(scope="module")
def wide_windows():
  """`(positions, episodes, lags)` of a window of 3 streams of `WIDE` well into the streaming."""
  positions = streaming.stream_positions(jax.random.PRNGKey(1), WIDE, 3)
  positions = positions.replace(t=positions.t + 100)
  episodes, lags, _ = streaming._next_windows(positions, WIDE)
  return positions, episodes, lags


def test_lags_are_the_ones_the_stream_asks(wide_windows):
  positions, episodes, lags = wide_windows
  assert np.all((np.asarray(lags) >= 1) & (np.asarray(lags) <= WIDE.max_lag))
  # A scored step's target is the value of the snippet `lag` slots back.
  ts = np.asarray(positions.t)[:, None] + np.arange(WIDE.window)
  old_slots = jnp.asarray(ts // WIDE.slot_steps - np.asarray(lags))
  value = lambda key, slot: tasks.sample_snippets(jax.random.fold_in(key, slot), WIDE, 1)[1][0]  # noqa: E731
  values = jax.vmap(jax.vmap(value, in_axes=(None, 0)))(positions.key, old_slots)  # [B, W, n_out]
  scored = np.asarray(episodes.score) > 0
  assert scored.sum() >= 6
  np.testing.assert_array_equal(np.asarray(episodes.target)[scored], np.asarray(values)[scored])
  assert len(set(np.asarray(lags).ravel().tolist())) > 1
  # Binning: every scored step's n_out bits land in its own lag's bin, and nowhere else.
  readout = jnp.ones(episodes.target.shape)
  counts = streaming.lag_counts(readout, episodes, lags, WIDE.max_lag)
  expected = [
    [WIDE.n_out * float(jnp.sum(episodes.score[b] * (lags[b] == d))) for d in range(1, WIDE.max_lag + 1)]
    for b in range(3)
  ]
  np.testing.assert_allclose(counts.bits_by_lag, expected)  # [B, Dmax]: each stream's own bits
  assert float(jnp.sum(counts.correct_by_lag)) == float(
    jnp.sum((episodes.target > 0) * episodes.score[..., None])
  )


def test_online_hebbian_is_the_closed_form(wide_windows):
  episode = jax.tree.map(lambda a: a[0], wide_windows[1])
  _, readout = streaming.hebbian_window(jnp.zeros((WIDE.n_out, WIDE.n_in)), episode, WIDE, 0.9)
  np.testing.assert_allclose(readout, baselines.hebbian(episode, WIDE, 0.9), rtol=1e-5, atol=1e-4)


def test_palimpsest_forgets_and_no_decay_forgets_less():
  counts, max_weight = streaming.run_hebbian_streams(
    WIDE, jax.random.PRNGKey(3), 16, 12, jnp.asarray([0.7, 1.0])
  )
  assert counts.bits_by_lag.shape == (2, 12, 16, WIDE.max_lag) and max_weight.shape == (2, 12)
  curves = [streaming.accuracy(jax.tree.map(lambda a, i=i: a[i], counts), axis=(0, 1)) for i in range(2)]
  fast, none = curves
  assert fast[0] > 0.75 and fast[-1] < 0.6  # decay 0.7: recent snippets recalled, old ones gone
  assert (none[0] - none[-1]) < 0.5 * (fast[0] - fast[-1])
  assert float(max_weight[1, -1]) > float(max_weight[0, -1])  # without decay the weights keep growing


def test_key_blind_floor_window_by_window_is_the_floor_on_the_whole_stream():
  """`run_key_blind_streams` answers each window with only the windows before it in view; that is
  `baselines.stream_key_blind` on the whole stream at once, and its first windows are the floor the
  trainer's evaluation reports for the same key."""
  key, windows = jax.random.PRNGKey(5), 6
  counts = streaming.run_key_blind_streams(WIDE, key, 4, windows)
  assert counts.bits_by_lag.shape == (windows, 4, WIDE.max_lag)
  assert streaming.history_windows(WIDE) * WIDE.window >= (WIDE.max_lag + 1) * WIDE.slot_steps
  starts, positions, parts = streaming.stream_positions(key, WIDE, 4), None, []
  positions = starts
  for _ in range(windows):
    episodes, lags, positions = streaming._next_windows(positions, WIDE)
    parts.append((episodes, lags))
  whole = jax.tree.map(lambda *a: jnp.concatenate(a, axis=1), *[e for e, _ in parts])
  lags = jnp.concatenate([lag for _, lag in parts], axis=1)
  readout = jax.vmap(baselines.stream_key_blind, in_axes=(0, 0, None))(whole, starts, WIDE)
  expected = streaming.lag_counts(readout, whole, lags, WIDE.max_lag)
  np.testing.assert_allclose(np.sum(counts.correct_by_lag, axis=0), expected.correct_by_lag)
  np.testing.assert_allclose(np.sum(counts.bits_by_lag, axis=0), expected.bits_by_lag)
  floor = streaming.accuracy(counts, axis=(0, 1))
  assert np.nanmax(floor) < 0.8 and np.nanmin(floor) > 0.4  # it answers without the cue
  first = jax.tree.map(lambda a: a[: evaluate_lib.STREAM_EVAL_WINDOWS], counts)
  per_window = np.nan_to_num(streaming.accuracy(first, axis=(1, 2)))
  reference = baselines.stream_key_blind_batch(WIDE, key, 4)
  assert np.mean(per_window) == pytest.approx(float(reference["bit_accuracy"]), abs=1e-5)


def test_bootstrap_over_streams_resamples_whole_streams():
  """`resampled_by_lag` recomputes the forgetting curve on streams drawn with replacement: the identity
  resample gives the curve itself, a resample of one stream that stream's curve, and the interval
  widens when the streams disagree."""
  rng = np.random.default_rng(1)
  bits = np.full((3, 5, 4), 8.0)  # [windows, streams, lags]
  agree = streaming.RecallCounts(np.full((3, 5, 4), 6.0), bits)
  spread = streaming.RecallCounts(rng.integers(0, 9, (3, 5, 4)).astype(float), bits)
  identity = np.arange(5)[None]
  np.testing.assert_allclose(
    streaming.resampled_by_lag(spread, identity)[0], streaming.accuracy(spread, axis=(0, 1))
  )
  one = streaming.resampled_by_lag(spread, np.full((1, 5), 2))[0]
  np.testing.assert_allclose(one, spread.correct_by_lag[:, 2].sum(0) / 24.0)
  resamples = evaluate_lib.resample_indices(5)
  assert resamples.shape == (2000, 5) and np.array_equal(resamples, evaluate_lib.resample_indices(5))
  low, high = evaluate_lib.percentile_interval(streaming.resampled_by_lag(agree, resamples))
  np.testing.assert_allclose(low, 0.75) and np.testing.assert_allclose(high, 0.75)
  low, high = evaluate_lib.percentile_interval(streaming.resampled_by_lag(spread, resamples))
  curve = streaming.accuracy(spread, axis=(0, 1))
  assert np.all(low <= curve) and np.all(curve <= high) and np.all(high - low > 0.05)


def test_synapse_bound_follows_the_fan_in_scaling_and_is_none_when_centred():
  rule = _tiny_rule()
  topo = rule.topology
  spec = dataclasses.replace(
    config_lib.rule_spec(rule.config, topo),
    reference_fan_in=2,
    scale_rate=True,
    rate_power=0.75,
    decay_power=0.85,
  )
  p = rule.theta["synapse"]
  rate, decay = jax.nn.sigmoid(p["rate_logit"]), jax.nn.sigmoid(p["decay_logit"])
  ratio = 2.0 / np.maximum(np.asarray(topo.fan_in, np.float64), 1.0)[:, None]
  expected = np.max(rate * ratio**0.75 / (1.0 - decay ** (ratio**0.85)))
  bound = streaming.synapse_bound(rule.theta, spec, topo.fan_in)
  np.testing.assert_allclose(bound, expected, rtol=1e-5)
  assert bound != pytest.approx(streaming.synapse_bound(rule.theta))  # the fan-ins here are not 2
  centred = dataclasses.replace(spec, center_synapses=True)
  assert streaming.synapse_bound(rule.theta, centred, topo.fan_in) is None


def test_long_stream_runs_many_windows_with_finite_bounded_norms():
  rule = _tiny_rule()
  topo, problem = streams_study.on_protocol(rule, rule.config.task.max_lag)
  key = jax.random.PRNGKey(4)
  counts, norms = streaming.run_long_streams(rule.theta, topo, problem, key, 2, SIZES["num_windows"])
  assert counts.correct_by_lag.shape == (SIZES["num_windows"], 2, problem.task.max_lag)
  for name in streaming.StateNorms._fields:
    values = np.asarray(getattr(norms, name))
    assert values.shape == (SIZES["num_windows"],) and np.all(np.isfinite(values)), name
    assert np.all(values > 0), name
  assert np.all(np.asarray(norms.max_synapse) <= streaming.synapse_bound(rule.theta) + 0.5)
  assert np.all(np.asarray(norms.max_body) <= 1.0 + 0.5)
  # The same streams as meta-training's evaluation: its first windows score the same bits.
  first = jax.tree.map(lambda a: a[: evaluate_lib.STREAM_EVAL_WINDOWS], counts)
  reference = evaluate_lib.eval_batch(rule.theta, topo, key, problem, 2)
  per_window = np.nan_to_num(streaming.accuracy(first, axis=(1, 2)))  # a window with nothing scored: 0
  assert np.mean(per_window) == pytest.approx(float(reference["bit_accuracy"]), abs=1e-5)


def test_only_streaming_rules_are_accepted(tiny_run, tmp_path):
  save_rule(dataclasses.replace(_tiny_rule(), config=remember.get_config("tiny")), str(tmp_path / "h"))
  with pytest.raises(streams_study.StreamsError, match="'hetero' protocol, not 'streaming'"):
    streams_study.load_streaming_rule(str(tmp_path / "h"))
  with pytest.raises(streams_study.StreamsError, match="cannot load"):
    streams_study.load_streaming_rule(str(tmp_path / "missing"))
  folder = str(tiny_run[0])
  rule = streams_study.load_streaming_rule(f"{folder}/tiny")
  with pytest.raises(streams_study.StreamsError, match="synapse updates on"):
    streams_study.synapses_off_rule(folder, rule, f"{folder}/tiny")
  assert streams_study.synapses_off_rule(folder, rule, "") is None  # no <rule>/synapses_off run there


def test_a_rule_runs_on_a_network_of_another_size():
  """`at_size`: the rule, unchanged, on a `full` network of 24 neurons (6 in, 6 out, 12 hidden); its
  streams score the 6 value bits of that network."""
  rule = _tiny_rule()
  bigger = streams_study.at_size(rule, 24)
  assert rule.topology.num_neurons == 12 and bigger.topology.num_neurons == 24
  net = bigger.experiment
  assert (net.num_inputs, net.num_outputs, net.num_hidden) == (6, 6, 12)
  task = bigger.experiment.task
  assert bigger.theta is rule.theta and (task.n_in, task.n_out, task.num_neurons) == (6, 6, 24)
  assert task.max_lag == rule.experiment.task.max_lag and task.window == rule.experiment.task.window
  sizes, resamples = streams_study.StreamSizes(2, 3), evaluate_lib.resample_indices(2)
  record, _ = streams_study._network_memory(bigger, 2, jax.random.PRNGKey(0), sizes, resamples)
  bits = np.asarray(record["scored_bits_by_lag"])
  assert bits.sum() > 0 and np.all(bits % 6 == 0) and record["norms"]["finite"]
  layered = dataclasses.replace(rule, config=remember.get_config("tiny,streaming,layered"))
  with pytest.raises(streams_study.StreamsError, match="only a rule meta-trained on `full`"):
    streams_study.at_size(layered, 24)


def test_a_streaming_rule_exports_with_its_recall_on_fresh_streams(tmp_path):
  """`rule_export.export_rule` of a streaming rule records what the trainer's evaluation measures (it has
  no recall against K) and the file loads back with it."""
  rule = _tiny_rule()
  exported = rule_export.export_rule(rule, str(tmp_path / "s"), trained_by="a test", exported_by="a test")
  train = rule.experiment.train
  expected = evaluate_lib.evaluate(
    rule.theta, rule.topology, rule.problem(), evaluate_lib.eval_key(train.seed), train.eval_episodes
  )
  assert exported.capacity is None and len(exported.records) == 1
  record = exported.records[0]
  assert record["bit_accuracy"] == expected["bit_accuracy"] and record["streams"] == train.eval_episodes
  assert (record["max_lag"], record["window"], record["num_neurons"]) == (4, 8, 12)
  loaded = load_rule(str(tmp_path / "s"))
  assert loaded.info["recall_on_streams"] == record and "recall_vs_k" not in loaded.info


def test_command_records_every_memory(tiny_run, tmp_path):
  folder, out, stdout, _ = tiny_run
  assert "recall bit accuracy by lag" in stdout and "state norms" in stdout
  assert out["num_neurons"] == 12 and "on a network of 12 neurons" in stdout
  assert set(out["protocols"]) == {"train"}  # the probe's Dmax 4 is the rule's own
  p = out["protocols"]["train"]
  assert set(streams_study.MEMORIES) <= set(p) and len(p["learned"]["accuracy_by_lag"]) == p["max_lag"] == 4
  assert len(p["synapses_off"]["accuracy_by_window"]) == SIZES["num_windows"]
  assert len(p["learned"]["norms"]["max_synapse"]) == SIZES["num_windows"] and p["learned"]["norms"]["finite"]
  tuning = p["decay_tuning"]
  assert tuning["chosen"] == p["palimpsest"]["decay"] and p["hebbian_no_decay"]["decay"] == 1.0
  assert tuning["accuracy_tuning_streams"][streams_study.DECAY_GRID.index(tuning["chosen"])] == max(
    tuning["accuracy_tuning_streams"]
  )
  # Every memory is scored on the same stream steps; its overall accuracy is the forgetting curve's
  # mean weighted by the scored bits at each lag, each a whole number of half bits.
  bits = np.asarray(p["learned"]["scored_bits_by_lag"], np.float64)
  assert bits.sum() > 0 and np.all(bits % remember.get_config("tiny,streaming").net.num_outputs == 0)
  for m in streams_study.MEMORIES:
    assert p[m]["scored_bits_by_lag"] == p["learned"]["scored_bits_by_lag"], m
    by_lag = np.array([np.nan if a is None else a for a in p[m]["accuracy_by_lag"]], np.float64)
    assert np.array_equal(np.isnan(by_lag), bits == 0), m
    credit = np.where(bits > 0, np.nan_to_num(by_lag) * bits, 0.0)
    np.testing.assert_allclose(2 * credit, np.round(2 * credit), atol=1e-6 * bits.max(), err_msg=m)
    assert p[m]["bit_accuracy"] == pytest.approx(credit.sum() / bits.sum(), rel=1e-9), m
  # The palimpsest with the best decay at each lag: the grid's largest curve there, never below the tuned one.
  curves = np.array(
    [[np.nan if a is None else a for a in row] for row in tuning["accuracy_by_lag_eval_streams"]]
  )
  envelope = p["palimpsest_best_per_lag"]
  assert curves.shape == (len(streams_study.DECAY_GRID), p["max_lag"])
  for d, (best, decay) in enumerate(zip(envelope["accuracy_by_lag"], envelope["decay_by_lag"], strict=True)):
    assert (best is None) == bool(np.all(np.isnan(curves[:, d])))  # a lag nothing asked for: no figure
    if best is not None:
      assert best == pytest.approx(np.nanmax(curves[:, d])) and best >= p["palimpsest"]["accuracy_by_lag"][d]
      assert curves[streams_study.DECAY_GRID.index(decay), d] == pytest.approx(best)
  assert "palimpsest, best per lag" in stdout
  # Every curve has its bootstrap interval over streams around it; the rule's differences from the
  # yardsticks are the differences of the curves, with paired intervals around them.
  for m in (*streams_study.MEMORIES, "palimpsest_best_per_lag"):
    for d, a in enumerate(p[m]["accuracy_by_lag"]):
      if a is not None:
        assert p[m]["accuracy_by_lag_low"][d] <= a + 1e-9 <= p[m]["accuracy_by_lag_high"][d] + 2e-9, m
  assert set(p["learned"]["versus"]) == set(streams_study.YARDSTICKS)
  for name, v in p["learned"]["versus"].items():
    for d, diff in enumerate(v["difference_by_lag"]):
      if diff is not None:
        assert diff == pytest.approx(p["learned"]["accuracy_by_lag"][d] - p[name]["accuracy_by_lag"][d])
        assert v["low"][d] <= diff + 1e-9 <= v["high"][d] + 2e-9, name
    assert f"learned above {name} (interval of the difference above 0) at " in stdout
  assert "learned >= 0.95 with its whole interval at " in stdout and "streams of seed 0" in stdout
  # The Hebbian memories' accuracies are those of their decays in the tuning table (the same streams).
  on_eval = dict(zip(tuning["grid"], tuning["accuracy_eval_streams"], strict=True))
  assert p["palimpsest"]["bit_accuracy"] == pytest.approx(on_eval[p["palimpsest"]["decay"]], rel=1e-6)
  assert p["hebbian_no_decay"]["bit_accuracy"] == pytest.approx(on_eval[1.0], rel=1e-6)
  assert os.path.getsize(folder / "fig" / "streams.png") > 1000
  assert out["sizes"] == SIZES and not os.path.exists(folder / "out" / "streams.png")  # drawn where named
  # The figure with a probe protocol too (its records have the train protocol's layout, longer lags).
  probe = json.loads(json.dumps(p))
  for m in (*streams_study.MEMORIES, "palimpsest_best_per_lag"):
    for field in ("accuracy_by_lag", "accuracy_by_lag_low", "accuracy_by_lag_high"):
      probe[m][field] = probe[m][field] * 2
  streams_figures.plot(
    {**out, "protocols": {"train": p, "probe": {**probe, "max_lag": 8}}}, str(tmp_path / "p.png")
  )
  assert os.path.getsize(tmp_path / "p.png") > 1000


def test_command_logs_a_progress_line_per_run(tiny_run):
  """One absl INFO line per run over the streams (the rule, its synapses-off twin, the Hebbian memories
  on the tuning and the evaluation streams), each with runs done of the total and the time elapsed."""
  stderr = tiny_run[3]
  assert "streams: 4 runs of 2 streams x 30 windows, protocols train;" in stderr
  lines = [line for line in stderr.splitlines() if re.search(r"\] streams \d/4: ", line)]
  assert [re.search(r"streams (\d)/4", line)[1] for line in lines] == ["1", "2", "3", "4"], stderr[-3000:]
  names = ["decay-tuning streams", "palimpsests on the evaluation streams", "learned rule", "synapses-off"]
  assert all(name in line and "s elapsed" in line for name, line in zip(names, lines, strict=True)), lines


def test_command_rejects_a_negative_stream_seed(run_module, tmp_path):
  done = run_module("experiments.streams", "--rule=stream16", "--stream_seed=-2", f"--workdir={tmp_path}")
  assert done.returncode == 2 and "--stream_seed must be >= 0" in done.stderr, done.stderr[-2000:]


def test_a_synapses_off_run_is_not_dropped_silently_at_another_size(tmp_path):
  save_rule(_tiny_rule(), str(tmp_path / "tiny"))
  with pytest.raises(streams_study.StreamsError, match="runs at the size it was trained at"):
    streams_study.run(str(tmp_path / "tiny"), num_neurons=24, synapses_off=str(tmp_path / "off"))
