"""The capacity study's config, read once: checked whole, then frozen into a `Plan`.

The config is `learned_rules/configs/capacity.py` (its docstring describes every field). `read_plan`
checks all of it, and every config it implies, before anything runs, and returns the studies to run, their
K and episode counts, the baselines' settings as frozen specs, and the `remember` config of every learned
rule a study needs (what `meta_train.train_and_evaluate` takes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from learned_rules import baselines, pretrained, trained_baselines
from learned_rules import config as config_lib
from learned_rules.configs import capacity as capacity_configs

LINEAR_BASELINES = baselines.BASELINES  # key_blind, hebbian, hopfield, pseudo_inverse
RECURRENT_BASELINES = ("recurrent", "recurrent_state")  # parameter-matched and state-matched GRUs
# Rules meta-trained as controls: the same network with synapse updates off, its synapses at the learned
# per-type-pair state plus fresh noise (`synapses_off`) or each at a meta-trained weight state of its own
# (`routing`: a trained recurrent network of the same wiring).
CONTROLS = ("synapses_off", "routing")
# Memories on fixed random hidden layers of the evaluated network's sizes, with a readout written during
# the episode (`trained_baselines`): by the delta rule, step size tuned, by sequential projection, or
# by the outer product (on the key bits too where the outputs read them).
RANDOM_FEATURES = ("random_delta", "random_projection", "random_hebbian")
BASELINES = (*LINEAR_BASELINES, *CONTROLS, *RECURRENT_BASELINES, "online_backprop", *RANDOM_FEATURES)


# The fields of the trained-baseline specs are those of the config's `recurrent`, `online_backprop` and
# `random_delta` groups, by name: a group's fields shape its baseline's results, so they are part of their
# cache key.
@dataclasses.dataclass(frozen=True)
class RecurrentSpec:
  """`recurrent` and `recurrent_state`: GRUs (or LSTMs) trained by back-propagation through time."""

  cell: str
  num_steps: int
  batch_size: int
  learning_rates: tuple[float, ...]
  num_seeds: int
  tune_episodes: int
  state_hidden_cap: int


@dataclasses.dataclass(frozen=True)
class OnlineBackpropSpec:
  """`online_backprop`: a `hidden`-unit network trained by SGD during the episode, step size tuned."""

  hidden: int
  step_sizes: tuple[float, ...]
  tune_episodes: int


@dataclasses.dataclass(frozen=True)
class RandomDeltaSpec:
  """`random_delta`: fixed random hidden layers with a delta-rule readout, step size tuned. Its hidden
  layers are not a field: they are those of the network evaluated
  (`capacity_baselines.random_features_hidden`)."""

  step_sizes: tuple[float, ...]
  tune_episodes: int


@dataclasses.dataclass(frozen=True)
class Plan:
  """Everything a capacity study runs. `difficulty` lists its `(axis, value)` settings in order; `rules`
  maps each learned rule's run name (`run_name`) to its `remember` config."""

  studies: tuple[str, ...]
  networks: tuple[str, ...]
  baselines: tuple[str, ...]
  k_values: tuple[int, ...]
  num_episodes: int
  sizes: tuple[int, ...]
  size_k_multiples: tuple[float, ...]
  size_min_scored_bits: int
  size_baselines: tuple[str, ...]
  difficulty: tuple[tuple[str, object], ...]
  difficulty_k_values: tuple[int, ...]
  difficulty_baselines: tuple[str, ...]
  recurrent: RecurrentSpec
  online_backprop: OnlineBackpropSpec
  random_delta: RandomDeltaSpec
  train_neurons: int  # N and K of the rules' training task, marked in the figures
  train_k: int
  rules: Mapping[str, config_lib.ConfigDict] = dataclasses.field(compare=False)
  # The size study's rules by name (`size.rules`): None for `learned` (the study's own), else the saved
  # rule, loaded once.
  size_rules: Mapping[str, pretrained.Rule | None] = dataclasses.field(default_factory=dict, compare=False)
  # The `full` config every size-study rule runs on (its task, seed and noise), moved to each N.
  size_base: config_lib.ConfigDict | None = dataclasses.field(default=None, compare=False)


def names(text: str) -> tuple[str, ...]:
  """The names of a comma-separated list."""
  return tuple(n for n in (s.strip() for s in text.split(",")) if n)


def _names_at(study, field: str) -> tuple[str, ...]:
  """The names of the comma-separated list at dotted `field` of `study`."""
  group, _, key = field.rpartition(".")
  return names((study[group] if group else study)[key])


def run_name(network: str, protocol: str = "hetero", control: str | None = None) -> str:
  """The run (folder) name of the learned rule of `network` on `protocol`, or of its control."""
  return network + ("-auto" if protocol == "auto" else "") + (f"-{control}" if control else "")


