"""Tests of `load_rule` and `save_rule`: a loaded rule reproduces the trainer, the shipped rules, and
clear errors for what is not a rule."""

from __future__ import annotations

import json
import os
import re
import warnings

import jax
import numpy as np
import pytest

from learned_rules import (
  PlasticMemory,
  RuleLoadError,
  available_rules,
  baselines,
  checkpointing,
  evaluation,
  load_rule,
  make_full,
  meta_train,
  pretrained,
  rules,
  save_rule,
)
from learned_rules import config as config_lib
from learned_rules.configs import remember


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A `:tiny` run of the trainer (a few meta steps) and the held-out numbers it reported."""
  cfg = remember.get_config("tiny")
  cfg.train.num_steps = 3
  workdir = str(tmp_path_factory.mktemp("rule") / "run")
  results = meta_train.train_and_evaluate(cfg, workdir)
  return cfg, workdir, results


def _trainer_metrics(rule):
  cfg = rule.config
  return evaluation.evaluate(
    rule.theta, rule.topology, rule.problem(), evaluation.eval_key(cfg.seed), cfg.eval.num_episodes
  )


def test_a_loaded_run_reproduces_the_trainers_numbers(trained):
  cfg, workdir, results = trained
  rule = load_rule(workdir)
  assert rule.meta_steps == 3
  assert checkpointing.config_to_dict(rule.config) == checkpointing.config_to_dict(cfg)
  assert rule.spec.num_types == rule.topology.num_types
  for name, value in _trainer_metrics(rule).items():
    assert value == results[name], name  # the same program on the same episodes: exactly


def test_save_and_load_round_trip(trained, tmp_path):
  _, workdir, results = trained
  rule = load_rule(workdir)
  json_path, blob_path = save_rule(rule, str(tmp_path / "mine"), note="a test")
  loaded = load_rule(str(tmp_path / "mine"))
  assert load_rule(json_path).meta_steps == rule.meta_steps
  assert loaded.info == {"note": "a test"} and loaded.config.to_dict() == rule.config.to_dict()
  for a, b in zip(jax.tree.leaves(loaded.theta), jax.tree.leaves(rule.theta), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _trainer_metrics(loaded)["bit_accuracy"] == results["bit_accuracy"]
  assert os.path.getsize(blob_path) < 64 * 1024


# Each shipped rule at a K the docs report for it, and the bit accuracy they say it reaches there (the
# smaller of its K@0.99 and K@0.95 where the larger would cost more than a few seconds: 512 episodes).
SHIPPED = [
  ("hetero", 8, 0.95),
  ("general", 8, 0.95),
  ("layered1", 8, 0.95),
  ("layered2", 4, 0.95),
  ("random_hidden", 12, 0.99),
  ("random_hidden_step1", 24, 0.99),  # scored on each query's step 1 only (its task.first_scored_step)
  ("random_hidden_step1_mix", 24, 0.99),  # the same, meta-trained on N = 64 and 128
]


@pytest.mark.parametrize("name, k, reported", SHIPPED)
@pytest.mark.usefixtures("optimized_evaluation")
def test_shipped_rule_reproduces_its_recorded_recall(name, k, reported):
  """A shipped rule loads by name and gives the recall recorded when it was exported."""
  assert name in available_rules()
  rule = load_rule(name)
  assert rule.config.task.protocol == "hetero" and rule.meta_steps > 0
  record = next(r for r in rule.info["recall_vs_k"] if r["K"] == k)
  got = evaluation.recall_vs_k(
    rule.theta,
    rule.topology,
    rule.problem(),
    [k],
    rule.info["held_out_episodes"],
    evaluation.eval_key(rule.config.seed),
  )[0]
  assert got["bit_accuracy"] == pytest.approx(record["bit_accuracy"], abs=1e-6)
  assert record["bit_accuracy"] > reported


# Each shipped streaming rule (recall of the snippet 1..Dmax slots back in a never-reset stream).
SHIPPED_STREAMING = ["stream16"]


@pytest.mark.parametrize("name", SHIPPED_STREAMING)
@pytest.mark.usefixtures("optimized_evaluation")
def test_shipped_streaming_rule_recalls_what_its_file_records(name):
  """A shipped streaming rule on 8 fresh streams of its protocol, as the trainer evaluates (its file's
  figure is over 512): near that figure, and far above the key-blind floor of the same streams."""
  rule = load_rule(name)
  record = rule.info["recall_on_streams"]
  assert rule.config.task.protocol == "streaming" and record["max_lag"] == rule.config.task.max_lag
  key, problem = evaluation.eval_key(rule.config.seed), rule.problem()
  got = evaluation.evaluate(rule.theta, rule.topology, problem, key, 8)["bit_accuracy"]
  floor = baselines.key_blind_metrics(problem.task, key, 8)["bit_accuracy"]
  assert got == pytest.approx(record["bit_accuracy"], abs=0.02) and got > floor + 0.25, (got, floor)


def test_every_shipped_rule_is_tested():
  assert sorted(available_rules()) == sorted([name for name, _, _ in SHIPPED] + SHIPPED_STREAMING)


def _recall_in_memory(memory: PlasticMemory, num_pairs: int, jit, episodes: int = 32) -> float:
  """Bit accuracy of `memory` reading back, in reverse order, `num_pairs` random pairs it wrote, in one
  program compiled by `jit`."""
  rng = np.random.default_rng(0)
  keys = rng.choice([-1.0, 1.0], (episodes, num_pairs, memory.topology.n_in)).astype(np.float32)
  values = rng.choice([-1.0, 1.0], (episodes, num_pairs, memory.topology.n_out)).astype(np.float32)

  @jit
  def write_then_read(keys, values):
    variables = memory.init(jax.random.PRNGKey(0), keys)
    _, written = memory.apply(variables, keys, values, method="write", mutable=["memory"])
    return memory.apply({**variables, **written}, keys[:, ::-1], mutable=["memory"])[0]

  recalled = write_then_read(keys, values)
  return float(np.mean(np.sign(recalled) == values[:, ::-1]))


def test_shipped_rule_remembers_inside_a_memory(optimized_jit):
  accuracy = _recall_in_memory(PlasticMemory.from_rule(load_rule("hetero")), 8, optimized_jit)
  assert accuracy > 0.95, accuracy


def test_from_rule_warns_when_the_topology_lacks_the_rules_fixed_random_inputs():
  """`random_hidden` was meta-trained on fixed random input -> hidden synapses: another topology
  without them gets a warning that names the option; with them, or for a rule trained without any, none."""
  rule = load_rule("random_hidden")
  assert rule.topology.random_input_synapses == 16.0
  with pytest.warns(UserWarning, match="random_input_synapses=16.0"):
    PlasticMemory.from_rule(rule, topology=make_full(24, 24, 48))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    memory = PlasticMemory.from_rule(rule, topology=make_full(24, 24, 48, random_input_synapses=16.0))
    PlasticMemory.from_rule(load_rule("general"), topology=make_full(24, 24, 48))
    PlasticMemory.from_rule(rule)
  assert memory.topology.random_input_synapses == 16.0


def test_general_rule_runs_on_a_network_of_another_size(optimized_jit):
  """`general`, meta-trained at N = 64 and 128, on a `full` network of a size it never saw (N = 96)
  through the public API, at the size study's target K = 3N/16 = 18 pairs."""
  rule = load_rule("general")
  assert rule.topology.num_neurons == 64
  memory = PlasticMemory.from_rule(rule, topology=make_full(24, 24, 48))
  assert memory.num_neurons == 96
  accuracy = _recall_in_memory(memory, 18, optimized_jit, episodes=8)
  assert accuracy > 0.95, accuracy


