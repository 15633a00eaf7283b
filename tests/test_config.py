"""Tests of `learned_rules.config`: validation of experiment configs and the specs derived from them.

Nothing here compiles: validation must run, and fail, before JAX is asked for anything.
"""

from __future__ import annotations

import hypothesis
import ml_collections
import pytest
from hypothesis import strategies as st

from learned_rules import checkpointing, evaluation, experiment, network, unroll
from learned_rules import config as config_lib
from learned_rules.configs import remember

VARIANTS = [
  "",
  "tiny",
  "auto",
  "streaming",
  "layered",
  "layered_feedback",
  "sparse",
  "tiny,auto",
  "tiny,streaming",
  "tiny,layered",
  "tiny,layered_feedback",
  "tiny,sparse",
  "tiny,auto,layered_feedback",
  "streaming,sparse",
  "routing",
  "tiny,routing",
  "tiny,sparse,routing",
]

# (variant, dotted field, invalid value, field the error must name).
INVALID = [
  ("", "seed", -1, "seed"),
  ("", "net.topology", "ring", "net.topology"),
  ("", "rule.message_norm", "max", "rule.message_norm"),
  ("", "eval.k_values", (), "eval.k_values"),
  ("", "eval.k_values", (4, 0), "eval.k_values"),
  ("", "net.num_inputs", 0, "net.num_inputs"),
  ("", "net.num_outputs", -3, "net.num_outputs"),
  ("", "net.num_hidden", -1, "net.num_hidden"),
  ("sparse", "net.num_hidden", -1, "net.num_hidden"),
  ("", "net.init_noise", -0.1, "net.init_noise"),
  ("", "net.random_input_synapses", -1.0, "net.random_input_synapses"),
  ("sparse", "net.density", 0.0, "net.density"),
  ("sparse", "net.density", 1.5, "net.density"),
  ("sparse", "net.mask_seed", -1, "net.mask_seed"),
  ("layered", "net.hidden_layers", (0,), "net.hidden_layers"),
  ("layered", "net.hidden_layers", (4, -2), "net.hidden_layers"),
  ("layered_feedback", "net.hidden_layers", (4, 0), "net.hidden_layers"),
  ("", "rule.body_dim", 0, "rule.body_dim"),
  ("", "rule.synapse_dim", 0, "rule.synapse_dim"),
  ("", "rule.act_dim", 0, "rule.act_dim"),
  ("", "rule.act_dim", 9, "rule.act_dim"),  # larger than body_dim = 8
  ("", "rule.emb_dim", -1, "rule.emb_dim"),
  ("", "rule.hidden", 0, "rule.hidden"),
  ("", "rule.init_decay", 1.0, "rule.init_decay"),
  ("", "rule.init_decay", 0.0, "rule.init_decay"),
  ("", "rule.init_rate", 0.0, "rule.init_rate"),
  ("", "rule.init_rate", 1.2, "rule.init_rate"),
  ("", "task.protocol", "episodic", "task.protocol"),
  ("", "task.num_snippets", 0, "task.num_snippets"),
  ("", "task.present_steps", 0, "task.present_steps"),
  ("", "task.gap_steps", -1, "task.gap_steps"),
  ("", "task.cycles", 0, "task.cycles"),
  ("", "task.delay_steps", -2, "task.delay_steps"),
  ("", "task.query_steps", 0, "task.query_steps"),
  ("", "task.num_queries", -1, "task.num_queries"),
  ("", "task.num_queries", 9, "task.num_queries"),  # more queries than the 8 snippets
  ("tiny,auto", "task.num_queries", 3, "task.num_queries"),
  ("", "task.cue_corruption", 1.0, "task.cue_corruption"),
  ("", "task.cue_corruption", 1.5, "task.cue_corruption"),
  ("", "task.cue_corruption", -0.1, "task.cue_corruption"),
  ("auto", "net.num_outputs", 8, "net.num_outputs"),
  ("auto", "net.num_inputs", 8, "net.num_outputs"),  # the auto check names num_outputs
  ("streaming", "task.max_lag", 0, "task.max_lag"),
  ("streaming", "task.window", 0, "task.window"),
  ("", "train.batch_size", 0, "train.batch_size"),
  ("", "train.num_steps", -1, "train.num_steps"),
  ("", "train.learning_rate", -1e-3, "train.learning_rate"),
  ("", "train.learning_rate", 0.0, "train.learning_rate"),
  ("", "train.learning_rate", float("inf"), "train.learning_rate"),
  ("", "train.clip_norm", 0.0, "train.clip_norm"),
  ("", "train.loss", "hinge", "train.loss"),
  ("", "train.remat", "always", "train.remat"),
  ("", "train.log_every", 0, "train.log_every"),
  ("", "train.checkpoint_every", 0, "train.checkpoint_every"),
  ("", "train.max_to_keep", 0, "train.max_to_keep"),
  ("", "eval.num_episodes", 0, "eval.num_episodes"),
  ("", "net.trained_synapses", True, "net.trained_synapses"),  # synapse updates are on
  ("routing", "net.synapse_updates", True, "net.trained_synapses"),
]

