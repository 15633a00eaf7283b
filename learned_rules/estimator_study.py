"""The estimator study: every meta-gradient estimator trains the same network on the one training loop.

Each estimator of a study config (`learned_rules/configs/estimators.py`) becomes a run config: the
study's `base` (a `streaming` experiment) with that estimator as `train.estimator`, its learning rate,
batch and steps, and the study's `horizon`. Each (estimator, seed) trains with
`meta_train.train_and_evaluate` in a workdir of its own, so the study has the trainer's checkpoints,
resume, non-finite guard and preemption; rerunning a stopped study resumes every unfinished run.
Held-out recall is the loop's `Curve`: the same `eval_streams` fresh streams of `horizon` steps for
every estimator and seed, at evenly spaced meta steps, with training wall and CPU seconds that leave
out compilation, evaluation and checkpoints.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from learned_rules import config as config_lib
from learned_rules import evaluation as evaluate_lib
from learned_rules import figures, files, gradient_estimators, meta_train
from learned_rules import metrics as metrics_lib

REFERENCE = "full"  # the estimator whose final recall the others are timed to


def run_configs(study) -> dict:
  """`{name: run config}` of the study's estimators (validated, `config.ConfigError` naming the field,
  before anything runs); each run config lacks only its seed."""
  names = [n.strip() for n in study.estimators.split(",") if n.strip()]
  if not names:
    raise config_lib.ConfigError("estimators", "needs at least one estimator")
  if study.horizon < 1 or study.eval_streams < 1 or study.eval_points < 1 or not study.seeds:
    raise config_lib.ConfigError("horizon", "horizon, eval_streams, eval_points >= 1 and a seed")
  if study.base.task.protocol != "streaming":
    raise config_lib.ConfigError("base.task.protocol", "the estimators compare on `streaming`")
  out = {}
  for name in names:
    if name not in study.estimator:
      raise config_lib.ConfigError(
        "estimators", f"unknown estimator {name!r}; one of {list(study.estimator)}"
      )
    e = study.estimator[name]
    overrides = {
      "train.estimator": {
        "kind": e.kind,
        "window": e.window,
        "horizon": study.horizon,
        "population": e.population,
        "std": e.std,
      },
      "train.learning_rate": e.learning_rate,
      "train.clip_norm": study.clip_norm,
      "train.batch_size": e.batch,
      "train.num_steps": e.num_steps,
      "train.log_every": max(1, e.num_steps // 10),
      "train.checkpoint_every": max(1, e.num_steps // 4),
    }
    if e.num_steps < 1:
      raise config_lib.ConfigError(f"estimator.{name}.num_steps", f"must be >= 1, got {e.num_steps}")
    cfg = config_lib.with_overrides(study.base, overrides)
    try:
      meta_train.setup_meta_batch(cfg)  # validates the config and builds the estimator
    except config_lib.ConfigError as err:
      field = err.field.replace("train.estimator.", "").replace("train.", "")
      raise config_lib.ConfigError(f"estimator.{name}.{field}", str(err).partition(": ")[2]) from None
    out[name] = cfg
  return out


def evaluator(study):
  """`theta -> {bit_accuracy, perfect_recall, loss}` on the study's held-out streams, compiled once."""
  topo, problem, _ = meta_train.setup(study.base)
  key, streams = evaluate_lib.eval_key(0), study.eval_streams

  @jax.jit
  def metrics(theta):
    return gradient_estimators.episode_objective(theta, topo, problem, key, streams, study.horizon)[1]

  return lambda theta: {k: float(v) for k, v in jax.device_get(metrics(theta)).items()}


