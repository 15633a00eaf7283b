r"""Associative recall over tokens: a meta-trained rule used as the memory of another model.

A sequence of L (key token, value token) pairs (keys distinct within a sequence), then one of its key
tokens as a query; the target is that key's value token. Two host models with the same learned token
encoders and decoder, trained with the same budget on the same sequences: one stores the pairs in a
frozen `PlasticMemory` (the `hetero` rule shipped with the package, never meta-trained on tokens), the
other in an LSTM of at least as many parameters (`learned_rules/host_study.py`). `study(cfg)` checks
a config and turns it into the `host_study.Study` the library runs.

  python -m experiments.token_recall                     # ~10-15 min on 2 CPU cores
  python -m experiments.token_recall --quick             # ~5 min
  python -m experiments.token_recall --config=learned_rules/configs/token_recall.py:tiny --workdir=/tmp/tr

Variants (`:name`): `tiny` (seconds, for tests: a random rule on the 12-neuron `remember.py:tiny`
network), `quick`.
"""

import math

from learned_rules import config as config_lib
from learned_rules import configs, host_models, host_study, token_task
from learned_rules.config import ConfigError
from learned_rules.configs import remember


def get_config(variant: str = "") -> config_lib.ConfigDict:
  cfg = config_lib.ConfigDict()
  cfg.seed = 0
  # The memory's rule: a shipped rule's name or a path `learned_rules.load_rule` reads, or "random"
  # for a fresh random rule on the network and rule sizes of `remember.get_config(random_rule)`.
  cfg.rule = "hetero"
  cfg.random_rule = "tiny"

  cfg.task = config_lib.ConfigDict()
  cfg.task.num_keys = 32  # key vocabulary; keys are distinct within a sequence
  cfg.task.num_values = 32  # value vocabulary; values are drawn with replacement
  cfg.task.train_lengths = (1, 8)  # training L is uniform in [min, max], one L per batch
  cfg.task.eval_lengths = (1, 2, 4, 6, 8, 12, 16)

  # Both hosts: token -> nn.Embed -> code; the code's width is the memory's key / value width.
  cfg.host = config_lib.ConfigDict()
  cfg.host.code = "tanh"  # tanh: tanh(code_scale * e); sign: sign(e) forward, tanh's gradient back
  cfg.host.code_scale = 1.0
  cfg.host.embed_init_std = 1.0

  cfg.lstm = config_lib.ConfigDict()
  # Hidden sizes of the LSTM hosts; 0 is the smallest H whose LSTM host has at least as many parameters
  # as the plastic host with its rule (host parameters + the rule's meta-parameters).
  cfg.lstm.hidden_sizes = (0, 128)
  # Each LSTM host is also trained for these multiples of train.num_steps (on the same stream of batches,
  # continued): an LSTM step costs a small fraction of a plastic-memory step. 1 is the same budget.
  cfg.lstm.step_multiples = (1, 20)

  cfg.train = config_lib.ConfigDict()
  cfg.train.num_steps = 400  # per host; both see the same batches
  cfg.train.batch_size = 16
  cfg.train.learning_rate = 1e-2
  cfg.train.clip_norm = 1.0
  cfg.train.log_every = 25

  cfg.eval = config_lib.ConfigDict()
  cfg.eval.num_sequences = 512  # held-out sequences per L, the same for every host
  cfg.eval.batch_size = 128

  configs.apply_variants(cfg, variant, VARIANTS)
  return cfg


def _tiny(cfg):
  cfg.rule = "random"
  cfg.random_rule = "tiny"
  cfg.task.num_keys = cfg.task.num_values = 6
  cfg.task.train_lengths = (1, 2)
  cfg.task.eval_lengths = (1, 3)
  cfg.lstm.hidden_sizes = (0,)
  cfg.lstm.step_multiples = (1, 2)
  cfg.train.num_steps = 4
  cfg.train.batch_size = 4
  cfg.train.log_every = 2
  cfg.eval.num_sequences = 8
  cfg.eval.batch_size = 8


def _quick(cfg):
  cfg.train.num_steps = 150
  cfg.task.eval_lengths = (1, 2, 4, 8, 12, 16)
  cfg.eval.num_sequences = 256


VARIANTS = {"tiny": _tiny, "quick": _quick}


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