# Values of the wrong type, which a ConfigDict would refuse to hold: validated as plain dicts (the
# form a config takes when it is read back from a checkpoint's JSON).
INVALID_TYPES = [
  ("layered", "net.hidden_layers", 4, "net.hidden_layers"),
  ("layered", "net.hidden_layers", "44", "net.hidden_layers"),
  ("", "net.num_hidden", 2.5, "net.num_hidden"),
  ("", "net.num_inputs", True, "net.num_inputs"),
  ("", "task.num_snippets", "8", "task.num_snippets"),
  ("", "task.cue_corruption", "0.1", "task.cue_corruption"),
  ("", "train.learning_rate", None, "train.learning_rate"),
  ("", "train.learning_rate", False, "train.learning_rate"),
  ("", "train.remat", True, "train.remat"),  # the boolean of configs written before the policies
  ("routing", "net.trained_synapses", 1, "net.trained_synapses"),
]

# Boundary values that are valid.
VALID_EDGES = [
  ("", "task.cue_corruption", 0.0),
  ("", "task.cue_corruption", 0.99),
  ("", "task.num_queries", 8),  # == num_snippets
  ("", "net.num_hidden", 0),
  ("layered", "net.hidden_layers", ()),  # no hidden layer: inputs straight to outputs
  ("layered", "net.hidden_layers", (4, 3)),  # L = 2 < R = 3 query steps of the variant
  ("layered", "net.hidden_layers", [4, 3]),  # a list, as read back from JSON
  ("sparse", "net.density", 1.0),
  ("", "train.num_steps", 0),
  ("", "task.gap_steps", 0),
  ("", "task.delay_steps", 0),
  ("", "net.init_noise", 0.0),
  ("", "net.random_input_synapses", 16.0),
  ("streaming", "task.num_queries", 100),  # queries are per slot in the stream
  ("", "rule.act_dim", 8),  # == body_dim
  *(("", "train.remat", policy) for policy in unroll.REMAT_POLICIES),
]

# Minimum of every integer field, as documented by the config file and docs/DESIGN.md, and a variant in
# which the field is read.
INT_MINIMUMS = {
  "seed": ("", 0),
  "net.num_inputs": ("", 1),
  "net.num_outputs": ("", 1),
  "net.num_hidden": ("", 0),
  "net.mask_seed": ("sparse", 0),
  "rule.body_dim": ("", 1),
  "rule.synapse_dim": ("", 1),
  "rule.act_dim": ("", 1),
  "rule.emb_dim": ("", 1),
  "rule.hidden": ("", 1),
  "task.num_snippets": ("", 1),
  "task.present_steps": ("", 1),
  "task.gap_steps": ("", 0),
  "task.cycles": ("", 1),
  "task.delay_steps": ("", 0),
  "task.query_steps": ("", 1),
  "task.num_queries": ("", 0),
  "task.max_lag": ("streaming", 1),
  "task.window": ("streaming", 1),
  "train.batch_size": ("", 1),
  "train.num_steps": ("", 0),
  "train.log_every": ("", 1),
  "train.checkpoint_every": ("", 1),
  "train.max_to_keep": ("", 1),
  "eval.num_episodes": ("", 1),
}


