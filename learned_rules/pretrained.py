"""Meta-trained rules as values: load one from a run's checkpoint or by name from those shipped with
the package, and save one to a few-KB file.

  rule = load_rule("hetero")                                      # shipped with the package
  rule = load_rule("general")                                     # shipped: full networks of any size
  rule = load_rule("runs/remember-hetero-full-K8-seed0")          # a run of experiments.remember
  rule.theta, rule.config, rule.topology, rule.spec               # what a network needs to run it

A saved rule is two files beside each other: `<name>.msgpack`, the meta-parameters theta
(`flax.serialization`), and `<name>.json`, the config the rule was meta-trained with, its meta steps,
where it came from and the recall measured when it was saved. `python -m experiments.export_rule`
writes one from a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np
from absl import logging
from flax import serialization

from learned_rules import checkpointing, files, meta_train, network, rules, unroll
from learned_rules import config as config_lib

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
FORMAT_VERSION = 1


class RuleLoadError(ValueError):
  """What was given is not a rule this version can load (another kind of checkpoint, another layout)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Rule:
  """A meta-trained rule and the setting it was meta-trained in.

  Attributes:
    theta: the meta-parameters of `body_update` and `synapse_update` (and the type embeddings,
      initial states, input drive and readout), as `rules.init_theta` lays them out.
    config: the `experiments.remember` config of the run that trained it (network, rule sizes, task).
    meta_steps: meta steps it was trained for, in all: a run started from a saved rule
      (`train.init_rule`) adds its own to that rule's.
    source: where it was loaded from.
    info: what its file records besides (the command that made it, its measured recall), or {}.
  """

  theta: rules.Theta
  config: config_lib.ConfigDict
  meta_steps: int
  source: str
  info: dict = dataclasses.field(default_factory=dict)

  @property
  def topology(self) -> network.Topology:
    """The network it was meta-trained on."""
    return config_lib.make_topology(self.config)

  @property
  def experiment(self) -> config_lib.ExperimentSpec:
    """What it was meta-trained on, frozen (`config.experiment_spec` of its config)."""
    return config_lib.experiment_spec(self.config)

  @property
  def spec(self) -> rules.RuleSpec:
    return config_lib.rule_spec(self.config, self.topology)

  def problem(self, num_snippets: int | None = None) -> unroll.Problem:
    """Its training problem, optionally at another K (for `evaluate.evaluate`)."""
    return config_lib.problem(self.config, self.topology, num_snippets)


def available_rules() -> tuple[str, ...]:
  """Names of the rules shipped with the package (`load_rule(name)`)."""
  if not os.path.isdir(PRETRAINED_DIR):
    return ()
  return tuple(sorted(f[: -len(".json")] for f in os.listdir(PRETRAINED_DIR) if f.endswith(".json")))


def load_rule(name_or_path: str) -> Rule:
  """The rule named `name_or_path`: a shipped rule (`available_rules()`), a run directory written by
  `experiments.remember` (its latest checkpoint), or a saved rule (`<path>.json` or `<path>`).

  Raises:
    FileNotFoundError: nothing by that name or at that path.
    RuleLoadError: a checkpoint or file that does not hold a rule of this version's layout.
  """
  path = os.fspath(name_or_path)
  if files.is_dir(files.join(path, "checkpoints")):
    return _load_run(path)
  if files.is_dir(path):
    raise FileNotFoundError(f"load_rule: {path} holds no checkpoints/; is it a run of experiments.remember?")
  prefix = path[: -len(".json")] if path.endswith(".json") else path
  if files.exists(prefix + ".json"):
    return _load_file(prefix)
  if os.sep not in path and path in available_rules():
    return _load_file(os.path.join(PRETRAINED_DIR, path))
  raise FileNotFoundError(
    f"load_rule: no rule {path!r}: not a run directory, not a saved rule ({prefix}.json), and not a "
    f"shipped rule (one of {', '.join(available_rules()) or 'none'})"
  )


def _validated_config(raw, where: str) -> config_lib.ConfigDict:
  if not isinstance(raw, dict) or not {"net", "rule", "task", "train"} <= set(raw):
    raise RuleLoadError(
      f"{where} is not a learned_rules rule: its config lacks the net/rule/task/train blocks of an "
      "experiments.remember config"
    )
  cfg = config_lib.from_dict(raw)
  try:
    config_lib.validate(cfg)
  except (config_lib.ConfigError, KeyError, AttributeError) as e:
    raise RuleLoadError(f"{where}: its config is not one this version can run: {e}") from e
  return cfg


