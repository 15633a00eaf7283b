"""Validation of experiment configs and the static specs derived from them.

A config is an `ml_collections.ConfigDict` (see `learned_rules/configs/remember.py` for every field).
`validate` runs before anything is compiled or written and raises `ConfigError` whose message starts with
the dotted name of the offending field, so a typo costs one line of output, not a traceback from XLA.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import numbers

import ml_collections

from learned_rules import checkpointing, gradient_estimators, network, rules, tasks, unroll

ConfigDict = ml_collections.ConfigDict  # the experiment configs (learned_rules/configs/) are these

LOSSES = ("mse", "logistic")
# Meta steps in a row with a non-finite loss or gradient (each skipped) before a run stops.
DEFAULT_MAX_NONFINITE_STEPS = 10


class ConfigError(ValueError):
  """An invalid config value; `field` is its dotted name."""

  def __init__(self, field: str, message: str | None = None):
    # One argument is a whole message (as when a caller re-raises the error with its own prefix).
    super().__init__(field if message is None else f"{field}: {message}")
    self.field = field if message is not None else field.partition(":")[0]


def _get(cfg, dotted: str):
  value = cfg
  for part in dotted.split("."):
    try:
      value = value[part]
    except (KeyError, TypeError, AttributeError):
      raise ConfigError(dotted, "missing from the config") from None
  return value


def _int(cfg, dotted: str, minimum: int) -> int:
  value = _get(cfg, dotted)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ConfigError(dotted, f"must be an integer, got {value!r}")
  if value < minimum:
    raise ConfigError(dotted, f"must be >= {minimum}, got {value}")
  return int(value)


def positive_int(cfg, dotted: str) -> int:
  """The integer field `dotted` of `cfg`, validated >= 1 (for the experiment configs' own fields)."""
  return _int(cfg, dotted, 1)


def _float(
  cfg, dotted: str, low: float, high: float, high_open: bool = True, low_open: bool = False
) -> float:
  value = _get(cfg, dotted)
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ConfigError(dotted, f"must be a number, got {value!r}")
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if math.isnan(value) or too_low or too_high:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ConfigError(dotted, f"must lie in {interval}, got {value}")
  return float(value)


def _int_sequence(cfg, dotted: str, allow_empty: bool) -> list[int]:
  """A sequence of integers >= 1 (layer widths, K values)."""
  values = _get(cfg, dotted)
  if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
    raise ConfigError(dotted, f"must be a sequence of integers, got {values!r}")
  if not values and not allow_empty:
    raise ConfigError(dotted, "must not be empty")
  for v in values:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
      raise ConfigError(dotted, f"every entry must be an integer >= 1, got {list(values)}")
  return [int(v) for v in values]


def _bool(cfg, dotted: str) -> bool:
  value = _get(cfg, dotted)
  if not isinstance(value, bool):
    raise ConfigError(dotted, f"must be True or False, got {value!r}")
  return value


def _choice(cfg, dotted: str, choices) -> str:
  value = _get(cfg, dotted)
  if value not in choices:
    raise ConfigError(dotted, f"unknown value {value!r}; one of {', '.join(choices)}")
  return value


def _validate_net(cfg) -> None:
  topology = _choice(cfg, "net.topology", network.TOPOLOGIES)
  _int(cfg, "net.num_inputs", 1)
  _int(cfg, "net.num_outputs", 1)
  if topology in ("full", "sparse"):
    _int(cfg, "net.num_hidden", 0)
  if topology == "sparse":
    _float(cfg, "net.density", 0.0, 1.0, high_open=False, low_open=True)
    _int(cfg, "net.mask_seed", 0)
  if topology in ("layered", "layered_feedback"):
    _int_sequence(cfg, "net.hidden_layers", allow_empty=True)
  _float(cfg, "net.init_noise", 0.0, float("inf"))
  for name in ("self_connections", "synapse_updates", "body_recurrence"):
    _bool(cfg, f"net.{name}")
  random_inputs = _optional(cfg, "net.random_input_synapses", lambda c, f: _float(c, f, 0.0, float("inf")))
  if random_inputs and trained_synapses(cfg):
    raise ConfigError(
      "net.random_input_synapses",
      "> 0 needs net.trained_synapses=False (the trained weights would replace the random ones)",
    )
  if trained_synapses(cfg) and _get(cfg, "net.synapse_updates"):
    raise ConfigError(
      "net.trained_synapses",
      "True needs net.synapse_updates=False (the trained weights are the synapses' fixed states)",
    )


def _optional(cfg, dotted: str, read):
  """The field `dotted` as `read(cfg, dotted)` validates it; a config from before it existed (a shipped
  rule's, an older run's) lacks it and reads its default, `checkpointing.OPTIONAL_FIELDS[dotted]`."""
  parent, _, leaf = dotted.rpartition(".")
  if leaf not in _get(cfg, parent):
    return checkpointing.OPTIONAL_FIELDS[dotted]
  return read(cfg, dotted)


def _optional_bool(cfg, dotted: str) -> bool:
  """The boolean field `dotted`, validated, or its default (`_optional`)."""
  return _optional(cfg, dotted, _bool)


def trained_synapses(cfg) -> bool:
  """`net.trained_synapses`, validated (optional: `_optional_bool`)."""
  return _optional_bool(cfg, "net.trained_synapses")


def _validate_rule(cfg) -> None:
  for name in ("body_dim", "synapse_dim", "act_dim", "emb_dim", "hidden"):
    _int(cfg, f"rule.{name}", 1)
  if _get(cfg, "rule.act_dim") > _get(cfg, "rule.body_dim"):
    raise ConfigError("rule.act_dim", "must be <= rule.body_dim (the activation is a slice of it)")
  _float(cfg, "rule.init_decay", 0.0, 1.0, low_open=True)
  _float(cfg, "rule.init_rate", 0.0, 1.0, low_open=True)
  _bool(cfg, "rule.bilinear")
  _choice(cfg, "rule.message_norm", network.MESSAGE_NORMS)
  reference = _optional(cfg, "rule.reference_fan_in", lambda c, f: _int(c, f, 0))
  if _optional_bool(cfg, "rule.scale_rate") and not reference:
    raise ConfigError(
      "rule.scale_rate", "True needs rule.reference_fan_in (the fan-in at which the rate is plain)"
    )
  if _get(cfg, "rule.message_norm") == "sqrt_ref" and not reference:
    raise ConfigError(
      "rule.message_norm", "sqrt_ref needs rule.reference_fan_in (the fan-in where it is the mean)"
    )
  _optional(cfg, "rule.rate_power", lambda c, f: _float(c, f, 0.0, 2.0, high_open=False))
  _optional(cfg, "rule.decay_power", lambda c, f: _float(c, f, 0.0, 2.0, high_open=False))
  _bool(cfg, "rule.fast_synapse")
  _optional_bool(cfg, "rule.center_synapses")
  _optional_bool(cfg, "rule.error_input")


def _validate_task(cfg) -> None:
  protocol = _choice(cfg, "task.protocol", tasks.PROTOCOLS)
  k = _int(cfg, "task.num_snippets", 1)
  _int(cfg, "task.present_steps", 1)
  _int(cfg, "task.gap_steps", 0)
  _int(cfg, "task.cycles", 1)
  _int(cfg, "task.delay_steps", 0)
  _int(cfg, "task.query_steps", 1)
  q = _int(cfg, "task.num_queries", 0)
  if protocol != "streaming" and q > k:
    raise ConfigError(
      "task.num_queries", f"{q} queries but only {k} stored snippets (task.num_snippets) to ask for"
    )
  _float(cfg, "task.cue_corruption", 0.0, 1.0)
  if protocol == "auto" and _get(cfg, "net.num_inputs") != _get(cfg, "net.num_outputs"):
    raise ConfigError("net.num_outputs", "the auto protocol needs num_outputs == num_inputs")
  if protocol == "streaming":
    _int(cfg, "task.max_lag", 1)
    _int(cfg, "task.window", 1)
  for name in ("score_reachable", "hold_for_latency"):
    _optional_bool(cfg, f"task.{name}")


def first_scored_step(cfg) -> int:
  """`task.first_scored_step`, validated >= 0 (optional: `_optional`)."""
  return _optional(cfg, "task.first_scored_step", lambda c, d: _int(c, d, 0))


def key_latency(cfg) -> int:
  """Steps L before a key on the inputs of `cfg`'s network (a validated `net` block) can reach its
  outputs: `network.key_latency` of the topology it builds (which traces and compiles nothing)."""
  net = ml_collections.ConfigDict(_get(cfg, "net"))  # also a plain dict's (a config read from JSON)
  try:
    return network.key_latency(make_topology(net))
  except ValueError as e:  # a sparse mask can leave an output unreachable
    raise ConfigError("net.density", f"{e} (net.topology=sparse, net.mask_seed={net.mask_seed})") from None


def _validate_latency(cfg) -> None:
  """Refuses a task none of whose scored query steps can see its key (docs/DESIGN.md, "Latency"), or
  none of whose query steps is scored at all (`task.first_scored_step`, validated here)."""
  latency = key_latency(cfg)
  r = _get(cfg, "task.query_steps")
  if r <= latency:
    where = f"net.topology={_get(cfg, 'net.topology')}"
    if _get(cfg, "net.topology") in ("layered", "layered_feedback"):
      where += f" with net.hidden_layers={tuple(_get(cfg, 'net.hidden_layers'))}"
    raise ConfigError(
      "task.query_steps",
      f"{r} query steps, but a key takes {latency + 1} steps to reach the outputs of {where}: no scored "
      f"step can see the key; set task.query_steps >= {latency + 1}",
    )
  first = first_scored_step(cfg)
  if r <= first:
    raise ConfigError(
      "task.first_scored_step",
      f"scores no query step before step {first} (0-based), but a query has only {r} steps "
      f"(task.query_steps): nothing would be scored",
    )


def _validate_train(cfg) -> None:
  _int(cfg, "train.batch_size", 1)
  _int(cfg, "train.num_steps", 0)
  _float(cfg, "train.learning_rate", 0.0, float("inf"), low_open=True)
  _float(cfg, "train.clip_norm", 0.0, float("inf"), low_open=True)
  _choice(cfg, "train.loss", LOSSES)
  for name in ("log_every", "checkpoint_every", "max_to_keep"):
    _int(cfg, f"train.{name}", 1)
  _choice(cfg, "train.remat", unroll.REMAT_POLICIES)
  max_nonfinite_steps(cfg)
  decay_steps(cfg)
  init_rule(cfg)
  error_init(cfg)
  _int(cfg, "eval.num_episodes", 1)
  _int_sequence(cfg, "eval.k_values", allow_empty=False)


def from_dict(saved: dict) -> ml_collections.ConfigDict:
  """The config of a plain dict (one saved beside a checkpoint or a rule, `config_to_dict`)."""
  return ml_collections.ConfigDict(saved)


def estimator_spec(cfg) -> gradient_estimators.EstimatorSpec:
  """`train.estimator`, the meta-gradient estimator (optional: without it, `truncated` with the task's
  own window, as every run before it existed)."""
  if "estimator" not in _get(cfg, "train"):
    return gradient_estimators.EstimatorSpec()
  kind = _choice(cfg, "train.estimator.kind", gradient_estimators.KINDS)
  return gradient_estimators.EstimatorSpec(
    kind=kind,
    window=_int(cfg, "train.estimator.window", 0),
    horizon=_int(cfg, "train.estimator.horizon", 0),
    population=_int(cfg, "train.estimator.population", 0),
    std=_float(cfg, "train.estimator.std", 0.0, float("inf")),
  )


def mixture(cfg) -> list[ml_collections.ConfigDict]:
  """The configs of the problems one meta step trains on: `train.mixture`, a sequence of members, each
  a comma-separated list of `field=value` overrides of the config (`"net.num_hidden=96,
  task.num_snippets=16"`; `""` is the config itself); empty (or absent): the config's one problem.
  Every member is validated, and they must share the rule (its sizes and neuron types), which they
  train together."""
  train = _get(cfg, "train")
  members = train["mixture"] if "mixture" in train else ()
  if isinstance(members, str):
    members = (members,)
  if not isinstance(members, (list, tuple)) or not all(isinstance(m, str) for m in members):
    raise ConfigError("train.mixture", f"must be a sequence of 'field=value,...' strings, got {members!r}")
  if not members:
    return [cfg]
  if trained_synapses(cfg):
    raise ConfigError("train.mixture", "net.trained_synapses trains one network's weights: no mixture")
  out, shared = [], None
  for i, member in enumerate(members):
    one = _member(cfg, member, i)
    spec = rule_spec(one, make_topology(one))
    if shared is not None and spec != shared:
      raise ConfigError(
        "train.mixture", f"member {i}: every member must share the rule (rule.*, neuron types)"
      )
    shared = spec
    out.append(one)
  return out


def _member(cfg, member: str, i: int) -> ml_collections.ConfigDict:
  """Member `i` of `train.mixture`: `cfg` with the member's overrides, validated."""
  overrides = {}
  for part in filter(str.strip, member.split(",")):
    name, sep, raw = part.partition("=")
    name = name.strip()
    if not sep or not name:
      raise ConfigError("train.mixture", f"member {i}: {part!r} is not field=value")
    if not name.startswith(("net.", "rule.", "task.")) and name != "train.batch_size":
      raise ConfigError("train.mixture", f"member {i}: {name}: only net, rule, task and train.batch_size")
    try:
      _get(cfg, name)  # an unknown field is refused, not added
      overrides[name] = ast.literal_eval(raw.strip())
    except ConfigError:
      raise ConfigError("train.mixture", f"member {i}: {name}: no such field") from None
    except (ValueError, SyntaxError):
      overrides[name] = raw.strip()  # a bare word: a string
  one = with_overrides(cfg, {**overrides, "train.mixture": ()})
  try:
    validate(one)
  except ConfigError as e:
    raise ConfigError("train.mixture", f"member {i}: {e}") from None
  return one


def with_overrides(cfg, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of `cfg` with the dotted fields of `overrides` set (`{"net.topology": "sparse"}`); `cfg`
  itself is left alone."""
  cfg = ml_collections.ConfigDict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
  for field, value in overrides.items():
    *parents, leaf = field.split(".")
    node = cfg
    for part in parents:
      node = node[part]
    node[leaf] = value
  return cfg


def error_init(cfg) -> float:
  """`train.error_init`: the scale of the error's weights drawn when a saved rule without
  `rule.error_input` starts a run with it (`rules.with_error_input`), 0 for zeros (the rule starts as it
  was). Optional: a config from before it existed gives 0. Above 0 it needs `rule.error_input` and
  `train.init_rule`: there is nothing for it to draw otherwise."""
  value = float(_optional(cfg, "train.error_init", lambda c, f: _float(c, f, 0.0, float("inf"))))
  if value and not (_optional_bool(cfg, "rule.error_input") and init_rule(cfg)):
    raise ConfigError(
      "train.error_init",
      f"{value} draws the error's weights of a saved rule without them: it needs rule.error_input=True "
      "and a train.init_rule",
    )
  return value


def init_rule(cfg) -> str:
  """`train.init_rule`: the saved rule a run starts from (`pretrained.load_rule` reads it when the run
  starts), or "" to start from the seed. Optional: a config from before it existed starts from its seed."""
  if "init_rule" not in _get(cfg, "train"):
    return ""
  value = _get(cfg, "train.init_rule")
  if not isinstance(value, str):
    raise ConfigError("train.init_rule", f"must be a rule's name or path (a string), got {value!r}")
  if value and trained_synapses(cfg):
    raise ConfigError("train.init_rule", "net.trained_synapses trains a network's own weights, not a rule")
  return value


def decay_steps(cfg) -> int:
  """`train.decay_steps`, validated (>= 0; 0: a constant learning rate). Optional: a config from
  before it existed gets 0."""
  if "decay_steps" not in _get(cfg, "train"):
    return 0
  return _int(cfg, "train.decay_steps", 0)


def max_nonfinite_steps(cfg) -> int:
  """`train.max_nonfinite_steps`, validated (>= 1). Optional: a config from before it existed (a
  shipped rule's, an older run's) gets `DEFAULT_MAX_NONFINITE_STEPS`."""
  if "max_nonfinite_steps" not in _get(cfg, "train"):
    return DEFAULT_MAX_NONFINITE_STEPS
  return _int(cfg, "train.max_nonfinite_steps", 1)


def mesh_shape(cfg) -> tuple[int, int]:
  """`(mesh.batch, mesh.neurons)`, validated. The block is optional (a rule's config, or a run from
  before it existed): without it, every device splits the batch, `(0, 1)`."""
  if "mesh" not in cfg:
    return 0, 1
  return _int(cfg, "mesh.batch", 0), _int(cfg, "mesh.neurons", 1)


def validate(cfg) -> None:
  """Raises `ConfigError` naming the first invalid field of `cfg`; returns None if it is valid."""
  _int(cfg, "seed", 0)
  _bool(cfg, "baseline_synapses_off")
  _validate_net(cfg)
  _validate_rule(cfg)
  _validate_task(cfg)
  _validate_latency(cfg)
  _validate_train(cfg)
  mesh_shape(cfg)
  estimator_spec(cfg)
  mixture(cfg)


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """What the training loop reads of a config (`train_spec`): frozen and hashable."""

  seed: int
  batch_size: int
  num_steps: int
  learning_rate: float
  clip_norm: float
  decay_steps: int
  log_every: int
  checkpoint_every: int
  max_to_keep: int
  max_nonfinite_steps: int
  mesh: tuple[int, int]  # (mesh.batch, mesh.neurons)
  eval_episodes: int
  k_values: tuple[int, ...]


def train_spec(cfg) -> TrainSpec:
  """The training and evaluation settings of a validated config."""
  t = _get(cfg, "train")
  return TrainSpec(
    seed=int(_get(cfg, "seed")),
    batch_size=int(t["batch_size"]),
    num_steps=int(t["num_steps"]),
    learning_rate=float(t["learning_rate"]),
    clip_norm=float(t["clip_norm"]),
    decay_steps=decay_steps(cfg),
    log_every=int(t["log_every"]),
    checkpoint_every=int(t["checkpoint_every"]),
    max_to_keep=int(t["max_to_keep"]),
    max_nonfinite_steps=max_nonfinite_steps(cfg),
    mesh=mesh_shape(cfg),
    eval_episodes=int(_get(cfg, "eval.num_episodes")),
    k_values=tuple(int(k) for k in _get(cfg, "eval.k_values")),
  )


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
  """What the studies read of an experiment config (`experiment_spec`), frozen: the network's
  description, its problem, and the training and evaluation settings."""

  topology: str
  num_inputs: int
  num_outputs: int
  num_hidden: int
  hidden_layers: tuple[int, ...]
  synapse_updates: bool
  baseline_synapses_off: bool
  problem: unroll.Problem
  train: TrainSpec

  @property
  def task(self) -> tasks.TaskSpec:
    return self.problem.task


def experiment_spec(cfg) -> ExperimentSpec:
  """The frozen description of a validated experiment config (a run's, a rule's or a study's base)."""
  net = _get(cfg, "net")
  return ExperimentSpec(
    topology=str(net["topology"]),
    num_inputs=int(net["num_inputs"]),
    num_outputs=int(net["num_outputs"]),
    num_hidden=int(net["num_hidden"]),
    hidden_layers=tuple(int(h) for h in net["hidden_layers"]),
    synapse_updates=bool(net["synapse_updates"]),
    baseline_synapses_off=bool(cfg["baseline_synapses_off"]) if "baseline_synapses_off" in cfg else False,
    problem=problem(cfg),
    train=train_spec(cfg),
  )


def as_dict(cfg) -> dict:
  """A config as a plain JSON-ready dict (for records and cache keys)."""
  return checkpointing.config_to_dict(cfg)


def make_topology(net) -> network.Topology:
  """The network of a config's `net` block (or of the config itself): `network.make_full`,
  `make_layered` or `make_sparse` with its sizes and ablations."""
  if "net" in net:
    net = net["net"]
  get = net.get if hasattr(net, "get") else lambda k, d=None: net[k] if k in net else d
  optional = checkpointing.OPTIONAL_FIELDS  # the defaults of the fields older configs lack
  ablations = dict(
    synapse_updates=bool(get("synapse_updates")),
    body_recurrence=bool(get("body_recurrence")),
    trained_synapses=bool(get("trained_synapses", optional["net.trained_synapses"])),
    random_input_synapses=float(get("random_input_synapses", optional["net.random_input_synapses"])),
  )
  n_in, n_out, topology = get("num_inputs"), get("num_outputs"), get("topology")
  if topology == "full":
    return network.make_full(n_in, n_out, get("num_hidden"), get("self_connections"), **ablations)
  if topology in ("layered", "layered_feedback"):
    feedback = topology == "layered_feedback"
    return network.make_layered(n_in, n_out, tuple(get("hidden_layers")), feedback=feedback, **ablations)
  if topology == "sparse":
    return network.make_sparse(n_in, n_out, get("num_hidden"), get("density"), get("mask_seed"), **ablations)
  raise ConfigError("net.topology", f"unknown topology {topology!r}; one of {', '.join(network.TOPOLOGIES)}")


def problem(cfg, topo: network.Topology | None = None, num_snippets: int | None = None) -> unroll.Problem:
  """The static problem of a config (rule, task, noise, loss, remat), optionally at another K."""
  topo = make_topology(cfg) if topo is None else topo
  return unroll.Problem(
    rule=rule_spec(cfg, topo),
    task=task_spec(cfg, topo, num_snippets),
    init_noise=float(_get(cfg, "net.init_noise")),
    loss=_get(cfg, "train.loss"),
    remat=_get(cfg, "train.remat"),
  )


def rule_spec(cfg, topo: network.Topology) -> rules.RuleSpec:
  r = cfg.rule
  return rules.RuleSpec(
    body_dim=r.body_dim,
    synapse_dim=r.synapse_dim,
    act_dim=r.act_dim,
    emb_dim=r.emb_dim,
    hidden=r.hidden,
    num_types=topo.num_types,
    bilinear=bool(r.bilinear),
    message_norm=r.message_norm,
    # Optional: older configs lack these (`_optional`).
    reference_fan_in=int(_optional(cfg, "rule.reference_fan_in", _get)),
    scale_rate=bool(_optional(cfg, "rule.scale_rate", _get)),
    rate_power=float(_optional(cfg, "rule.rate_power", _get)),
    decay_power=float(_optional(cfg, "rule.decay_power", _get)),
    center_synapses=bool(_optional(cfg, "rule.center_synapses", _get)),
    error_input=bool(_optional(cfg, "rule.error_input", _get)),
    init_decay=r.init_decay,
    init_rate=r.init_rate,
    fast_synapse=bool(r.fast_synapse),
  )


def task_spec(cfg, topo: network.Topology, num_snippets: int | None = None) -> tasks.TaskSpec:
  """The task of `cfg`, optionally with another K (the evaluation sweeps K)."""
  t = cfg.task
  k = t.num_snippets if num_snippets is None else num_snippets
  q = t.num_queries if t.num_queries and num_snippets is None else k
  return tasks.TaskSpec(
    protocol=t.protocol,
    num_neurons=topo.num_neurons,
    n_in=topo.n_in,
    n_out=topo.n_out,
    num_snippets=k,
    present_steps=t.present_steps,
    gap_steps=t.gap_steps,
    cycles=t.cycles,
    delay_steps=t.delay_steps,
    num_queries=q,
    query_steps=t.query_steps,
    cue_corruption=float(t.cue_corruption),
    max_lag=t.max_lag,
    window=t.window,
    latency=network.key_latency(topo),
    score_reachable=_optional_bool(cfg, "task.score_reachable"),
    hold_for_latency=_optional_bool(cfg, "task.hold_for_latency"),
    first_scored_step=first_scored_step(cfg),
  )