def _set(cfg, dotted: str, value):
  *parents, name = dotted.split(".")
  node = cfg
  for part in parents:
    node = node[part]
  node[name] = value
  return cfg


def _assert_names(field: str, cfg) -> None:
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(cfg)
  assert info.value.field == field
  message = str(info.value)
  assert message.startswith(f"{field}: ") and "\n" not in message
  assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_valid(make_cfg, variant):
  cfg = make_cfg(variant)
  assert config_lib.validate(cfg) is None
  # ... also as read back from a checkpoint (tuples become lists), as experiments.evaluate does.
  config_lib.validate(ml_collections.ConfigDict(checkpointing.config_to_dict(cfg)))


@pytest.mark.parametrize(
  "variant,field,value,named",
  INVALID,
  ids=[f"{f}={v!r}" + (f"[{var}]" if var else "") for var, f, v, _ in INVALID],
)
def test_invalid_value_raises_naming_the_field(make_cfg, variant, field, value, named):
  cfg = make_cfg(variant)
  config_lib.validate(cfg)  # valid before the change
  _assert_names(named, _set(cfg, field, value))


@pytest.mark.parametrize(
  "variant,field,value,named", INVALID_TYPES, ids=[f"{f}={v!r}" for _, f, v, _ in INVALID_TYPES]
)
def test_invalid_type_raises_naming_the_field(make_cfg, variant, field, value, named):
  cfg = make_cfg(variant).to_dict()
  config_lib.validate(cfg)
  _assert_names(named, _set(cfg, field, value))


@pytest.mark.parametrize("field", ["train.loss", "net.density", "task.window", "seed"])
def test_missing_field_is_named(make_cfg, field):
  cfg = make_cfg("streaming,sparse").to_dict()
  *parents, name = field.split(".")
  node = cfg
  for part in parents:
    node = node[part]
  del node[name]
  _assert_names(field, cfg)


@pytest.mark.parametrize("variant,field,value", VALID_EDGES, ids=[f"{f}={v!r}" for _, f, v in VALID_EDGES])
def test_valid_edge_values(make_cfg, variant, field, value):
  cfg = make_cfg(variant).to_dict()
  assert config_lib.validate(_set(cfg, field, value)) is None


@pytest.mark.parametrize(
  "field", ["task.cue_corruption", "train.learning_rate", "net.init_noise", "rule.init_decay"]
)
def test_nan_is_rejected(make_cfg, field):
  _assert_names(field, _set(make_cfg(""), field, float("nan")))


@hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
@hypothesis.given(
  field=st.sampled_from(sorted(INT_MINIMUMS)), below=st.integers(min_value=1, max_value=10**6)
)
def test_any_integer_field_below_its_minimum_is_named(field, below):
  variant, minimum = INT_MINIMUMS[field]
  cfg = remember.get_config(variant)
  config_lib.validate(cfg)
  _assert_names(field, _set(cfg, field, minimum - below))


def test_specs_from_tiny_config(make_cfg):
  cfg = make_cfg("tiny")
  topo = config_lib.make_topology(cfg.net)
  rule = config_lib.rule_spec(cfg, topo)
  assert (rule.body_dim, rule.synapse_dim, rule.act_dim, rule.emb_dim, rule.hidden) == (
    cfg.rule.body_dim,
    cfg.rule.synapse_dim,
    cfg.rule.act_dim,
    cfg.rule.emb_dim,
    cfg.rule.hidden,
  )
  assert rule.num_types == topo.num_types and rule.bilinear is True
  task = config_lib.task_spec(cfg, topo)
  assert (task.num_neurons, task.n_in, task.n_out) == (topo.num_neurons, topo.n_in, topo.n_out)
  assert task.num_snippets == cfg.task.num_snippets
  assert task.num_queries == cfg.task.num_snippets  # num_queries = 0 asks for every snippet
  cfg.task.num_snippets, cfg.task.num_queries = 4, 3
  assert config_lib.task_spec(cfg, topo).num_queries == 3
  # The evaluation sweep over K asks for all K snippets.
  sweep = config_lib.task_spec(cfg, topo, num_snippets=6)
  assert (sweep.num_snippets, sweep.num_queries) == (6, 6)
  hash(rule), hash(task)  # static arguments of jitted functions must be hashable


