"""Tests of the token-recall study (`learned_rules.token_task`, `host_models`, `host_study`, and the
command `experiments.token_recall`): the tiny run end to end, the frozen rule, the sequence sampler, the
LSTM host's padding, and config errors."""

from __future__ import annotations

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import token_recall
from learned_rules import host_models, host_plan, host_study, supervised, token_task
from learned_rules.config import ConfigError
from learned_rules.configs import token_recall as token_recall_configs


def _main(cfg, workdir: str, figure_dir: str | None = None) -> dict:
  """The command's body, as `python -m experiments.token_recall` runs it."""
  return token_recall.main(cfg, workdir, types.SimpleNamespace(figure_dir=figure_dir))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """`(workdir, figures, results, evaluated)`: the tiny run (the command, whose one library call is
  `host_study.run_study`), and the `(module, trained variables)` of every host in the order the study
  evaluates them."""
  workdir = str(tmp_path_factory.mktemp("token_recall"))
  figures = os.path.join(workdir, "figures")
  evaluated, evaluate_host = [], host_study.evaluate_host

  def spy(module, variables, study):
    evaluated.append((module, variables))
    return evaluate_host(module, variables, study)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(host_study, "evaluate_host", spy)
    out = _main(token_recall_configs.get_config("tiny"), workdir, figures)
  return workdir, figures, out, evaluated


def test_tiny_run_writes_results_and_figure(tiny_run):
  workdir, figures, out, evaluated = tiny_run
  cfg = token_recall_configs.get_config("tiny")
  with open(os.path.join(workdir, "token_recall.json")) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(out))
  assert set(saved) >= {"config", "rule", "chance", "eval_lengths", "hosts", "machine", "wall_seconds"}
  assert saved["config"]["task"]["num_keys"] == cfg.task.num_keys
  assert saved["eval_lengths"] == list(cfg.task.eval_lengths)
  assert saved["chance"] == pytest.approx(1 / cfg.task.num_values)
  lstm = [name for name in saved["hosts"] if name.startswith("lstm")]
  assert "plastic" in saved["hosts"] and len(lstm) == 2  # the matched LSTM, at 1x and 2x the steps
  for name, host in saved["hosts"].items():
    assert set(host["accuracy"]) == {str(length) for length in cfg.task.eval_lengths}, name
    for length, accuracy in host["accuracy"].items():  # whole hits of the held-out sequences
      hits = accuracy * cfg.eval.num_sequences
      assert hits == pytest.approx(round(hits)), (name, length)
    m = host["step_multiple"]
    assert host["num_steps"] == m * cfg.train.num_steps and host["batch_size"] == cfg.train.batch_size
    assert [h["step"] for h in host["history"]] == [2 * m, 4 * m]
    # Each logged training accuracy is the mean over its 2 m steps of a batch's fraction of hits.
    hits = 2 * m * cfg.train.batch_size
    for h in host["history"]:
      assert h["accuracy"] * hits == pytest.approx(round(h["accuracy"] * hits), abs=1e-4), (name, h)
  # The LSTM hosts' accuracy at L = 1, recomputed one unpadded sequence at a time (the run pads every
  # sequence to the longest L) on the same held-out sequences: the same hits.
  assert [n for n in saved["hosts"]] == ["plastic", *lstm] and len(evaluated) == 3
  module, _ = evaluated[1]
  logits = jax.jit(jax.vmap(module.apply, in_axes=(None, 0, 0, 0)))
  rng = token_task.sequence_rng(cfg.seed, token_task.EVAL_TAG, 1)
  s = token_task.sample_sequences(rng, cfg.eval.num_sequences, 1, cfg.task.num_keys, cfg.task.num_values)
  for name, (host_module, variables) in zip(lstm, evaluated[1:], strict=True):
    assert host_module is module
    predicted = np.argmax(logits(variables, s.keys, s.values, s.query), axis=-1)
    assert saved["hosts"][name]["accuracy"]["1"] == np.mean(predicted == s.target), name
    assert host["params"] > 0
  plastic, matched = saved["hosts"]["plastic"], saved["hosts"][lstm[0]]
  assert plastic["rule_params"] == saved["rule"]["params"] > 0
  assert plastic["rule_unchanged"] is True
  # The matched LSTM host: the smallest H with at least the plastic host's parameters, rule included.
  assert matched["matched"] is True and matched["rule_params"] == 0
  assert matched["params"] >= plastic["params"] + plastic["rule_params"]
  assert lstm == [f"lstm{matched['hidden']}", f"lstm{matched['hidden']}x2"]
  assert saved["hosts"][lstm[1]]["params"] == matched["params"]
  for folder in (workdir, figures):
    assert os.path.getsize(os.path.join(folder, token_recall.FIGURE)) > 1000