def test_unknown_names_and_empty_directories_raise(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape("not a shipped rule (one of")):
    load_rule("no-such-rule")
  with pytest.raises(FileNotFoundError, match="holds no checkpoints"):
    load_rule(str(tmp_path))


def test_a_checkpoint_of_another_kind_is_refused(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt._manager.save(  # an orbax checkpoint that is not a learned_rules run
    1,
    args=checkpointing.ocp.args.Composite(
      state=checkpointing.ocp.args.StandardSave({"w": np.zeros(3)}),
      config=checkpointing.ocp.args.JsonSave({"model": "resnet"}),
    ),
  )
  ckpt.close()
  with pytest.raises(RuleLoadError, match="not a learned_rules rule"):
    load_rule(str(tmp_path))


def test_a_checkpoint_with_another_state_layout_is_refused(trained, tmp_path):
  _, workdir, _ = trained
  cfg = load_rule(workdir).config
  cfg.rule.hidden = cfg.rule.hidden + 3  # a config whose theta has other shapes than the saved one
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  _, _, state = meta_train.load_run(workdir)
  ckpt.save(3, state, cfg)
  ckpt.close()
  with pytest.raises(RuleLoadError, match="does not match the train-state layout"):
    load_rule(str(tmp_path))


def test_saved_rules_of_another_layout_or_format_are_refused(trained, tmp_path):
  _, workdir, _ = trained
  prefix = str(tmp_path / "rule")
  save_rule(load_rule(workdir), prefix)
  with open(prefix + ".json") as f:
    meta = json.load(f)
  meta["config"]["rule"]["hidden"] += 3
  with open(prefix + ".json", "w") as f:
    json.dump(meta, f)
  with pytest.raises(RuleLoadError, match=r"does not match its config's rule layout.*shapes"):
    load_rule(prefix)
  meta["format"] = pretrained.FORMAT_VERSION + 1
  with open(prefix + ".json", "w") as f:
    json.dump(meta, f)
  with pytest.raises(RuleLoadError, match="format"):
    load_rule(prefix)
  meta["format"] = pretrained.FORMAT_VERSION
  meta["config"]["net"]["topology"] = "ring"
  with open(prefix + ".json", "w") as f:
    json.dump(meta, f)
  with pytest.raises(RuleLoadError, match="net.topology"):
    load_rule(prefix)


def test_export_rule_command_writes_a_loadable_rule(trained, tmp_path, run_module):
  _, workdir, _ = trained
  run = lambda *args: run_module("experiments.export_rule", *args)  # noqa: E731
  setting = "rule.rate_power=0.75,eval.k_values=(2, 3),eval.num_episodes=3"
  proc = run(f"--workdir={workdir}", "--name=tiny-rule", f"--out_dir={tmp_path}", f"--set={setting}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  rule = load_rule(str(tmp_path / "tiny-rule"))
  assert rule.config.rule.rate_power == 0.75 and f"--set={setting}" in rule.info["exported_by"]
  assert [r["K"] for r in rule.info["recall_vs_k"]] == list(rule.config.eval.k_values) == [2, 3]
  assert set(rule.info["capacity"]) == {"0.99", "0.95"} and rule.info["held_out_episodes"] == 3
  assert "capacity K@0.99" in proc.stdout
  bad = run(f"--workdir={workdir}", "--name=no/slashes", f"--out_dir={tmp_path}")
  assert bad.returncode != 0 and "--name" in bad.stderr
  missing = run(f"--workdir={tmp_path / 'nothing'}", "--name=x", f"--out_dir={tmp_path}")
  assert missing.returncode != 0 and "no rule" in missing.stderr


def test_export_rule_sets_only_the_fan_in_scaling_and_the_evaluation():
  from experiments import export_rule, harness

  assert export_rule.parse_set("rule.rate_power=0.75, rule.message_norm=sqrt_ref") == {
    "rule.rate_power": 0.75,
    "rule.message_norm": "sqrt_ref",
  }
  assert export_rule.parse_set("eval.k_values=(12, 16, 24),eval.num_episodes=512") == {
    "eval.k_values": (12, 16, 24),
    "eval.num_episodes": 512,
  }
  for bad in ("rule.hidden=8", "rule.rate_power", "task.num_snippets=4"):  # theta's layout; no value
    with pytest.raises(harness.UsageError, match="--set"):
      export_rule.parse_set(bad)


def test_a_run_starts_from_a_saved_rule_and_trains_it_further(trained, tmp_path, caplog):
  """`train.init_rule`: zero meta steps from a saved rule leave its theta exactly; more train it on."""
  cfg, workdir, _ = trained
  rule = load_rule(workdir)
  save_rule(rule, str(tmp_path / "start"))
  for steps in (0, 2):
    run_cfg = remember.get_config("tiny")
    run_cfg.train.num_steps = steps
    run_cfg.train.init_rule = str(tmp_path / "start")
    with caplog.at_level("WARNING"):
      meta_train.train_and_evaluate(run_cfg, str(tmp_path / f"from-{steps}"), evaluate=False)
    assert "random_input_synapses" not in caplog.text  # the same network as the rule's: no warning
    got = load_rule(str(tmp_path / f"from-{steps}"))
    same = [
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(got.theta), jax.tree.leaves(rule.theta), strict=True)
    ]
    assert all(same) == (steps == 0), steps
    assert got.meta_steps == rule.meta_steps + steps > steps  # every stage counted, not this run's alone
  # A run from before the start rule's steps were recorded in its config.json counts its own, and says so.
  record_path = tmp_path / "from-2" / "config.json"
  record = json.loads(record_path.read_text())
  assert record.pop(meta_train.INIT_RULE_META_STEPS) == rule.meta_steps
  record_path.write_text(json.dumps(record))
  caplog.clear()
  with caplog.at_level("WARNING"):
    assert load_rule(str(tmp_path / "from-2")).meta_steps == 2
  assert "count only its own" in caplog.text
  # A rule with one hidden type starts a network of two hidden layers: the second layer as the hidden
  # neurons it knew.
  deeper = remember.get_config("tiny")
  deeper.train.num_steps = 0
  deeper.train.init_rule = str(tmp_path / "start")
  deeper.net.topology, deeper.net.hidden_layers = "layered", (4, 4)
  deeper.task.query_steps, deeper.task.hold_for_latency = 4, True
  meta_train.train_and_evaluate(deeper, str(tmp_path / "deeper"), evaluate=False)
  got = load_rule(str(tmp_path / "deeper"))
  assert got.spec.num_types == 4 and rule.spec.num_types == 3
  want = rules.with_more_types(rule.theta, 4, like=2)
  for a, b in zip(jax.tree.leaves(got.theta), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)
  # A rule without the post neurons' errors, with fewer synapse state channels and with fewer hidden
  # units in its MLPs, starts a run with them as it was: the error's weights, the weights that read
  # the new channels and the new units' outgoing weights at 0.
  told = remember.get_config("tiny")
  told.train.num_steps, told.rule.error_input, told.rule.hidden = 0, True, rule.spec.hidden + 4
  told.rule.synapse_dim = rule.spec.synapse_dim + 2
  told.train.init_rule = str(tmp_path / "start")
  meta_train.train_and_evaluate(told, str(tmp_path / "told"), evaluate=False)
  got = load_rule(str(tmp_path / "told"))
  assert got.spec.error_input and not rule.spec.error_input
  want = rules.with_error_input(rule.theta, rule.spec.act_dim)
  seed_key = jax.random.PRNGKey(told.seed)
  want = rules.with_more_synapse_state(want, got.spec, jax.random.fold_in(seed_key, 2))
  want = rules.with_more_hidden(want, got.spec, seed_key)
  for a, b in zip(jax.tree.leaves(got.theta), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)
  # With `train.error_init` the error's weights are drawn at that times the activations' scale; the rest
  # of the rule is as it was.
  told.rule.hidden, told.rule.synapse_dim = rule.spec.hidden, rule.spec.synapse_dim
  told.train.error_init = 2.0
  meta_train.train_and_evaluate(told, str(tmp_path / "drawn-error"), evaluate=False)
  drawn_error = load_rule(str(tmp_path / "drawn-error")).theta["synapse"]
  da, start = rule.spec.act_dim, rule.theta["synapse"]
  for name, axis in (("w_post", 0), ("w_bi", 1)):
    got_w = np.asarray(drawn_error[name])
    np.testing.assert_array_equal(np.delete(got_w, da, axis=axis), start[name])
    act_rms = np.sqrt(np.mean(np.square(np.take(start[name], range(da), axis=axis))))
    error_rms = np.sqrt(np.mean(np.square(np.take(got_w, da, axis=axis))))
    assert 1.0 < error_rms / act_rms < 3.0, (name, error_rms, act_rms)  # 2 x, as drawn
  # A start rule that has the error already keeps its trained weights: drawing them is refused.
  told.train.init_rule = str(tmp_path / "drawn-error")
  with pytest.raises(config_lib.ConfigError, match=r"train\.error_init: .* has rule\.error_input already"):
    meta_train.train_and_evaluate(told, str(tmp_path / "redrawn"), evaluate=False)
  # A rule started on a network with fixed random input -> hidden synapses it was not trained with runs,
  # with a warning that names the option and its value for the rule.
  drawn = remember.get_config("tiny")
  drawn.train.num_steps, drawn.net.random_input_synapses = 0, 2.0
  drawn.train.init_rule = str(tmp_path / "start")
  caplog.clear()
  with caplog.at_level("WARNING"):
    meta_train.train_and_evaluate(drawn, str(tmp_path / "drawn"), evaluate=False)
  warned = [r.getMessage() for r in caplog.records if "random_input_synapses" in r.getMessage()]
  assert len(warned) == 1 and "random_input_synapses=0.0" in warned[0] and "has 2.0" in warned[0], warned
  # A rule of another form is refused before anything runs, naming the field and the difference.
  other = remember.get_config("tiny")
  other.rule.hidden = 4
  other.train.init_rule = str(tmp_path / "start")
  with pytest.raises(config_lib.ConfigError, match=r"train.init_rule: .*rule.hidden: 8, this run 4"):
    meta_train.train_and_evaluate(other, str(tmp_path / "other"))
  assert not os.path.exists(tmp_path / "other")
  missing = remember.get_config("tiny")
  missing.train.init_rule = str(tmp_path / "nothing")
  with pytest.raises(config_lib.ConfigError, match="train.init_rule: load_rule: no rule"):
    meta_train.train_and_evaluate(missing, str(tmp_path / "missing"))
