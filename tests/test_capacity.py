"""Tests of the capacity study (`learned_rules.capacity_plan`, `capacity_study`, `capacity_figures`): a
tiny run of every study end to end, reading a finished one back, and the checks of its config."""

from __future__ import annotations

import dataclasses
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import capacity as capacity_command
from learned_rules import (
  baselines,
  capacity_baselines,
  capacity_figures,
  capacity_plan,
  capacity_study,
  load_rule,
  pretrained,
  rule_export,
  save_rule,
  tasks,
  trained_baselines,
)
from learned_rules import config as config_lib
from learned_rules import evaluation as evaluate_lib
from learned_rules.configs import capacity as capacity_configs

FIGURES = (
  "recall_vs_k.png",
  "auto_recall_vs_k.png",
  "capacity_vs_n.png",
  "recall_by_age.png",
  "difficulty.png",
)


def _tiny_study():
  study = capacity_configs.get_config("tiny")
  study.networks = "full"
  study.k_values = (1, 2)
  return study


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, info_lines):
  """`(workdir, records, progress)`: the tiny study run, and the progress lines it logged."""
  workdir = str(tmp_path_factory.mktemp("capacity"))
  with info_lines() as logged:
    records = capacity_study.run(capacity_plan.read_plan(_tiny_study()), workdir)
  return workdir, records, [line for line in logged if line.startswith("capacity ")]


@pytest.mark.slow  # the tiny study trains and evaluates every rule: about a minute
def test_every_study_writes_its_records_and_figure(tiny_run, tmp_path):
  workdir, records, progress = tiny_run
  # One progress line per network, setting and size, in order, the time left once a unit of every kind
  # still to run has been timed.
  units = ["networks full", "auto full", "size N=12", "size N=16", "difficulty delay=2", "difficulty delay=6"]
  assert [line.split(": ", 1)[1].split(" in ")[0] for line in progress] == units, progress
  assert [line.split(":")[0] for line in progress] == [f"capacity {i}/6" for i in range(1, 7)]
  assert ["left" in line for line in progress] == [False, False, False, False, True, False], progress
  assert {r["study"] for r in records} == set(capacity_configs.STUDIES)
  rules = {(r["study"], r["rule"]) for r in records}
  for study in ("networks", "auto"):
    for rule in ("learned", *capacity_plan.BASELINES):
      # hopfield is the Hebbian memory itself on hetero, so only the auto study lists it.
      assert ((study, rule) in rules) == (rule != "hopfield" or study == "auto"), (study, rule)
  assert {r["K"] for r in records if r["study"] == "networks"} == {1, 2}
  assert {r["value"] for r in records if r["study"] == "size"} == {12, 16}
  assert {(r["axis"], r["value"]) for r in records if r["study"] == "difficulty"} == {
    ("delay", 2),
    ("delay", 6),
  }
  for r in records:
    # A step recalled perfectly has every bit right; any other step misses at least half a bit of its
    # `value_bits` (a tie is half a bit), which bounds the bit accuracy from both sides.
    p, bits = r["perfect_recall"], r["bit_accuracy"]
    assert p - 1e-6 <= bits <= p + (1.0 - p) * (1.0 - 0.5 / r["value_bits"]) + 1e-6, r
  # The networks study's key-blind floor, recomputed by another path (one program per K, episodes not
  # padded) on the same key: the same numbers.
  cfg = capacity_plan.rule_config(_tiny_study(), "full")
  topo = config_lib.make_topology(cfg.net)
  floors = [r for r in records if (r["study"], r["network"], r["rule"]) == ("networks", "full", "key_blind")]
  assert [r["K"] for r in floors] == [1, 2]
  for r in floors:
    spec = config_lib.problem(cfg, topo, num_snippets=r["K"]).task
    want = baselines.evaluate("key_blind", spec, evaluate_lib.eval_key(cfg.seed), r["num_episodes"])
    assert r["bit_accuracy"] == pytest.approx(want["bit_accuracy"], abs=1e-6), r
    assert r["perfect_recall"] == pytest.approx(want["perfect_recall"], abs=1e-6), r
  # K = 1 holds no cross-talk: both linear memories recall it perfectly.
  for r in records:
    if r["rule"] in capacity_plan.LINEAR_BASELINES and r["K"] == 1:
      assert r["bit_accuracy"] == 1.0, r
  size = {r["value"]: r for r in records if r["study"] == "size" and r["rule"] == "learned"}
  assert size[16]["N"] == 16 and size[16]["synapses"] == 16 * 15 and size[16]["key_bits"] == 4
  recurrent = [r for r in records if r["rule"] == "recurrent"]
  assert recurrent and all(r["hidden"] >= 1 for r in recurrent)
  plan = capacity_plan.read_plan(_tiny_study())
  assert capacity_figures.plot_all(records, str(tmp_path), plan.train_neurons, plan.train_k) == list(FIGURES)
  for name in FIGURES:
    assert os.path.getsize(tmp_path / name) > 1000
  for run in ("full", "full-auto", "full-synapses_off", "full-auto-synapses_off", "full-routing"):
    assert os.path.isdir(os.path.join(workdir, run, "checkpoints"))  # resumable meta-training runs