def _load_run(workdir: str) -> Rule:
  ckpt = checkpointing.Checkpointer(workdir, create=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"load_rule: no checkpoint in {ckpt.directory}")
    try:
      raw = ckpt.saved_config(step)
    except Exception as e:  # noqa: BLE001  (orbax raises many kinds for a foreign checkpoint)
      raise RuleLoadError(f"{ckpt.directory} step {step} holds no readable config: {e}") from e
    cfg = _validated_config(raw, f"the checkpoint in {ckpt.directory}")
  finally:
    ckpt.close()
  try:  # the trainer's own restore: the train-state layout it saved
    _, _, state = meta_train.load_run(workdir)
  except Exception as e:  # noqa: BLE001
    raise RuleLoadError(
      f"the checkpoint in {workdir} does not match the train-state layout of its config under this "
      f"version of learned_rules: {e}"
    ) from e
  source = os.fspath(files.as_path(workdir))
  steps = int(state.step) + init_rule_meta_steps(workdir, cfg)
  return Rule(theta=state.theta, config=cfg, meta_steps=steps, source=source)


def init_rule_meta_steps(workdir: str, cfg) -> int:
  """The meta steps of the rule run `workdir` started from (`train.init_rule`) as its `config.json`
  records them; 0 for a run from its seed, and, with a warning, for a run from before they were
  recorded (its start rule is not loaded again: a shipped rule's name may since mean another rule)."""
  name = config_lib.init_rule(cfg)
  if not name:
    return 0
  path = files.join(workdir, "config.json")
  record = files.read_json(path) if files.exists(path) else {}
  if meta_train.INIT_RULE_META_STEPS not in record:
    logging.warning(
      "%s started from %s, whose meta steps it did not record: its meta steps count only its own",
      workdir,
      name,
    )
    return 0
  return int(record[meta_train.INIT_RULE_META_STEPS])


def _load_file(prefix: str) -> Rule:
  meta = files.read_json(prefix + ".json")
  if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
    raise RuleLoadError(
      f"{prefix}.json is not a saved rule of format {FORMAT_VERSION} (format {meta.get('format')!r})"
      if isinstance(meta, dict)
      else f"{prefix}.json is not a saved rule"
    )
  cfg = _validated_config(meta.get("config"), f"{prefix}.json")
  topo = config_lib.make_topology(cfg)
  like = rules.init_theta(jax.random.PRNGKey(0), config_lib.rule_spec(cfg, topo))
  raw = serialization.msgpack_restore(files.read_bytes(prefix + ".msgpack"))
  theta = _theta_like(like, raw, f"{prefix}.msgpack")
  info = {k: v for k, v in meta.items() if k not in ("format", "config", "meta_steps")}
  return Rule(theta=theta, config=cfg, meta_steps=int(meta["meta_steps"]), source=prefix, info=info)


def _theta_like(like: rules.Theta, raw, where: str) -> rules.Theta:
  """`raw` (nested dicts of arrays) checked against the layout and shapes of `like`."""
  expected = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(like)}
  try:
    got = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(raw)}
  except Exception as e:  # noqa: BLE001
    raise RuleLoadError(f"{where} does not hold meta-parameters: {e}") from e
  if got != expected:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    shapes = [
      f"{k}: {got[k]} (expected {expected[k]})" for k in expected if k in got and got[k] != expected[k]
    ]
    raise RuleLoadError(
      f"{where} does not match its config's rule layout: missing {missing}, unexpected {extra}, "
      f"shapes {shapes}"
    )
  return serialization.from_state_dict(like, raw)


def theta_digest(theta: rules.Theta) -> str:
  """A short digest of meta-parameters: what identifies a rule's records (the capacity study's)."""
  return hashlib.sha256(serialization.to_bytes(jax.device_get(theta))).hexdigest()[:16]


class RuleSaveError(ValueError):
  """A rule this format cannot hold (one whose theta depends on its network, not only on its sizes)."""


def save_rule(rule: Rule, prefix: str, **info) -> tuple[str, str]:
  """Writes `rule` to `<prefix>.json` and `<prefix>.msgpack` (each whole or not at all: local or remote,
  `files.replace_bytes`);
  `info` (JSON-ready) is recorded beside the config. Returns the two paths.

  Raises `RuleSaveError` for a run of `net.trained_synapses` (theta holds one weight per synapse of its
  network, which a saved rule's layout has no place for); load such a run from its directory instead.
  """
  if network.SYNAPSE_WEIGHTS in rule.theta:
    raise RuleSaveError(
      f"save_rule: {rule.source} is a net.trained_synapses run (a trained network, no learned rule: theta "
      f"holds its per-synapse weights, {network.SYNAPSE_WEIGHTS!r}), which a saved rule cannot hold; "
      "load_rule(<its run directory>) reads it as it is"
    )
  meta = {
    "format": FORMAT_VERSION,
    "meta_steps": int(rule.meta_steps),
    **{**rule.info, **info},
    "config": checkpointing.config_to_dict(rule.config),
  }
  blobs = {
    prefix + ".msgpack": serialization.to_bytes(jax.device_get(rule.theta)),
    prefix + ".json": (json.dumps(meta, indent=2) + "\n").encode(),
  }
  for path, blob in blobs.items():
    files.replace_bytes(path, blob)
  return prefix + ".json", prefix + ".msgpack"
