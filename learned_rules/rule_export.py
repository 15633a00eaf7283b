"""A meta-trained rule saved as a few-KB file that `load_rule` reads, with the held-out recall it was
measured to have (`python -m experiments.export_rule`)."""

from __future__ import annotations

from typing import NamedTuple

from learned_rules import evaluation, pretrained, recall_study


class Export(NamedTuple):
  """What `export_rule` measured and wrote: recall records per K (a streaming rule: one record, its
  recall on fresh streams), `{str(level): K}` (None for a streaming rule), the two paths."""

  records: list[dict]
  capacity: dict[str, int] | None
  paths: tuple[str, str]


def export_rule(
  rule: pretrained.Rule, prefix: str, *, trained_by: str, exported_by: str, by_size: list[dict] | None = None
) -> Export:
  """Measures `rule`'s held-out recall against K (its config's `eval.k_values`, `eval.num_episodes`;
  a streaming rule: its recall on `eval.num_episodes` fresh streams, as the trainer measures it, which
  `streams_record` describes) and saves it to `<prefix>.json` and `<prefix>.msgpack`
  (`pretrained.save_rule`) with that recall and the commands that made it, and `by_size` (the size
  study's records of this rule, `size_records`) if given. Raises `pretrained.RuleSaveError` for a
  `net.trained_synapses` run (fixed trained weights, no learned rule), before anything is evaluated."""
  if rule.topology.trained_synapses:
    raise pretrained.RuleSaveError(
      f"{rule.source} is a net.trained_synapses run: a trained network with fixed per-synapse weights, "
      "no learned rule to export; load_rule(<its run directory>) reads it as it is"
    )
  train = rule.experiment.train
  key = evaluation.eval_key(train.seed)
  if rule.experiment.task.protocol == "streaming":
    record = streams_record(
      rule, evaluation.evaluate(rule.theta, rule.topology, rule.problem(), key, train.eval_episodes)
    )
    info = {"trained_by": trained_by, "exported_by": exported_by, "recall_on_streams": record}
    return Export([record], None, pretrained.save_rule(rule, prefix, **info))
  records = evaluation.recall_vs_k(
    rule.theta, rule.topology, rule.problem(), list(train.k_values), train.eval_episodes, key
  )
  records = [{k: v for k, v in r.items() if k != evaluation.BY_POSITION} for r in records]  # kept short
  caps = recall_study.capacities(records)
  paths = pretrained.save_rule(
    rule,
    prefix,
    trained_by=trained_by,
    exported_by=exported_by,
    held_out_episodes=train.eval_episodes,
    recall_vs_k=records,
    capacity=caps,
    **({"recall_by_size": by_size} if by_size else {}),
  )
  return Export(records, caps, paths)


def streams_record(rule: pretrained.Rule, metrics: dict) -> dict:
  """The record of a streaming rule's held-out `metrics` (`evaluation.evaluate`): what they were
  measured on, then the metrics."""
  task = rule.experiment.task
  return {
    "measured_on": f"the first {evaluation.STREAM_EVAL_WINDOWS} windows of fresh streams, as the trainer "
    "evaluates (experiments.streams measures never-reset streams)",
    "streams": rule.experiment.train.eval_episodes,
    "window": task.window,
    "max_lag": task.max_lag,
    "num_neurons": rule.topology.num_neurons,
    **metrics,
  }


# What a size-study record keeps in a rule's file.
SIZE_FIELDS = (
  "N",
  "K",
  "bit_accuracy",
  "bit_accuracy_low",
  "bit_accuracy_high",
  "perfect_recall",
  "episodes",
  "scored_bits",
)


def size_records(study: dict, rule: str, theta_digest: str) -> list[dict]:
  """The records of saved rule `rule` in a finished capacity study's `capacity.json` contents `study`
  (its size study), checked to be of the theta whose digest is `theta_digest`.

  Raises ValueError if the study holds no size records of `rule`, or holds them for another theta.
  """
  rows = [r for r in study.get("records", []) if r.get("study") == "size" and r.get("rule") == rule]
  if not rows:
    raise ValueError(f"the capacity study holds no size-study records of rule {rule!r}")
  digests = {r.get("theta_digest") for r in rows}
  if digests != {theta_digest}:
    raise ValueError(
      f"the capacity study's records of {rule!r} are of another theta ({sorted(map(str, digests))}, this "
      f"rule {theta_digest}): rerun the size study on this rule"
    )
  return [{k: r[k] for k in SIZE_FIELDS if k in r} for r in rows]