@pytest.mark.slow  # the tiny study trains and evaluates every rule: about a minute
def test_a_finished_study_is_read_back_without_evaluating_again(tiny_run, monkeypatch, capsys):
  workdir, records, _ = tiny_run

  def fail(*args, **kwargs):
    raise AssertionError("evaluated again")

  for module, name in (
    (evaluate_lib, "recall_vs_k"),
    (baselines, "evaluate"),
    (baselines, "evaluate_over_k"),
    (trained_baselines, "train_recurrent"),
    (trained_baselines, "evaluate_recurrent"),
    (trained_baselines, "evaluate_online_backprop"),
  ):
    monkeypatch.setattr(module, name, fail)
  assert capacity_study.run(capacity_plan.read_plan(_tiny_study()), workdir) == records
  # The command on the finished study: the same records in capacity.json, every figure in the workdir
  # (no --figure_dir), and the table.
  capacity_command.main(_tiny_study(), workdir, types.SimpleNamespace(figure_dir=None))
  with open(os.path.join(workdir, "capacity.json")) as f:
    assert json.load(f)["records"] == records
  for name in FIGURES:
    assert os.path.getsize(os.path.join(workdir, name)) > 1000
  assert capacity_study.format_table(records) in capsys.readouterr().out


@pytest.mark.slow  # uses the tiny study's trained rule
def test_the_size_study_evaluates_saved_rules_on_the_same_episodes(tiny_run, tmp_path):
  """A saved copy of the study's own rule, listed in `size.rules`, gives the very numbers of `learned`
  at every N and K; every point has its scored bits and a bootstrap interval around its mean."""
  workdir, *_ = tiny_run
  save_rule(load_rule(os.path.join(workdir, "full")), str(tmp_path / "copy"))
  study = _tiny_study()
  study.studies = "size"
  study.size.rules = f"learned,{tmp_path / 'copy'}"
  study.size.min_scored_bits = 40
  records = capacity_study.run(capacity_plan.read_plan(study), workdir)
  by_rule = {}
  for r in records:
    by_rule.setdefault(r["rule"], []).append(r)
  copy = by_rule.pop(str(tmp_path / "copy"))
  assert set(by_rule) == {"learned", "key_blind", "hebbian", "pseudo_inverse"}
  assert [(r["N"], r["K"]) for r in copy] == [(12, 2), (16, 2)]
  for mine, theirs in zip(copy, by_rule["learned"], strict=True):
    assert mine["bit_accuracy"] == theirs["bit_accuracy"] and mine["episodes"] == theirs["episodes"]
  for r in records:
    # 2 queries x 2 scored steps x value bits per episode: enough episodes for 40 bits.
    assert (
      r["scored_bits"]
      == r["episodes"] * 2 * 2 * r["value_bits"]
      >= 40
      > r["scored_bits"] - 4 * r["value_bits"]
    )
    assert r["bit_accuracy_low"] - 1e-6 <= r["bit_accuracy"] <= r["bit_accuracy_high"] + 1e-6, r
    # Every snippet is queried once an episode: the positions' mean is the mean over queries.
    by_position = r[evaluate_lib.BY_POSITION]
    assert len(by_position) == r["K"] and np.mean(by_position) == pytest.approx(r["bit_accuracy"], abs=1e-6)
  assert "recall_by_age.png" in capacity_figures.plot_all(records, str(tmp_path), None, 2)
  assert os.path.getsize(tmp_path / "recall_by_age.png") > 1000
  # The rule's file can carry these records (export_rule --sizes_from), for this theta only.
  saved = load_rule(str(tmp_path / "copy"))
  rows = rule_export.size_records(
    {"records": records}, str(tmp_path / "copy"), pretrained.theta_digest(saved.theta)
  )
  assert [(r["N"], r["bit_accuracy"]) for r in rows] == [(r["N"], r["bit_accuracy"]) for r in copy]
  with pytest.raises(ValueError, match="another theta"):
    rule_export.size_records({"records": records}, str(tmp_path / "copy"), "0" * 16)
  with pytest.raises(ValueError, match="no size-study records"):
    rule_export.size_records({"records": records}, "general", "0" * 16)
  study.size.rules = "key_blind"
  with pytest.raises(config_lib.ConfigError, match="size.rules: 'key_blind' is a baseline"):
    capacity_plan.read_plan(study)
  study.size.rules = str(tmp_path / "nothing")
  with pytest.raises(config_lib.ConfigError, match="size.rules: load_rule: no rule"):
    capacity_plan.read_plan(study)