def network_config(study, name: str) -> config_lib.ConfigDict:
  """The `remember` config of one network of the study: `study.base` with the network's overrides."""
  if name not in capacity_configs.NETWORKS:
    raise config_lib.ConfigError(
      "networks", f"unknown network {name!r}; one of {list(capacity_configs.NETWORKS)}"
    )
  cfg = config_lib.with_overrides(study.base, capacity_configs.NETWORKS[name])
  cfg.eval.k_values = tuple(study.k_values)
  cfg.eval.num_episodes = study.num_episodes
  return cfg


def rule_config(study, name: str, protocol: str = "hetero", control: str | None = None):
  """The config of a learned rule: network `name` on `protocol`, or a control of `CONTROLS`."""
  cfg = network_config(study, name)
  if protocol == "auto":
    cfg.task.protocol = "auto"
    cfg.task.cue_corruption = float(study.auto_cue_corruption)
  if control is not None:
    cfg.net.synapse_updates = False
    cfg.net.trained_synapses = control == "routing"
  return cfg


def with_setting(cfg, axis: str, value) -> config_lib.ConfigDict:
  """A copy of `cfg` moved along a difficulty axis (`size` for the network size N, or one of `AXES`)."""
  if axis == "size":  # a quarter input, a quarter output, half hidden, like the 16/16/32 base
    quarter = value // 4
    overrides = {"net.num_inputs": quarter, "net.num_outputs": quarter, "net.num_hidden": value - 2 * quarter}
  elif axis == "width":
    spec = config_lib.experiment_spec(cfg)
    total = spec.num_inputs + spec.num_outputs + spec.num_hidden
    overrides = {"net.num_inputs": value, "net.num_outputs": value, "net.num_hidden": total - 2 * value}
  else:
    overrides = {capacity_configs.AXES[axis]: value}
  return config_lib.with_overrides(cfg, overrides)


LEARNED = "learned"  # in `size.rules`: the study's own rule, meta-trained on `full`


def size_rule_config(base, rule: pretrained.Rule | None, n: int) -> config_lib.ConfigDict:
  """The config a size-study rule runs at N = `n`: the study's `full` config `base` at that size (its
  task and seed, so every rule sees the same episodes), with a saved rule's `rule` block, initial
  noise and fixed random input -> hidden synapses (`net.random_input_synapses`, 0 for most rules)."""
  cfg = with_setting(base, "size", n)
  if rule is not None:
    cfg = config_lib.with_overrides(
      cfg,
      {
        "rule": rule.config.rule.to_dict(),
        "net.init_noise": rule.config.net.init_noise,
        "net.random_input_synapses": rule.topology.random_input_synapses,
      },
    )
  return cfg


def _size_rules(study, base) -> dict[str, pretrained.Rule | None]:
  """`size.rules`, each loaded and checked at every size: a `config.ConfigError` naming the field."""
  out = {}
  for name in _names_at(study, "size.rules"):
    if name in BASELINES:
      raise config_lib.ConfigError("size.rules", f"{name!r} is a baseline's name; list it in size.baselines")
    if name == LEARNED:
      out[name] = None
      continue
    try:
      out[name] = pretrained.load_rule(name)
    except (FileNotFoundError, pretrained.RuleLoadError) as e:
      raise config_lib.ConfigError("size.rules", str(e)) from None
    if out[name].config.task.protocol != "hetero":
      raise config_lib.ConfigError(
        "size.rules", f"{name} was trained on {out[name].config.task.protocol}: hetero only"
      )
    for n in study.size.sizes:
      try:
        config_lib.validate(size_rule_config(base, out[name], int(n)))
      except config_lib.ConfigError as e:
        raise config_lib.ConfigError("size.rules", f"{name} at N = {n}: {e}") from None
  if not out:
    raise config_lib.ConfigError("size.rules", "needs at least one rule")
  return out


def _check_names(study) -> None:
  """Studies, baselines and axes named in the config, each one of those there are."""
  for name in names(study.studies):
    if name not in capacity_configs.STUDIES:
      raise config_lib.ConfigError("studies", f"unknown study {name!r}; one of {capacity_configs.STUDIES}")
  for field in ("baselines", "size.baselines", "difficulty.baselines"):
    for name in _names_at(study, field):
      if name not in BASELINES:
        raise config_lib.ConfigError(field, f"unknown baseline {name!r}; one of {BASELINES}")
  for axis in names(study.difficulty.axes):
    if axis not in capacity_configs.AXES:
      raise config_lib.ConfigError(
        "difficulty.axes", f"unknown axis {axis!r}; one of {list(capacity_configs.AXES)}"
      )