def _codes(cfg, key_width: int, value_width: int) -> host_models.TokenCodes:
  t, h = cfg.task, cfg.host
  return host_models.TokenCodes(
    t.num_keys, t.num_values, key_width, value_width, h.code, h.code_scale, h.embed_init_std
  )


def _tiny_plastic():
  cfg = token_recall_configs.get_config("tiny")
  study = host_plan.study(cfg)
  memory, info = host_study.load_memory(study.rule, study.random_rule, study.seed)
  codes = _codes(cfg, memory.topology.n_in, memory.topology.n_out)
  host = host_models.PlasticHost(memory, codes, cfg.task.num_values)
  return cfg, study, memory, info, host, host_models.init_host(host, cfg.seed)


def test_the_rule_stays_frozen_and_gradients_reach_the_encoders():
  cfg, study, memory, info, host, variables = _tiny_plastic()
  assert set(variables) == {"params", "rule", "memory"}
  assert set(variables["params"]) == {"codes", "decoder"}  # no theta among the trained parameters
  for got, want in zip(jax.tree.leaves(variables["rule"]), jax.tree.leaves(memory.theta), strict=True):
    np.testing.assert_array_equal(got, want)  # the loaded rule
  before = jax.device_get(variables)

  lines = []
  trained, record = host_study.train_host("plastic", host, variables, study, log=lines.append)
  # A line every log_every steps: the time left on every one but the last.
  assert [line.split(":")[1] for line in lines] == [
    f" step {h['step']}/{study.num_steps}" for h in record["history"]
  ]
  assert ["s left" in line for line in lines] == [True] * (len(lines) - 1) + [False], lines
  assert host_study.trees_equal(before["rule"], trained["rule"])
  for a, b in zip(jax.tree.leaves(before["rule"]), jax.tree.leaves(trained["rule"]), strict=True):
    np.testing.assert_array_equal(a, b)
  changed = jax.tree.map(
    lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), before["params"], trained["params"]
  )
  assert changed["codes"]["key_embed"]["embedding"] and changed["decoder"]["kernel"]
  assert supervised.param_count(trained["params"]) == supervised.param_count(before["params"])

  # The key encoder learns only through the memory: its gradient is nonzero, the rule's is zero.
  rng = np.random.default_rng(0)
  seqs = token_task.sample_sequences(rng, 3, 2, cfg.task.num_keys, cfg.task.num_values)
  batch = host_models.to_batch(host, seqs, 2)
  logits_fn = host_models.logits_fn(host)

  def loss(variables):
    return jnp.sum(logits_fn(variables, batch)[jnp.arange(3), batch.target])

  grads = jax.jit(jax.grad(loss))(before)
  assert float(jnp.abs(grads["params"]["codes"]["key_embed"]["embedding"]).sum()) > 0
  assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads["rule"]))
  assert not host_study.trees_equal(before["rule"], jax.tree.map(lambda a: a + 1, before["rule"]))


@pytest.mark.parametrize("length", [1, 3, 6])
def test_sampler_queries_one_of_the_keys_and_targets_its_value(length):
  num_keys, num_values, batch = 6, 4, 200
  s = token_task.sample_sequences(np.random.default_rng(length), batch, length, num_keys, num_values)
  assert s.keys.shape == s.values.shape == (batch, length)
  assert s.query.shape == s.target.shape == s.query_index.shape == (batch,)
  for row in range(batch):
    keys, values = list(s.keys[row]), list(s.values[row])
    assert len(set(keys)) == length  # distinct keys
    assert all(0 <= k < num_keys for k in keys) and all(0 <= v < num_values for v in values)
    assert s.query[row] in keys
    assert s.query[row] == keys[s.query_index[row]]
    assert s.target[row] == values[keys.index(s.query[row])]
  assert set(s.query_index) == set(range(length))  # every position gets asked
  with pytest.raises(ValueError, match="length 7"):
    token_task.sample_sequences(np.random.default_rng(0), 1, 7, num_keys, num_values)