def test_a_saved_rule_in_the_size_study_runs_on_its_own_kind_of_network(tmp_path):
  """`random_hidden` in `size.rules` is evaluated with its fixed random input -> hidden synapses at every
  size (its record says so), on the study's episodes: the numbers of the rule on that network, not on a
  network whose input synapses it would write."""
  study = _tiny_study()
  study.studies, study.size.sizes, study.size.rules, study.size.baselines = "size", (12,), "random_hidden", ""
  study.size.k_multiples, study.size.min_scored_bits = (2.0,), 400  # K = 6 on 3-bit keys: not all recalled
  plan = capacity_plan.read_plan(study)
  mine = capacity_study.run(plan, str(tmp_path))
  rule = pretrained.load_rule("random_hidden")
  cfg = capacity_plan.size_rule_config(plan.size_base, rule, 12)
  topo = config_lib.make_topology(cfg)
  assert topo.random_input_synapses == 16.0 and [r["rule"] for r in mine] == ["random_hidden"]
  assert mine[0]["random_input_synapses"] == 16.0 and mine[0]["N"] == 12

  def recall(topology):
    key = evaluate_lib.eval_key(config_lib.train_spec(cfg).seed)
    problem = config_lib.problem(cfg, topology)
    return evaluate_lib.recall_vs_k(
      rule.theta, topology, problem, [mine[0]["K"]], mine[0]["num_episodes"], key
    )

  want, without = recall(topo), recall(dataclasses.replace(topo, random_input_synapses=0.0))
  assert mine[0]["bit_accuracy"] == want[0]["bit_accuracy"] != without[0]["bit_accuracy"]


def test_bootstrap_intervals_are_over_queries_and_cover_the_mean():
  """`with_interval`: queries of every episode (their scored steps) are the unit resampled."""
  spec = types.SimpleNamespace(num_queries=2, n_out=4, query_steps=2, first_scored_query_step=0)
  nan = float("nan")
  # 3 episodes x (1 unscored write step + 2 queries of 2 scored steps).
  per_step = [[nan, 1.0, 1.0, 0.5, 0.5], [nan, 1.0, 0.75, 1.0, 1.0], [nan, 0.0, 0.0, 1.0, 1.0]]
  np.testing.assert_allclose(
    evaluate_lib.query_bit_accuracy(per_step, spec), [1.0, 0.5, 0.875, 1.0, 0.0, 1.0]
  )
  record = evaluate_lib.with_interval({"bit_accuracy": 0.729}, per_step, spec)
  assert record["episodes"] == 3 and record["scored_bits"] == 3 * 2 * 2 * 4
  assert 0.0 <= record["bit_accuracy_low"] < 0.729 < record["bit_accuracy_high"] <= 1.0
  assert evaluate_lib.with_interval({}, per_step, spec) == evaluate_lib.with_interval({}, per_step, spec)
  same = evaluate_lib.with_interval({}, [[nan, 1.0, 1.0, 1.0, 1.0]] * 3, spec)
  assert same["bit_accuracy_low"] == same["bit_accuracy_high"] == 1.0


