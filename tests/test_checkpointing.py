"""Tests of `learned_rules.checkpointing` and of resuming `meta_train.train_and_evaluate`."""

from __future__ import annotations

import json
import os
import shutil

import chex
import jax
import pytest

from learned_rules import checkpointing, evaluation, meta_train, metrics
from learned_rules.configs import remember

NUM_STEPS = 4  # `:tiny` trains 4 steps and checkpoints every 2


def _restore_final_state(cfg, workdir: str):
  saved_cfg, _, state = meta_train.load_run(workdir)
  assert checkpointing.config_to_dict(saved_cfg) == checkpointing.config_to_dict(cfg)
  return int(state.step), state


def _train_records(workdir: str) -> dict[int, dict]:
  """The meta-training records of metrics.jsonl (not the evaluation ones), by step."""
  records = metrics.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  return {r["step"]: r for r in records if "loss" in r}


# The streaming run (its carried streams are checkpointed too) is one of the slow tests CI runs.
@pytest.fixture(scope="module", params=["tiny", pytest.param("tiny,streaming", marks=pytest.mark.slow)])
def runs(request, tmp_path_factory):
  """The same run twice: in one go, and in two halves (the second resumed in the same workdir)."""
  variant = request.param
  root = tmp_path_factory.mktemp(variant.replace(",", "_"))
  cfg = remember.get_config(variant)
  assert cfg.train.num_steps == NUM_STEPS
  whole = meta_train.train_and_evaluate(cfg, str(root / "whole"))

  halves = str(root / "halves")
  first_cfg = remember.get_config(variant)
  first_cfg.train.num_steps = NUM_STEPS // 2
  first = meta_train.train_and_evaluate(first_cfg, halves)
  resumed = meta_train.train_and_evaluate(cfg, halves)  # num_steps may change on resume
  return dict(
    cfg=cfg,
    root=root,
    whole=whole,
    whole_state=_restore_final_state(cfg, str(root / "whole")),
    first=first,
    resumed=resumed,
    whole_dir=str(root / "whole"),
    halves_dir=halves,
  )


def test_resumed_run_equals_uninterrupted_run(runs):
  cfg = runs["cfg"]
  assert runs["first"]["meta_steps"] == NUM_STEPS // 2
  assert runs["whole"]["meta_steps"] == runs["resumed"]["meta_steps"] == NUM_STEPS
  step_whole, state_whole = runs["whole_state"]
  step_resumed, state_resumed = _restore_final_state(cfg, runs["halves_dir"])
  assert step_whole == step_resumed == NUM_STEPS
  # Theta, optimizer state, step and (streaming) the carried streams: the same bits.
  chex.assert_trees_all_equal(state_resumed, state_whole)
  if "streaming" in cfg.task.protocol:
    assert state_whole.carries[0] is not None
  # Same held-out results, and the same training losses at the steps both logged.
  for key in ("loss", "bit_accuracy", "perfect_recall"):
    assert runs["resumed"][key] == runs["whole"][key]
  whole_log, resumed_log = _train_records(runs["whole_dir"]), _train_records(runs["halves_dir"])
  assert sorted(whole_log) == sorted(resumed_log) == [2, 4]
  for step in whole_log:
    for key in ("loss", "bit_accuracy", "grad_norm"):
      assert resumed_log[step][key] == whole_log[step][key], (step, key)


def test_run_writes_config_metrics_and_checkpoints(runs):
  workdir, cfg = runs["whole_dir"], runs["cfg"]
  with open(os.path.join(workdir, "config.json")) as f:
    record = json.load(f)
  assert record["config"] == checkpointing.config_to_dict(cfg)
  assert record["environment"] == checkpointing.environment()
  assert record["environment"]["jax"] == jax.__version__ and record["environment"]["device_kind"]
  records = metrics.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in records] == [2, 4, 4]  # log_every = 2, then the evaluation record
  assert {"eval_bit_accuracy", "eval_loss", "eval_meta_steps", "eval_max_abs_body"} <= set(records[-1])
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    assert ckpt.latest_step() == NUM_STEPS
    assert ckpt.saved_config() == checkpointing.config_to_dict(cfg)
  finally:
    ckpt.close()
  results = runs["whole"]
  assert results["wall_seconds"] > 0
  # The returned metrics are the logged ones, and those of the checkpointed theta evaluated again on the
  # held-out episodes (the same compiled program: no compilation).
  assert {f"eval_{k}": v for k, v in results.items()}.items() <= records[-1].items()
  topo, problem, _ = meta_train.setup(cfg)
  theta = jax.device_get(runs["whole_state"][1].theta)  # on the host, as the run evaluates it
  again = evaluation.evaluate(theta, topo, problem, evaluation.eval_key(cfg.seed), cfg.eval.num_episodes)
  for key in ("loss", "bit_accuracy", "perfect_recall"):
    assert results[key] == again[key], key