def test_remat_default_is_the_library_default(make_cfg):
  assert make_cfg("").train.remat == make_cfg("tiny").train.remat == unroll.DEFAULT_REMAT == "step"


@pytest.mark.parametrize("variant", ["", "layered", "layered_feedback", "sparse"])
def test_key_latency_from_the_config_is_the_topologys(make_cfg, variant):
  cfg = make_cfg(variant)
  assert config_lib.key_latency(cfg) == network.key_latency(config_lib.make_topology(cfg.net))
  assert config_lib.task_spec(cfg, config_lib.make_topology(cfg.net)).latency == config_lib.key_latency(cfg)


def test_a_task_whose_scored_steps_cannot_see_the_key_is_refused(make_cfg, tmp_path, capsys):
  """Two hidden layers: a key reaches the outputs 2 steps after it is shown, so R = 2 query steps
  never see it; the command refuses in one line naming the fields, and R = 3 is accepted."""
  from experiments import remember as remember_cmd

  cfg = make_cfg("layered")
  cfg.net.hidden_layers = (4, 4)
  cfg.task.query_steps = 2
  _assert_names("task.query_steps", cfg)
  with pytest.raises(config_lib.ConfigError, match=r"net\.topology=layered with net\.hidden_layers=\(4, 4\)"):
    config_lib.validate(cfg)
  with pytest.raises(SystemExit) as exit_info:
    remember_cmd.run_or_exit(cfg, str(tmp_path / "run"))
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and err.startswith("error: task.query_steps: ") and err.count("\n") == 1
  assert not (tmp_path / "run").exists()
  cfg.task.query_steps = 3
  assert config_lib.validate(cfg) is None
  # Scoring every query step does not help a step that cannot see the key: still refused.
  cfg.task.query_steps, cfg.task.score_reachable = 2, False
  _assert_names("task.query_steps", cfg)


def test_first_scored_step_reaches_the_task_and_its_scored_bits(make_cfg):
  """`task.first_scored_step` 1 of R = 2 on `full` (L = 0) scores one step of each query, not two, and
  the remember command's table says so; a config without the field (a saved rule's from before it)
  reads 0; R <= it is refused."""
  cfg = make_cfg("tiny")
  topo = config_lib.make_topology(cfg.net)
  both = config_lib.task_spec(cfg, topo)
  assert "scored" not in experiment.task_label(config_lib.experiment_spec(cfg))
  cfg.task.first_scored_step = 1
  later = config_lib.task_spec(cfg, topo)
  assert (both.first_scored_query_step, later.first_scored_query_step) == (0, 1)
  assert 2 * evaluation.scored_bits(later, 4) == evaluation.scored_bits(both, 4) > 0
  assert "query steps 1..1 of each query scored" in experiment.task_label(config_lib.experiment_spec(cfg))
  del cfg.task["first_scored_step"]
  assert config_lib.task_spec(cfg, topo) == both
  cfg.task.first_scored_step = cfg.task.query_steps
  _assert_names("task.first_scored_step", cfg)


def test_error_init_needs_a_saved_rule_given_the_error(make_cfg):
  """`train.error_init` draws the error's weights of a saved rule without them: set without
  `rule.error_input` or without `train.init_rule`, it is refused, naming the field."""
  cfg = make_cfg("tiny")
  cfg.train.error_init = 1.0
  cfg.train.init_rule = "hetero"
  with pytest.raises(config_lib.ConfigError, match=r"train\.error_init: .*rule\.error_input=True"):
    config_lib.validate(cfg)
  cfg.rule.error_input, cfg.train.init_rule = True, ""
  with pytest.raises(config_lib.ConfigError, match=r"train\.error_init: .*train\.init_rule"):
    config_lib.validate(cfg)
  cfg.train.init_rule = "hetero"
  config_lib.validate(cfg)
