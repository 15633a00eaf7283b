r"""Associative recall over tokens: a meta-trained rule used as the memory of another model.

A sequence of L (key token, value token) pairs (keys distinct within a sequence), then one of its key
tokens as a query; the target is that key's value token. Two host models with the same learned token
encoders and decoder, trained with the same budget on the same sequences: one stores the pairs in a
frozen `PlasticMemory` (the `hetero` rule shipped with the package, never meta-trained on tokens), the
other in an LSTM of at least as many parameters (`learned_rules/host_study.py`). `host_plan.study(cfg)` checks
a config and turns it into the `host_study.Study` the library runs.

  python -m experiments.token_recall                     # ~10-15 min on 2 CPU cores
  python -m experiments.token_recall --quick             # ~5 min
  python -m experiments.token_recall --config=learned_rules/configs/token_recall.py:tiny --workdir=/tmp/tr

Variants (`:name`): `tiny` (seconds, for tests: a random rule on the 12-neuron `remember.py:tiny`
network), `quick`.
"""

from learned_rules import config as config_lib
from learned_rules import configs


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
