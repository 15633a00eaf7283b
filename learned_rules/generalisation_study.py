r"""How far a rule generalises: one meta-trained rule evaluated, without retraining, off its setting
(`python -m experiments.generalisation`).

`evaluate_settings` evaluates the rule on held-out episodes in its own setting and in each of `SETTINGS`
(config overrides of the setting it was meta-trained in): 4x the neurons, 2x the snippets, 4x longer
episodes, other topologies, and the other protocol; recall bit accuracy and perfect recall, also
relative to the in-distribution value.

Every setting also gets the key-blind floor on the very same episodes: the bit accuracy of the best
answer that ignores the cue (`baselines.key_blind`, the per-bit majority of the values stored so far,
0.75 at K = 2 and 0.64 at K = 8). A rule that does not beat it by more than `FLOOR_MARGIN` there does not
measurably use the key. On a `streaming` setting (a streaming rule's own), the floor runs on the same
fresh streams as the network (`STREAM_EVAL_WINDOWS` windows each) and answers every step with the
per-bit majority of the values of the snippets it can be asked for: those of the last `Dmax` slots
that the stream saw whole (`baselines.stream_key_blind`).
"""

from __future__ import annotations

import time

from learned_rules import baselines, evaluation, pretrained
from learned_rules import config as config_lib


def _four_times_neurons(spec: config_lib.ExperimentSpec):
  n = spec.num_inputs + spec.num_outputs + spec.num_hidden
  return {"net.num_hidden": 4 * n - spec.num_inputs - spec.num_outputs}


def _other_protocol(spec: config_lib.ExperimentSpec):
  if spec.task.protocol == "hetero":
    return {"task.protocol": "auto", "task.cue_corruption": 0.25}
  return {"task.protocol": "hetero", "task.cue_corruption": 0.0}


# name -> config overrides, as a function of the rule's own experiment (`config.ExperimentSpec`).
SETTINGS = {
  "in distribution": lambda spec: {},
  "4x neurons (more hidden)": _four_times_neurons,
  "2x snippets": lambda spec: {"task.num_snippets": 2 * spec.task.num_snippets},
  "4x longer episodes": lambda spec: {
    "task.present_steps": 4 * spec.task.present_steps,
    "task.delay_steps": 4 * spec.task.delay_steps,
    "task.query_steps": 4 * spec.task.query_steps,
  },
  "sparse topology (density 0.5)": lambda spec: {"net.topology": "sparse", "net.density": 0.5},
  "layered topology (1 hidden layer)": lambda spec: {
    "net.topology": "layered",
    "net.hidden_layers": (spec.num_hidden,),
  },
  "other protocol": _other_protocol,
}


# A rule "beats the key-blind floor" where its bit accuracy is above the floor's on the same episodes by
# more than this.
FLOOR_MARGIN = 0.01


def evaluate_setting(rule: pretrained.Rule, setting: str, overrides: dict, num_episodes: int) -> dict:
  """The record of `rule` on `num_episodes` held-out episodes of its config moved by `overrides`."""
  start = time.perf_counter()
  cfg = config_lib.with_overrides(rule.config, overrides)
  topo = config_lib.make_topology(cfg)
  problem = config_lib.problem(cfg, topo)
  key = evaluation.eval_key(config_lib.train_spec(cfg).seed)
  metrics = evaluation.evaluate(rule.theta, topo, problem, key, num_episodes)
  floor = baselines.key_blind_metrics(problem.task, key, num_episodes)["bit_accuracy"]
  return {
    "setting": setting,
    "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
    "N": topo.num_neurons,
    "synapses": topo.num_synapses,
    "K": problem.task.num_snippets,
    "episode_steps": problem.task.episode_steps,
    **metrics,
    "key_blind_bit_accuracy": floor,
    "beats_key_blind": bool(metrics["bit_accuracy"] > floor + FLOOR_MARGIN),
    "seconds": time.perf_counter() - start,
  }


def evaluate_settings(rule: pretrained.Rule, num_episodes: int, settings: dict | None = None) -> list[dict]:
  """One record per setting of `settings` (default `SETTINGS`; the first is the reference), in order,
  each with its bit accuracy relative to the first's."""
  settings = SETTINGS if settings is None else settings
  spec = rule.experiment
  records = [evaluate_setting(rule, name, fn(spec), num_episodes) for name, fn in settings.items()]
  for r in records:
    r["relative_bit_accuracy"] = r["bit_accuracy"] / records[0]["bit_accuracy"]
  return records


def format_table(name: str, rule: pretrained.Rule, records: list[dict], num_episodes: int) -> str:
  """The records of rule `name` as a table, with a legend of the key-blind columns."""
  lines = [
    f"{name}: {rule.meta_steps} meta steps, {rule.experiment.task.protocol} on {rule.experiment.topology}; "
    f"{num_episodes} held-out episodes per setting",
    f"{'setting':<36}{'N':>6}{'K':>4}{'T':>5}{'bit acc.':>10}{'vs in-dist.':>13}{'perfect':>9}"
    f"{'key-blind':>11}{'beats it':>10}",
  ]
  for r in records:
    lines.append(
      f"{r['setting']:<36}{r['N']:>6}{r['K']:>4}{r['episode_steps']:>5}{r['bit_accuracy']:>10.3f}"
      f"{r['relative_bit_accuracy']:>13.3f}{r['perfect_recall']:>9.3f}"
      f"{r['key_blind_bit_accuracy']:>11.3f}{'yes' if r['beats_key_blind'] else 'NO':>10}"
    )
  lines.append(
    "key-blind: bit accuracy of the best answer that ignores the cue (the per-bit majority of the stored "
    "values), on the same episodes;\nbeats it: the rule's bit accuracy is above it by more than "
    f"{FLOOR_MARGIN} (NO: the rule does not measurably use the key there)"
  )
  return "\n".join(lines)
