"""The token-recall study's config, read once: checked whole (`validate`, a `ConfigError` naming the
field) and frozen into the `host_study.Study` that the study runs (`study`). The config's fields are
documented in `learned_rules/configs/token_recall.py`."""

from __future__ import annotations

import math

from learned_rules import config as config_lib
from learned_rules import host_models, host_study, token_task
from learned_rules.config import ConfigError
from learned_rules.configs import remember


def validate(cfg) -> None:
  """Raises `ConfigError` naming the first invalid field; checks nothing that needs the rule loaded."""
  config_lib._int(cfg, "seed", 0)
  rule = config_lib._get(cfg, "rule")
  if not isinstance(rule, str) or not rule:
    raise ConfigError("rule", f"must be a rule name or path, or 'random', got {rule!r}")
  if rule == "random":
    try:
      remember.get_config(config_lib._get(cfg, "random_rule"))
    except (ConfigError, KeyError, TypeError, AttributeError):
      raise ConfigError(
        "random_rule", f"must be a variant of learned_rules/configs/remember.py, got {cfg.random_rule!r}"
      ) from None
  _validate_task(cfg)
  config_lib._choice(cfg, "host.code", host_models.CODES)
  config_lib._float(cfg, "host.code_scale", 0.0, math.inf, low_open=True)
  config_lib._float(cfg, "host.embed_init_std", 0.0, math.inf, low_open=True)
  hidden = config_lib._get(cfg, "lstm.hidden_sizes")
  if (
    isinstance(hidden, (str, bytes))
    or not hasattr(hidden, "__len__")
    or not hidden
    or any(isinstance(h, bool) or not isinstance(h, int) or h < 0 for h in hidden)
  ):
    raise ConfigError("lstm.hidden_sizes", f"must be a non-empty sequence of integers >= 0, got {hidden!r}")
  multiples = config_lib._int_sequence(cfg, "lstm.step_multiples", allow_empty=False)
  if 1 not in multiples:
    raise ConfigError("lstm.step_multiples", f"must include 1 (the plastic host's budget), got {multiples}")
  _validate_train_and_eval(cfg)


def _validate_task(cfg) -> None:
  num_keys = config_lib._int(cfg, "task.num_keys", 2)
  config_lib._int(cfg, "task.num_values", 2)
  lengths = config_lib._int_sequence(cfg, "task.train_lengths", allow_empty=False)
  if len(lengths) != 2 or lengths[0] > lengths[1]:
    raise ConfigError("task.train_lengths", f"must be (min, max) with min <= max, got {tuple(lengths)}")
  for field, ls in (("task.train_lengths", lengths), ("task.eval_lengths", None)):
    ls = ls or config_lib._int_sequence(cfg, field, allow_empty=False)
    if max(ls) > num_keys:
      raise ConfigError(field, f"L = {max(ls)} exceeds the {num_keys} distinct keys (task.num_keys)")


def _validate_train_and_eval(cfg) -> None:
  config_lib._int(cfg, "train.num_steps", 1)
  config_lib._int(cfg, "train.batch_size", 1)
  config_lib._float(cfg, "train.learning_rate", 0.0, math.inf, low_open=True)
  config_lib._float(cfg, "train.clip_norm", 0.0, math.inf, low_open=True)
  config_lib._int(cfg, "train.log_every", 1)
  n = config_lib._int(cfg, "eval.num_sequences", 1)
  b = config_lib._int(cfg, "eval.batch_size", 1)
  if n % b:
    raise ConfigError("eval.num_sequences", f"must be a multiple of eval.batch_size ({b}), got {n}")


def study(cfg) -> host_study.Study:
  """The `host_study.Study` of a token-recall config, after `validate`."""
  validate(cfg)
  t, tr = cfg.task, cfg.train
  lengths = tuple(int(x) for x in t.train_lengths), tuple(int(x) for x in t.eval_lengths)
  task = token_task.TokenTask(int(t.num_keys), int(t.num_values), *lengths)
  return host_study.Study(
    seed=int(cfg.seed),
    rule=cfg.rule,
    random_rule=cfg.random_rule,
    task=task,
    code=cfg.host.code,
    code_scale=float(cfg.host.code_scale),
    embed_init_std=float(cfg.host.embed_init_std),
    lstm_hidden_sizes=tuple(int(h) for h in cfg.lstm.hidden_sizes),
    lstm_step_multiples=tuple(int(m) for m in cfg.lstm.step_multiples),
    num_steps=int(tr.num_steps),
    batch_size=int(tr.batch_size),
    learning_rate=float(tr.learning_rate),
    clip_norm=float(tr.clip_norm),
    log_every=int(tr.log_every),
    eval_sequences=int(cfg.eval.num_sequences),
    eval_batch_size=int(cfg.eval.batch_size),
  )