def test_recall_by_position_averages_the_queries_of_each_stored_position():
  spec = types.SimpleNamespace(
    num_snippets=3, num_queries=2, n_out=4, query_steps=2, first_scored_query_step=1
  )
  nan = float("nan")
  # 3 episodes x (1 unscored write step + 2 queries of 2 steps, the first unscored).
  per_step = [[nan, nan, 1.0, nan, 0.5], [nan, nan, 0.75, nan, 0.25], [nan, nan, 0.0, nan, 1.0]]
  order = [[2, 0], [0, 2], [2, 0]]  # position 1 never asked for
  got = evaluate_lib.recall_by_position(per_step, order, spec)
  assert got[0] == pytest.approx((0.5 + 0.75 + 1.0) / 3) and got[1] is None
  assert got[2] == pytest.approx((1.0 + 0.25 + 0.0) / 3)
  with pytest.raises(ValueError, match="6 scored queries for 4"):
    evaluate_lib.recall_by_position(per_step, order[:2], spec)


def test_the_held_out_query_order_is_the_order_of_the_drawn_episodes():
  """The stored position `held_out_draw` gives for each query is the one whose taught value that query
  is scored against (read off the episodes), for every K drawn together; -1 past a task's own Q."""
  spec = tasks.TaskSpec(num_neurons=24, n_in=8, n_out=8, num_snippets=5, num_queries=5, delay_steps=1)
  short = dataclasses.replace(spec, num_snippets=3, num_queries=3)
  episodes, _, orders = evaluate_lib.held_out_draw(jax.random.PRNGKey(3), (spec, short), 4)
  assert orders.shape == (2, 4, 5)
  np.testing.assert_array_equal(orders[1, :, 3:], -1)
  taught = spec.n_in + np.arange(spec.n_out)
  for k, task in enumerate((spec, short)):
    for j in range(4):
      x, target, score = (np.asarray(a[k, j]) for a in (episodes.x, episodes.target, episodes.score))
      stored = x[task.present_steps - 1 :: task.present_steps][: task.num_snippets][:, taught]
      queries = np.flatnonzero(score)[:: task.query_steps]
      np.testing.assert_array_equal(target[queries], stored[np.asarray(orders[k, j, : task.num_queries])])
  assert len({tuple(np.asarray(o)) for o in orders[0]}) > 1


def _first_value_readout(args, episode, init_key, spec):
  """Answers every query with the value taught first: right for the oldest position only."""
  first = episode.x[spec.present_steps - 1, spec.n_in : spec.n_in + spec.n_out]
  return jnp.broadcast_to(first, (episode.x.shape[0], spec.n_out))


def test_recall_by_position_follows_each_query_through_the_batches():
  """A memory that holds only the first pair stored: recall 1 at position 0 and near chance elsewhere,
  over several batches and two K evaluated together (`baselines.evaluate_over_k`)."""
  spec = tasks.TaskSpec(num_neurons=40, n_in=16, n_out=16, num_snippets=6, num_queries=6, delay_steps=1)
  specs = (spec, dataclasses.replace(spec, num_snippets=4, num_queries=4))
  records = baselines.evaluate_over_k(_first_value_readout, None, specs, jax.random.PRNGKey(0), 7, batch=3)
  for r, task in zip(records, specs, strict=True):
    by_position = r[evaluate_lib.BY_POSITION]
    assert len(by_position) == task.num_snippets and by_position[0] == 1.0
    assert max(by_position[1:]) < 0.75 and np.mean(by_position) == pytest.approx(r["bit_accuracy"])


