"""The main experiment: a learned rule meta-trained to remember, beside its controls, on the same episodes.

`run_experiment(cfg, workdir)` is what `python -m experiments.remember` runs: it meta-trains the rule of
`cfg` in `workdir` (`meta_train.train_and_evaluate`), and, unless `baseline_synapses_off` is False, the
same network with synapse updates off in `<workdir>/synapses_off`; then it scores the key-blind floor
(the best answer that ignores the cue) on the same held-out episodes, and writes `summary.json` and
`training_curve.png` (loss and recall against meta step, `draw_training_curve`). A
meta-batch of several problems (`train.mixture`) reports each problem's recall and floor as well.
"""

from __future__ import annotations

import time

import jax

from learned_rules import baselines, curve_png, evaluation, files, meta_train
from learned_rules import config as config_lib
from learned_rules import metrics as metrics_lib

CHANCE = 0.5  # targets are uniform +-1 bits, so any fixed guess is right half the time


def synapses_off_config(cfg):
  """`cfg` with synapse updates off: the run that tells whether the rule stores in its synapses."""
  return config_lib.with_overrides(cfg, {"net.synapse_updates": False})


def run_name(cfg) -> str:
  """What the run of `cfg` trains: a learned rule, or (`net.trained_synapses`) fixed trained weights."""
  return "trained synapses, updates off" if config_lib.trained_synapses(cfg) else "learned rule"


def task_label(spec: config_lib.ExperimentSpec) -> str:
  """What the recall table measures: the protocol, its size and, when a query's first steps are not
  scored (latency or `task.first_scored_step`), from which step on it is."""
  t = spec.task
  if t.protocol == "streaming":
    # evaluation.eval_batch: fresh streams, their first windows (the start-up included); the
    # streams command measures never-reset streams over 100-200 windows.
    label = (
      f"streaming, recall of the snippet 1..{t.max_lag} slots back, "
      f"first {evaluation.STREAM_EVAL_WINDOWS} windows of fresh streams"
    )
  else:
    label = f"{t.protocol}, K = {t.num_snippets} snippets per episode"
  if t.first_scored_query_step > 0:
    label += f"; query steps {t.first_scored_query_step}..{t.query_steps - 1} of each query scored"
  return label


def format_table(rows: list[tuple[str, float]], label: str) -> str:
  lines = [f"Held-out recall ({label})", f"{'rule':<44}{'bit accuracy':>14}"]
  lines += [f"{name:<44}{value:>14.3f}" for name, value in rows]
  return "\n".join(lines)


def key_blind_floor(cfg) -> float:
  """Bit accuracy of the key-blind floor on exactly the held-out episodes (or streams) that the
  trainer evaluates the network of `cfg` on (`evaluation.eval_key(seed)`, as many episodes)."""
  spec = config_lib.train_spec(cfg)
  task = config_lib.problem(cfg).task
  return baselines.key_blind_metrics(task, evaluation.eval_key(spec.seed), spec.eval_episodes)["bit_accuracy"]


def _member_rows(cfg, learned: dict, summary: dict) -> list[tuple[str, float]]:
  """Rows (and summary entries) of each problem of a meta-batch: its recall and its key-blind floor."""
  rows, summary["members"] = [], []
  for i, (member, result) in enumerate(zip(config_lib.mixture(cfg), learned["members"], strict=True)):
    floor = key_blind_floor(member)
    n, k = config_lib.make_topology(member).num_neurons, config_lib.problem(member).task.num_snippets
    label = f"problem {i}: N = {n}, K = {k}"
    rows += [(f"{label}, rule", result["bit_accuracy"]), (f"{label}, key-blind floor", floor)]
    summary["members"].append(
      {
        "num_neurons": n,
        "num_snippets": k,
        "bit_accuracy": result["bit_accuracy"],
        "key_blind_bit_accuracy": floor,
      }
    )
  return rows


CURVE = "training_curve.png"


def draw_training_curve(workdir: str, path: str, floor: float | None = None) -> bool:
  """Draws the meta-training loss and recall (bit accuracy on the training episodes, against meta
  step) of the run in `workdir` and of its synapses-off twin if it has one, beside chance and, if
  given, the key-blind floor, to the PNG `path` (`curve_png`: no matplotlib). False (nothing drawn)
  if neither run logged a metrics.jsonl."""
  loss, recall = {}, {}
  for name, run_dir in (("learned rule", workdir), ("synapses off", files.join(workdir, "synapses_off"))):
    log = files.join(run_dir, "metrics.jsonl")
    records = [r for r in metrics_lib.read_metrics(log) if "loss" in r] if files.exists(log) else []
    if records:
      loss[name] = [(r["step"], r["loss"]) for r in records]
      recall[name] = [(r["step"], r["bit_accuracy"]) for r in records]
  if not loss:
    return False
  references = {"chance": CHANCE} if floor is None else {"chance": CHANCE, "key-blind floor": floor}
  panels = [
    curve_png.Panel("meta-training loss", loss),
    curve_png.Panel("recall (training episodes)", recall, references=references),
  ]
  curve_png.write_curves(path, panels)
  return True


def run_experiment(cfg, workdir: str) -> tuple[dict, str]:
  """Both runs and the summary: returns the summary dict (also written to `<workdir>/summary.json` by
  process 0) and the table of held-out recall. Raises what `meta_train.train_and_evaluate` raises."""
  start = time.perf_counter()
  config_lib.validate(cfg)  # fail before any compilation, and before anything is written
  name, spec = run_name(cfg), config_lib.experiment_spec(cfg)
  label = task_label(spec)
  learned = meta_train.train_and_evaluate(cfg, workdir, label=f"{name}: ")
  summary = {
    "bit_accuracy": learned["bit_accuracy"],
    "perfect_recall": learned["perfect_recall"],
    "chance_bit_accuracy": CHANCE,
    "num_snippets": spec.task.num_snippets,
    "protocol": spec.task.protocol,
    "topology": spec.topology,
    "meta_steps": learned["meta_steps"],
    "task": label,  # what the recall figures measure, as the table's header says it
    "scored_query_steps": [spec.task.first_scored_query_step, spec.task.query_steps - 1],
  }
  rows = [(name + (", mean over problems" if "members" in learned else ""), learned["bit_accuracy"])]
  if "members" in learned:
    rows += _member_rows(cfg, learned, summary)
  if spec.baseline_synapses_off and spec.synapse_updates:
    off_dir = files.join(workdir, "synapses_off")
    off = meta_train.train_and_evaluate(synapses_off_config(cfg), off_dir, label="synapses off: ")
    summary["bit_accuracy_synapses_off"] = off["bit_accuracy"]
    rows.append(("same network, synapse updates off", off["bit_accuracy"]))
  floor = key_blind_floor(cfg)
  summary["key_blind_bit_accuracy"] = floor  # the best answer that ignores the cue, same held-out episodes
  rows += [("key-blind floor (ignores the cue)", floor), ("chance", CHANCE)]
  summary["wall_seconds"] = time.perf_counter() - start
  if jax.process_index() == 0:
    files.write_json(files.join(workdir, "summary.json"), summary)
    draw_training_curve(workdir, files.join(workdir, CURVE), floor)
  return summary, format_table(rows, label)