def test_padded_lstm_host_computes_what_the_unpadded_one_does():
  cfg = token_recall_configs.get_config("tiny")
  codes = _codes(cfg, 4, 4)
  host = host_models.LSTMHost(5, codes, cfg.task.num_values)
  variables = host_models.init_host(host, 0)
  logits_fn = jax.jit(host_models.logits_fn(host))  # one compile for both batches, not op by op
  s = token_task.sample_sequences(np.random.default_rng(1), 4, 2, cfg.task.num_keys, cfg.task.num_values)
  padded = host_models.to_batch(host, s, 5)
  assert padded.keys.shape == (4, 5) and list(padded.length) == [2] * 4
  exact = jax.jit(jax.vmap(lambda k, v, q: host.apply(variables, k, v, q)))(*(jnp.asarray(a) for a in s[:3]))
  np.testing.assert_allclose(logits_fn(variables, padded), exact, rtol=1e-5, atol=1e-6)
  # Other tokens in the padding slots change nothing either.
  noisy = padded._replace(keys=padded.keys.at[:, 2:].set(1), values=padded.values.at[:, 2:].set(3))
  np.testing.assert_allclose(logits_fn(variables, noisy), exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  "field,value",
  [
    ("rule", "no-such-rule"),
    ("random_rule", "no-such-variant"),
    ("task.num_keys", 1),
    ("task.train_lengths", (3, 2)),
    ("task.train_lengths", (1, 2, 3)),
    ("task.eval_lengths", (1, 7)),
    ("host.code", "relu"),
    ("host.code_scale", 0.0),
    ("lstm.hidden_sizes", (-1,)),
    ("train.num_steps", 0),
    ("train.learning_rate", -1.0),
    ("eval.num_sequences", 12),
  ],
)
def test_invalid_config_names_the_field_before_writing_anything(tmp_path, field, value):
  cfg = token_recall_configs.get_config("tiny")
  group, _, name = field.rpartition(".")
  (cfg[group] if group else cfg)[name] = value
  workdir = str(tmp_path / "run")
  with pytest.raises(ConfigError, match=f"^{field}: ") as error:
    _main(cfg, workdir)
  assert error.value.field == field
  assert not os.path.exists(workdir)


def test_command_line_exits_non_zero_on_an_invalid_config(run_module, tmp_path):
  workdir = str(tmp_path / "run")
  proc = run_module(
    "experiments.token_recall",
    "--config=learned_rules/configs/token_recall.py:tiny",
    "--config.host.code=relu",
    f"--workdir={workdir}",
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "error: host.code: unknown value 'relu'" in proc.stderr
  assert not os.path.exists(workdir)


def test_sign_codes_are_plus_minus_one_with_tanh_gradients():
  codes = host_models.TokenCodes(5, 3, 4, 2, code="sign")
  tokens = jnp.arange(3)
  variables = codes.init(jax.random.PRNGKey(0), tokens, tokens, tokens[0])
  k, v, q = codes.apply(variables, tokens, tokens, tokens[0])
  assert k.shape == (3, 4) and v.shape == (3, 2) and q.shape == (4,)
  for code in (k, v, q):
    assert set(np.unique(np.asarray(code))) <= {-1.0, 1.0}
  grads = jax.grad(lambda p: jnp.sum(codes.apply({"params": p}, tokens, tokens, tokens[0])[0]))(
    variables["params"]
  )
  assert float(jnp.abs(grads["key_embed"]["embedding"]).sum()) > 0


def test_training_stream_draws_every_length_and_held_out_sequences_are_reproducible():
  task = token_task.TokenTask(num_keys=6, num_values=4, train_lengths=(1, 3), eval_lengths=(2, 5))
  batches = token_task.training_batches(token_task.sequence_rng(0, token_task.TRAIN_TAG), task, 4)
  shapes = [next(batches).keys.shape for _ in range(30)]
  assert {b for b, _ in shapes} == {4} and {length for _, length in shapes} == {1, 2, 3}
  held_out = list(token_task.held_out_sequences(0, task, 5, 12, 4))
  assert len(held_out) == 3 and all(s.keys.shape == (4, 5) for s in held_out)
  for a, b in zip(held_out, token_task.held_out_sequences(0, task, 5, 12, 4), strict=True):
    for x, y in zip(a, b, strict=True):  # the same sequences for every host
      np.testing.assert_array_equal(x, y)
  other = next(token_task.held_out_sequences(1, task, 5, 12, 4))  # another seed, other sequences
  assert not np.array_equal(other.keys, held_out[0].keys)