def test_the_table_lists_where_each_memory_beats_the_floor():
  def row(rule, k, accuracy):
    common = {"study": "networks", "network": "full", "axis": None, "value": None, "N": 64}
    return {**common, "rule": rule, "K": k, "bit_accuracy": accuracy}

  floor = [row("key_blind", 1, 1.0), row("key_blind", 2, 0.75), row("key_blind", 4, 0.69)]
  learned = [row("learned", 1, 1.0), row("learned", 2, 0.995), row("learned", 4, 0.695)]
  hebbian = [row("hebbian", 1, 1.0), row("hebbian", 2, 0.96), row("hebbian", 4, 0.9)]
  records = floor + learned + hebbian
  # Within FLOOR_MARGIN of the floor (K = 1, and learned at K = 4) is not above it.
  assert capacity_study.above_floor(records, learned) == [2]
  assert capacity_study.above_floor(records, hebbian) == [2, 4]
  lines = capacity_study.format_table(records).splitlines()
  assert lines[1].split() == ["networks", "full", "key_blind", "64", "1", "1"]
  assert lines[2].split() == ["networks", "full", "learned", "64", "2", "2", "2"]
  assert lines[3].split() == ["networks", "full", "hebbian", "64", "1", "2", "2,4"]


def test_the_study_reads_every_rule_and_setting_it_needs():
  plan = capacity_plan.read_plan(capacity_configs.get_config("tiny"))
  assert list(plan.rules) == [
    "full",
    "layered-1",
    "full-auto",
    "full-synapses_off",
    "full-routing",
    "full-auto-synapses_off",
    "full-auto-routing",
  ]
  assert plan.rules["full-auto-routing"].task.protocol == "auto"
  routing = plan.rules["full-routing"].net
  assert not routing.synapse_updates and routing.trained_synapses
  assert plan.sizes == (12, 16) and plan.difficulty == (("delay", 2), ("delay", 6))
  moved = capacity_plan.with_setting(plan.rules["full"], "size", 32)
  assert (moved.net.num_inputs, moved.net.num_outputs, moved.net.num_hidden) == (8, 8, 16)
  assert plan.rules["full"].net.num_inputs == 4  # with_setting leaves its argument alone
  # A saved rule in the size study runs on its own kind of network: `random_hidden` with its fixed random
  # input -> hidden synapses, `general` without.
  for name, fixed in (("random_hidden", 16.0), ("general", 0.0)):
    sized = capacity_plan.size_rule_config(plan.rules["full"], pretrained.load_rule(name), 32)
    assert sized.net.random_input_synapses == fixed and sized.net.num_hidden == 16, name
  # `random_delta`: its config group, and the hidden layers of the network it runs next to
  assert plan.random_delta == capacity_plan.RandomDeltaSpec(step_sizes=(0.3, 1.0), tune_episodes=4)
  study = capacity_configs.get_config("tiny")
  hidden = capacity_baselines.random_features_hidden
  assert hidden(plan.rules["full"]) == (plan.rules["full"].net.num_hidden,)
  assert hidden(plan.rules["layered-1"]) == (32,)
  assert hidden(capacity_plan.network_config(study, "layered-2")) == (16, 16)
  assert hidden(capacity_plan.network_config(study, "sparse-0.5")) == (study.base.net.num_hidden,)


@pytest.mark.parametrize(
  "field,value",
  [
    ("networks", "full,ring"),
    ("baselines", "oracle"),
    ("studies", "networks,everything"),
    ("k_values", ()),
    ("k_values", (0, 1)),
    ("size.sizes", (4,)),
    ("difficulty.axes", "noise"),
    ("difficulty.baselines", "hebbian,oracle"),
    ("recurrent.cell", "transformer"),
    ("recurrent.learning_rates", ()),
    ("recurrent.learning_rates", (1e-3, -1.0)),
    ("recurrent.state_hidden_cap", 0),
    ("random_delta.step_sizes", ()),
    ("random_delta.step_sizes", (0.5, -1.0)),
    ("random_delta.step_sizes", (0.0,)),
  ],
)
def test_invalid_study_fails_before_anything_runs(tmp_path, field, value):
  study = _tiny_study()
  group, _, key = field.rpartition(".")
  (study[group] if group else study)[key] = value
  with pytest.raises(config_lib.ConfigError, match=field):
    capacity_command.main(study, str(tmp_path / "study"), types.SimpleNamespace(figure_dir=None))
  assert not os.path.exists(tmp_path / "study")  # nothing written