def read_curve(workdir: str, cfg) -> tuple[list[dict], float]:
  """The curve a run wrote (records of `step`, `wall_s`, `cpu_s`, `stream_steps`, recall) and the
  seconds its meta step took to compile."""
  records = metrics_lib.read_metrics(files.join(workdir, "metrics.jsonl"))
  spec = config_lib.estimator_spec(cfg)
  _, problem, _ = meta_train.setup(cfg)
  per_step = spec.stream_steps(problem.task, config_lib.train_spec(cfg).batch_size)
  curve = {}
  for r in records:
    if "train_wall_s" in r:
      rest = {k: v for k, v in r.items() if k not in ("step", "train_wall_s", "train_cpu_s")}
      curve[r["step"]] = {
        "step": r["step"],
        "wall_s": r["train_wall_s"],
        "cpu_s": r["train_cpu_s"],
        "stream_steps": r["step"] * per_step,
        **rest,
      }
  compile_s = [r["compile_s"] for r in records if "compile_s" in r]
  return [curve[s] for s in sorted(curve)], (compile_s[0] if compile_s else None)


def run_study(study, workdir: str) -> dict:
  """Trains every estimator from every seed (resuming finished or stopped runs), writes and returns
  `results.json`'s record: the config, the curves, the summary (`summarise`)."""
  configs = run_configs(study)
  curve = meta_train.Curve(frozenset(), evaluator(study))
  # A line per run; the study's budgets make the runs alike (learned_rules/configs/estimators.py), but a
  # run finished before this invocation takes only seconds, so a resumed study's first estimates are low.
  progress = metrics_lib.StudyProgress("estimators", len(configs) * len(study.seeds))
  results = {}
  for name, cfg in configs.items():
    runs, compile_s = [], None
    for seed in study.seeds:
      run_cfg = config_lib.with_overrides(cfg, {"seed": int(seed)})
      run_dir = files.join(workdir, name, f"seed{seed}")
      steps = frozenset(eval_steps(config_lib.train_spec(run_cfg).num_steps, study.eval_points))
      trained = meta_train.train_and_evaluate(
        run_cfg, run_dir, f"{name} seed {seed}: ", False, curve._replace(steps=steps)
      )
      points, seconds = read_curve(run_dir, run_cfg)
      progress.done(f"{name} seed {int(seed)} at meta step {trained['meta_steps']}")
      compile_s = compile_s if compile_s is not None else seconds
      runs.append({"seed": int(seed), "curve": points})
    results[name] = {"spec": study.estimator[name].to_dict(), "compile_s": compile_s, "runs": runs}
  out = {"config": study.to_dict(), "summary": summarise(results), "results": results}
  files.write_text(files.join(workdir, "results.json"), json.dumps(out, indent=1, default=str))
  return out


def eval_steps(num_steps: int, points: int) -> list[int]:
  """Meta steps after which a run is evaluated: 0, then `points` evenly spaced up to `num_steps`."""
  return sorted({0, *(round(num_steps * (i + 1) / points) for i in range(points))})


class Evaluator:
  """Held-out recall of a theta: the same `eval_streams` fresh streams of `horizon` steps for every
  estimator and seed (`evaluate.eval_key(0)`), compiled once."""

  def __init__(self, study, topo, problem):
    self.topo, self.horizon, self.points = topo, study.horizon, study.eval_points
    key, streams = evaluate_lib.eval_key(0), study.eval_streams

    def objective(theta):
      return gradient_estimators.episode_objective(theta, topo, problem, key, streams, study.horizon)  # noqa: E731

    self._eval = jax.jit(lambda theta: objective(theta)[1])

  def __call__(self, theta) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(self._eval(theta)).items()}


def mean_curve(runs: list[dict]) -> dict[str, np.ndarray]:
  """`{field: [points]}` means over seeds of the runs' curves (the same evaluation steps), with the
  bit accuracy's min and max."""
  acc = np.array([[r["bit_accuracy"] for r in run["curve"]] for run in runs])
  out = {
    f: np.mean([[r[f] for r in run["curve"]] for run in runs], axis=0) for f in ("step", "wall_s", "cpu_s")
  }
  return {**out, "bit_accuracy": acc.mean(0), "min": acc.min(0), "max": acc.max(0)}