def _check_numbers(study) -> None:
  """The K, sizes and trained baselines' settings: each in range."""
  for field, ks in (("k_values", study.k_values), ("difficulty.k_values", study.difficulty.k_values)):
    if not ks or any(int(k) < 1 for k in ks):
      raise config_lib.ConfigError(field, "needs at least one K, each >= 1")
  if not study.size.sizes or any(int(n) < 8 for n in study.size.sizes):
    raise config_lib.ConfigError("size.sizes", "needs at least one N, each >= 8")
  if not study.size.k_multiples or any(m <= 0 for m in study.size.k_multiples):
    raise config_lib.ConfigError("size.k_multiples", "needs at least one multiple, each > 0")
  if study.recurrent.cell not in trained_baselines.CELLS:
    raise config_lib.ConfigError("recurrent.cell", f"one of {trained_baselines.CELLS}")
  for field in ("num_steps", "batch_size", "num_seeds", "tune_episodes", "state_hidden_cap"):
    config_lib.positive_int(study, f"recurrent.{field}")
  rates = study.recurrent.learning_rates
  if not rates or any(not isinstance(r, (int, float)) or not r > 0 for r in rates):
    raise config_lib.ConfigError(
      "recurrent.learning_rates", f"needs at least one rate, each > 0; got {rates}"
    )
  if not study.online_backprop.step_sizes or any(s < 0 for s in study.online_backprop.step_sizes):
    raise config_lib.ConfigError("online_backprop.step_sizes", "needs at least one step size, each >= 0")
  steps = study.random_delta.step_sizes
  if not steps or any(not isinstance(s, (int, float)) or not s > 0 for s in steps):
    raise config_lib.ConfigError(
      "random_delta.step_sizes", f"needs at least one step size, each > 0; got {steps}"
    )
  config_lib.positive_int(study, "random_delta.tune_episodes")


def _rule_configs(study) -> dict[str, config_lib.ConfigDict]:
  """Every learned rule the studies of `study` need, by run name."""
  studies = names(study.studies)
  networks = list(names(study.networks)) if "networks" in studies else []
  size_learned = "size" in studies and LEARNED in _names_at(study, "size.rules")
  if ("difficulty" in studies or size_learned) and "full" not in networks:
    networks.append("full")  # their rule
  cfgs = {run_name(name): rule_config(study, name) for name in networks}
  if "auto" in studies:
    cfgs[run_name("full", "auto")] = rule_config(study, "full", "auto")
  # The controls of each protocol whose studies compare with them.
  uses = {"networks": ("baselines", "hetero"), "auto": ("baselines", "auto")}
  uses.update({"size": ("size.baselines", "hetero"), "difficulty": ("difficulty.baselines", "hetero")})
  for name in studies:
    field, protocol = uses[name]
    for control in CONTROLS:
      if control in _names_at(study, field):
        cfgs[run_name("full", protocol, control)] = rule_config(study, "full", protocol, control)
  return cfgs


def _spec(cls, study, group: str):
  """The frozen spec `cls` of config group `group`, field by field (none left out: every one is part
  of the cache key of the baseline's results)."""
  fields = [f.name for f in dataclasses.fields(cls)]
  extra = sorted(set(study[group]) - set(fields))
  if extra:
    raise config_lib.ConfigError(f"{group}.{extra[0]}", f"not a field of {cls.__name__}: one of {fields}")
  return cls(**{name: study[group][name] for name in fields})


def read_plan(study) -> Plan:
  """The `Plan` of the study config `study`; a `config.ConfigError` naming the field if any part of it,
  a learned rule's config or an evaluated setting is invalid."""
  _check_names(study)
  _check_numbers(study)
  cfgs = _rule_configs(study)
  for cfg in cfgs.values():
    config_lib.validate(cfg)
  studies = names(study.studies)
  sizes = tuple(int(n) for n in study.size.sizes) if "size" in studies else ()
  difficulty = ()
  if "difficulty" in studies:
    difficulty = tuple((a, v) for a in names(study.difficulty.axes) for v in study.difficulty[a])
  for axis, value in [("size", n) for n in sizes] + list(difficulty):
    config_lib.validate(with_setting(rule_config(study, "full"), axis, value))
  if study.size.min_scored_bits < 1:
    raise config_lib.ConfigError("size.min_scored_bits", f"must be >= 1, got {study.size.min_scored_bits}")
  size_base = rule_config(study, "full")
  size_rules = _size_rules(study, size_base) if "size" in studies else {}
  base = study.base
  return Plan(
    studies=studies,
    networks=names(study.networks),
    baselines=names(study.baselines),
    k_values=tuple(study.k_values),
    num_episodes=study.num_episodes,
    sizes=sizes,
    size_k_multiples=tuple(study.size.k_multiples),
    size_min_scored_bits=int(study.size.min_scored_bits),
    size_baselines=names(study.size.baselines),
    difficulty=difficulty,
    difficulty_k_values=tuple(study.difficulty.k_values),
    difficulty_baselines=names(study.difficulty.baselines),
    recurrent=_spec(RecurrentSpec, study, "recurrent"),
    online_backprop=_spec(OnlineBackpropSpec, study, "online_backprop"),
    random_delta=_spec(RandomDeltaSpec, study, "random_delta"),
    train_neurons=base.net.num_inputs + base.net.num_outputs + base.net.num_hidden,
    train_k=base.task.num_snippets,
    rules=cfgs,
    size_rules=size_rules,
    size_base=size_base,
  )
