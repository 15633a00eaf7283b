"""Tests of `learned_rules.teacher` and `learned_rules.learning_study`: learning from remembering."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_rules import baselines, learning_figures, learning_study, pretrained, tasks, teacher
from learned_rules import config as config_lib
from learned_rules.configs import learning as learning_configs

_sample = jax.jit(teacher.sample_episode, static_argnums=(1, 2))


def _episode(n_in: int, k: int, kind: str, seed: int, num_unseen: int = 7):
  spec = tasks.TaskSpec(num_neurons=n_in + 5 + 3, n_in=n_in, n_out=5, num_snippets=k, num_queries=k)
  t = teacher.TeacherSpec(kind, hidden=6, num_unseen=num_unseen)
  stored, unseen = jax.tree.map(np.asarray, _sample(jax.random.PRNGKey(seed), spec, t))
  return spec, t, stored, unseen


def _pairs(spec, stored, unseen):
  """Every (key, value) an episode shows or asks: the teaching steps and the scored query steps."""
  keys, teach = (
    np.asarray(stored.x[:, : spec.n_in]),
    np.asarray(stored.x[:, spec.n_in : spec.n_in + spec.n_out]),
  )
  shown = np.any(teach != 0, axis=-1)
  asked = (stored.score + unseen.score) > 0
  return np.concatenate([keys[shown], keys[asked]]), np.concatenate([teach[shown], stored.target[asked]])


@pytest.mark.parametrize("kind", teacher.TEACHERS)
def test_teacher_is_one_function_per_episode(kind):
  # 3-bit keys, 6 stored: keys repeat within the episode, and every repeat must get the same value.
  spec, _, stored, unseen = _episode(3, 6, kind, seed=0)
  keys, values = _pairs(spec, stored, unseen)
  assert set(np.unique(values)) == {-1.0, 1.0}
  table = {}
  for key, value in zip(map(tuple, keys), map(tuple, values), strict=True):
    assert table.setdefault(key, value) == value
  assert len(table) < len(keys)  # some key was seen twice
  # Another episode's teacher is another function of the same keys.
  t = teacher.TeacherSpec(kind, hidden=6)
  all_keys = jnp.asarray(np.array(np.meshgrid(*[[-1.0, 1.0]] * 6)).reshape(6, -1).T)
  f0, f1 = (
    teacher.apply_teacher(t, teacher.sample_teacher(jax.random.PRNGKey(s), t, 6, 5), all_keys) for s in (0, 1)
  )
  assert np.mean(np.asarray(f0) != np.asarray(f1)) > 0.1


def test_queries_ask_stored_and_unseen_keys_as_scored():
  # 3-bit keys (8 possible), 6 stored, 7 unseen: unseen keys come from the few keys never stored.
  spec, t, stored, unseen = _episode(3, 6, "linear", seed=3)
  assert stored.x.shape == (teacher.query_steps(spec, t), spec.num_neurons)
  keys, teach = stored.x[:, : spec.n_in], stored.x[:, spec.n_in : spec.n_in + spec.n_out]
  stored_keys = {tuple(k) for k in keys[np.any(teach != 0, axis=-1)]}
  assert stored.score.sum() == 6 * spec.query_steps and unseen.score.sum() == 7 * spec.query_steps
  assert not np.any(stored.score * unseen.score)
  assert np.all(teach[stored.score + unseen.score > 0] == 0)  # no teaching input at recall
  asked_stored = [tuple(k) for k in keys[stored.score > 0]]
  assert set(asked_stored) == stored_keys  # every stored key is asked
  assert all(tuple(k) not in stored_keys for k in keys[unseen.score > 0])
  assert np.all(np.abs(stored.target[stored.score > 0]) == 1) and np.all(stored.target == unseen.target)


def test_pseudo_inverse_learns_a_linear_teacher():
  spec = lambda k: tasks.TaskSpec(num_snippets=k, num_queries=k)  # noqa: E731  (16-bit keys and values)
  specs = (spec(2), spec(48))
  t = teacher.TeacherSpec("linear")
  stored, unseen, _, init_keys = teacher.held_out_episodes(jax.random.PRNGKey(0), specs, t, 8)
  scores = teacher.readout_scores(
    baselines.READOUT_FNS["pseudo_inverse"], jnp.zeros(2), specs[0], stored, unseen, init_keys
  )
  assert scores["generalisation"].shape == (2, 8)  # per K, per episode
  gen = np.asarray(scores["generalisation"]).mean(axis=1)
  assert gen[1] > 0.75 and gen[1] > gen[0] + 0.1  # learned from 48 pairs, far above chance (0.5)
  assert np.all(np.asarray(scores["recall"])[0] == 1.0)  # 2 pairs are stored exactly


def test_tiny_study_end_to_end(tmp_path):
  cfg = learning_configs.get_config("tiny")
  cfg.teachers = "mlp"  # one teacher is enough here (each compiles its own episodes); the others test both
  result = learning_study.run(cfg)
  saved = json.loads(json.dumps(result))  # as experiments.learning writes it to results.json
  learning_figures.plot(saved, str(tmp_path / "learning.png"))  # as --plot_only draws it, from the JSON
  assert os.path.getsize(tmp_path / "learning.png") > 0
  methods = learning_study.METHODS
  keys = {(r["teacher"], r["method"], r["K"]) for r in saved["records"]}
  assert keys == {("mlp", m, k) for m in methods for k in cfg.k_values}
  rule = pretrained.load_rule(cfg.rule)
  for r in saved["records"]:
    assert r["generalisation_error"] == pytest.approx(1 - r["generalisation"])
    # Means over the episodes of bit accuracies over each kind's scored bits, ties half a bit: whole
    # counts of half bits, and a query not answered perfectly misses at least half a bit.
    spec = rule.problem(r["K"]).task
    steps_per_query = int(tasks.query_score(spec).sum())
    for measure, queries in (("recall", r["K"]), ("generalisation", r["U"])):
      half_bits = 2 * cfg.num_episodes * queries * steps_per_query * spec.n_out
      bits, p = r[measure], r[f"perfect_{measure}"]
      assert bits * half_bits == pytest.approx(round(bits * half_bits), abs=1e-3), (measure, r)
      assert p - 1e-6 <= bits <= p + (1.0 - p) * (1.0 - 0.5 / spec.n_out) + 1e-6, (measure, r)
    if r["method"] == "pseudo_inverse" and r["K"] == 1:
      assert r["recall"] == 1.0
    if r["method"] == "online_backprop":
      assert r["step_size"] in cfg.online_backprop.step_sizes
    if r["method"] == "hebbian_decay":
      assert (
        r["decay"] == saved["tuning"]["mlp"]["hebbian_decay"]["best"] and r["decay"] in cfg.hebbian_decays
      )
    if r["method"] != "learned":  # the rule's generalisation minus this method's, over the same episodes
      learned = next(x for x in saved["records"] if x["method"] == "learned" and x["K"] == r["K"]
                     and x["teacher"] == r["teacher"])  # fmt: skip
      assert r["rule_advantage"] == pytest.approx(learned["generalisation"] - r["generalisation"], abs=1e-6)
  # The matched decay's distance: its recall against K minus the rule's, squared and summed, as recorded.
  tuned = saved["tuning"]["mlp"]["hebbian_decay"]
  recall = {
    m: [r["recall"] for r in saved["records"] if r["method"] == m] for m in ("learned", "hebbian_decay")
  }
  distance = sum((a - b) ** 2 for a, b in zip(recall["hebbian_decay"], recall["learned"], strict=True))
  assert tuned["recall_distance"][str(tuned["best"])] == pytest.approx(distance, rel=1e-5, abs=1e-9)
  assert min(tuned["recall_distance"].values()) == tuned["recall_distance"][str(tuned["best"])]
  assert 0.5 < saved["linear_ceiling"]["mlp"] <= 1.0
  table = learning_study.format_table(result)
  assert "wrote" not in table and "teacher mlp" in table and table == learning_study.format_table(saved)


def test_bad_config_is_refused(tmp_path):
  cfg = learning_configs.get_config("tiny")
  cfg.teachers = "linear,quadratic"
  with pytest.raises(config_lib.ConfigError, match="quadratic"):
    learning_study.validate(cfg)
  with pytest.raises(config_lib.ConfigError, match="quadratic"):
    learning_study.run(cfg)  # before the rule is loaded or anything compiled
  cfg.teachers, cfg.rule = "linear", str(tmp_path / "missing")
  with pytest.raises(config_lib.ConfigError, match="^rule: load_rule: no rule"):
    learning_study.run(cfg)