def time_to_reach(curve: dict, target: float) -> dict | None:
  """Step, wall and CPU seconds (seed means) of the first evaluation whose mean recall is >= `target`."""
  hits = np.nonzero(curve["bit_accuracy"] >= target - 1e-9)[0]
  if not len(hits):
    return None
  i = int(hits[0])
  return {
    "step": int(curve["step"][i]),
    "wall_s": float(curve["wall_s"][i]),
    "cpu_s": float(curve["cpu_s"][i]),
  }


def summarise(results: dict) -> dict:
  """Per estimator: final recall (mean, min, max over seeds), training times, and the time to first
  reach the final mean recall of `REFERENCE` (also as a fraction of the reference's own)."""
  curves = {name: mean_curve(r["runs"]) for name, r in results.items()}
  target = float(curves[REFERENCE]["bit_accuracy"][-1]) if REFERENCE in curves else None
  ref = time_to_reach(curves[REFERENCE], target) if target is not None else None
  out = {}
  for name, c in curves.items():
    row = {
      "final_bit_accuracy": float(c["bit_accuracy"][-1]),
      "final_min": float(c["min"][-1]),
      "final_max": float(c["max"][-1]),
      "meta_steps": int(c["step"][-1]),
      "train_wall_s": float(c["wall_s"][-1]),
      "train_cpu_s": float(c["cpu_s"][-1]),
      "compile_s": results[name]["compile_s"],
      "reach_reference": None if target is None else time_to_reach(c, target),
    }
    if row["reach_reference"] and ref:
      reach = row["reach_reference"]
      reach["wall_fraction"] = reach["wall_s"] / max(ref["wall_s"], 1e-9)
      reach["cpu_fraction"] = reach["cpu_s"] / max(ref["cpu_s"], 1e-9)
    out[name] = row
  return {"reference": REFERENCE, "reference_final_bit_accuracy": target, "estimators": out}


def table(summary: dict) -> str:
  """The summary as a markdown table."""
  target = summary["reference_final_bit_accuracy"]
  reach_head = f"first reaches {REFERENCE}'s final {target:.3f}: step, wall s, CPU s (CPU fraction)"
  lines = [
    "| estimator | meta steps | final recall, mean (min-max) | train wall s | train CPU s | compile s "
    f"| {reach_head} |",
    "|---|---|---|---|---|---|---|",
  ]
  for name, r in summary["estimators"].items():
    reach = r["reach_reference"]
    text = "never" if reach is None else f"{reach['step']}, {reach['wall_s']:.0f}, {reach['cpu_s']:.0f}"
    if reach and "cpu_fraction" in reach:
      text += f" ({reach['cpu_fraction']:.2f})"
    lines.append(
      f"| {name} | {r['meta_steps']} "
      f"| {r['final_bit_accuracy']:.3f} ({r['final_min']:.3f}-{r['final_max']:.3f}) "
      f"| {r['train_wall_s']:.0f} | {r['train_cpu_s']:.0f} | {r['compile_s']:.0f} | {text} |"
    )
  return "\n".join(lines)


def plot(results: dict, path: str) -> None:
  """Recall against meta steps, training wall time and CPU time: seed means with min-max bands."""
  import matplotlib.pyplot as plt  # noqa: PLC0415 (only drawing needs matplotlib)

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
  for name, r in results.items():
    c = mean_curve(r["runs"])
    for ax, field in zip(axes, ("step", "wall_s", "cpu_s"), strict=True):
      x = np.maximum(c[field], 1.0) if field == "step" else c[field]
      (line,) = ax.plot(x, c["bit_accuracy"], marker=".", label=name)
      ax.fill_between(x, c["min"], c["max"], color=line.get_color(), alpha=0.2)
  labels = ("meta steps (log; step 0 drawn at 1)", "training wall time (s)", "training CPU time (s)")
  for ax, label in zip(axes, labels, strict=True):
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_xscale("log")
  axes[0].set_ylabel("held-out recall (bit accuracy)")
  axes[0].legend(loc="lower right")
  seeds = len(next(iter(results.values()))["runs"])
  fig.suptitle(f"Meta-training estimators on streaming recall ({seeds} seeds, mean and min-max)")
  fig.tight_layout()
  figures.save_small_png(fig, path)  # creates the folder