def _snapshot(directory: str) -> dict[str, tuple[bytes, int]]:
  """Every file below `directory`: its bytes and modification time."""
  files = {}
  for dirpath, _, filenames in os.walk(directory):
    for name in filenames:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, directory)] = (f.read(), os.stat(path).st_mtime_ns)
  return files


INCOMPATIBLE = [
  ("net", "num_hidden", 5),
  ("rule", "hidden", 6),
  ("train", "learning_rate", 1e-2),
  (None, "seed", 1),
]


def test_incompatible_checkpoint_is_refused_and_left_untouched(runs, tmp_path):
  for section, name, value in INCOMPATIBLE:
    field = f"{section}.{name}" if section else name
    workdir = str(tmp_path / field)
    shutil.copytree(runs["whole_dir"], workdir)
    before = _snapshot(workdir)
    assert any(path.startswith("checkpoints") for path in before)
    cfg = runs["cfg"].copy_and_resolve_references()
    (cfg[section] if section else cfg)[name] = value
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match=field):
      meta_train.train_and_evaluate(cfg, workdir)
    assert _snapshot(workdir) == before, field


def test_config_differences_ignores_only_resumable_fields(make_cfg):
  saved = checkpointing.config_to_dict(make_cfg("tiny"))
  current = make_cfg("tiny")
  current.train.num_steps = 100
  current.train.log_every = 7
  current.train.checkpoint_every = 9
  current.train.max_to_keep = 5
  current.eval.num_episodes = 33
  current.eval.k_values = (1, 5)
  current.baseline_synapses_off = False
  assert checkpointing.config_differences(saved, checkpointing.config_to_dict(current)) == []
  current.net.num_hidden = 7
  current.task.cue_corruption = 0.5
  diffs = checkpointing.config_differences(saved, checkpointing.config_to_dict(current))
  assert len(diffs) == 2
  assert diffs[0].startswith("net.num_hidden:") and "4" in diffs[0] and "7" in diffs[0]
  assert diffs[1].startswith("task.cue_corruption:")
  # A field that exists on one side only is a difference too.
  extra = checkpointing.config_to_dict(make_cfg("tiny"))
  extra["net"]["new_knob"] = 1
  assert checkpointing.config_differences(saved, extra) == ["net.new_knob: saved None, now 1"]


def test_config_to_dict_is_json_ready(make_cfg):
  cfg = make_cfg("tiny,layered")
  raw = checkpointing.config_to_dict(cfg)
  assert json.loads(json.dumps(raw)) == raw
  assert raw["net"]["hidden_layers"] == list(cfg.net.hidden_layers)
  assert raw["eval"]["k_values"] == list(cfg.eval.k_values)


def test_checkpointer_round_trip(tmp_path, make_cfg):
  state = {
    "step": jax.numpy.asarray(3, jax.numpy.int32),
    "w": jax.numpy.arange(6.0).reshape(2, 3),
    "nested": {"b": jax.numpy.ones((2,))},
  }
  cfg = make_cfg("tiny")
  ckpt = checkpointing.Checkpointer(str(tmp_path), max_to_keep=2)
  assert ckpt.latest_step() is None and ckpt.saved_config() is None
  ckpt.check_compatible(cfg)  # an empty workdir is compatible with anything
  for step in (1, 2, 3):
    ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, state), cfg)
  assert ckpt.latest_step() == 3
  like = jax.tree.map(jax.numpy.zeros_like, state)
  restored = ckpt.restore(like)
  chex.assert_trees_all_equal(restored, jax.tree.map(lambda x: x * 3, state))
  chex.assert_trees_all_equal_dtypes(restored, state)
  chex.assert_trees_all_equal(ckpt.restore(like, step=2), jax.tree.map(lambda x: x * 2, state))
  # A target of other shapes is refused, not filled with the saved ones.
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match=r"another layout.*\(3, 2\)"):
    ckpt.restore({**like, "w": jax.numpy.zeros((3, 2))})
  ckpt.close()
  kept = sorted(os.listdir(tmp_path / "checkpoints"))
  assert kept == ["2", "3"]  # max_to_keep


def test_a_finished_run_reloads_without_training_or_evaluating(runs):
  """`evaluate=False` (what the capacity study uses to load its rules) returns no recall metrics, and a
  finished run is not trained further."""
  again = meta_train.train_and_evaluate(runs["cfg"], runs["whole_dir"], evaluate=False)
  assert set(again) == {"meta_steps", "wall_seconds"}
  assert again["meta_steps"] == NUM_STEPS
