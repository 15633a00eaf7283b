r"""Meta-training estimators compared: truncated windows, full back-propagation, evolution strategies.

  python -m experiments.estimators                 # runs/estimators, 3 seeds, the default network
  python -m experiments.estimators --quick         # runs/estimators-quick, 2 seeds, a smaller network
  python -m experiments.estimators --config=learned_rules/configs/estimators.py:tiny --workdir=/tmp/est

Every estimator of the config (learned_rules/configs/estimators.py) meta-trains the same network from the
same initial theta for each seed; held-out recall (bit accuracy on the same fresh streams of `horizon`
steps for all) is measured at evenly spaced meta steps. The clocks run only around training steps: each
estimator's step is compiled before its clock starts (the compile time is reported on its own), and
evaluation is not counted. Wall time (`time.perf_counter`) and the process's CPU time
(`time.process_time`, less disturbed by other jobs on the machine) are both recorded.

Writes `<workdir>/results.json`, prints a table (final recall per estimator, and the time each first
reaches the final mean recall of `full`), and draws `<figure_dir>/estimators.png`: recall against meta
steps, training wall time and training CPU time, the mean over seeds with a min-max band.
"""

from __future__ import annotations

import json
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import flagutil  # noqa: E402
from learned_rules import config as config_lib  # noqa: E402
from learned_rules import evaluation as evaluate_lib  # noqa: E402
from learned_rules import gradient_estimators, meta_train, rules  # noqa: E402
from learned_rules.configs import estimators as estimator_configs  # noqa: E402

_CONFIG = flagutil.define(
  config_flags.DEFINE_config_file, "config", "learned_rules/configs/estimators.py", "Study config."
)
_WORKDIR = flagutil.define(
  flags.DEFINE_string, "workdir", None, "Output folder (default runs/estimators, or runs/estimators-quick)."
)
_QUICK = flagutil.define(flags.DEFINE_bool, "quick", False, "The config's `quick` variant on top.")
_FIGURE_DIR = flagutil.define(
  flags.DEFINE_string, "figure_dir", None, "Where to write the PNG (default docs/figures/estimators)."
)

REFERENCE = "full"  # the estimator whose final recall the others are timed to


def specs(study) -> list[gradient_estimators.EstimatorSpec]:
  """The study's estimators, validated (`config.ConfigError` naming the field) before anything runs."""
  names = [n.strip() for n in study.estimators.split(",") if n.strip()]
  if not names:
    raise config_lib.ConfigError("estimators", "needs at least one estimator")
  if study.horizon < 1 or study.eval_streams < 1 or study.eval_points < 1 or not study.seeds:
    raise config_lib.ConfigError("horizon", "horizon, eval_streams, eval_points >= 1 and a seed")
  out = []
  for name in names:
    if name not in study.estimator:
      raise config_lib.ConfigError(
        "estimators", f"unknown estimator {name!r}; one of {list(study.estimator)}"
      )
    e = study.estimator[name]
    spec = gradient_estimators.EstimatorSpec(
      name, e.kind, e.window, e.learning_rate, e.batch, e.population, e.std, study.clip_norm
    )
    try:
      gradient_estimators.check(spec, study.horizon)
    except ValueError as err:
      field, _, message = str(err).partition(": ")
      raise config_lib.ConfigError(f"estimator.{name}.{field}", message) from None
    if e.num_steps < 1:
      raise config_lib.ConfigError(f"estimator.{name}.num_steps", "must be >= 1")
    out.append(spec)
  config_lib.validate(study.base)
  if study.base.task.protocol != "streaming":
    raise config_lib.ConfigError("base.task.protocol", "the estimators compare on `streaming`")
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


def train_run(est, num_steps: int, theta, seed: int, evaluator: Evaluator) -> list[dict]:
  """One run of `est` from `theta`: the learning curve, one record per evaluation,
  with the training wall and CPU time and the simulated network steps up to it."""
  state = est.init(meta_train.step_key(seed), theta, evaluator.topo)
  curve, wall, cpu, done = [], 0.0, 0.0, 0
  for mark in eval_steps(num_steps, evaluator.points):
    jax.block_until_ready(state)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(mark - done):
      state, _ = est.step(state, evaluator.topo)
    jax.block_until_ready(state)
    wall += time.perf_counter() - w0
    cpu += time.process_time() - c0
    done = mark
    simulated = mark * est.spec.stream_steps(evaluator.horizon)
    curve.append(
      {
        "step": mark,
        "wall_s": wall,
        "cpu_s": cpu,
        "stream_steps": simulated,
        **evaluator(est.theta_of(state)),
      }
    )
  return curve


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
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)


def _write(workdir: str, out: dict) -> None:
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(out, f, indent=1, default=str)


def run(study, workdir: str, figure_dir: str) -> dict:
  """The whole study: trains every estimator from every seed, writes results.json and the figure."""
  est_specs = specs(study)
  topo, problem, _ = meta_train.setup(study.base)
  evaluator = Evaluator(study, topo, problem)
  os.makedirs(workdir, exist_ok=True)
  start, start_cpu = time.perf_counter(), time.process_time()
  results = {}
  for spec in est_specs:
    est = gradient_estimators.make_estimator(spec, problem, study.horizon)
    runs, compile_s = [], None
    for seed in study.seeds:
      theta = rules.init_theta(meta_train.train_key(seed), problem.rule)
      if compile_s is None:  # once per estimator, before any clock starts: one step on a throwaway state
        t0 = time.perf_counter()
        jax.block_until_ready(est.step(est.init(meta_train.step_key(seed), theta, topo), topo))
        compile_s = time.perf_counter() - t0
      curve = train_run(est, study.estimator[spec.name].num_steps, theta, seed, evaluator)
      runs.append({"seed": int(seed), "curve": curve})
      last = curve[-1]
      print(
        f"[{time.perf_counter() - start:5.0f} s] {spec.name} seed {seed}: "
        f"recall {last['bit_accuracy']:.3f} after "
        f"{last['step']} steps, {last['wall_s']:.0f} s wall, {last['cpu_s']:.0f} s CPU",
        flush=True,
      )
    results[spec.name] = {"spec": study.estimator[spec.name].to_dict(), "compile_s": compile_s, "runs": runs}
    _write(workdir, {"config": study.to_dict(), "results": results})  # partial results, kept as it goes
  summary = summarise(results)
  out = {
    "config": study.to_dict(),
    "summary": summary,
    "results": results,
    "total_wall_s": time.perf_counter() - start,
    "total_cpu_s": time.process_time() - start_cpu,  # compilation and evaluation included
  }
  _write(workdir, out)
  plot(results, os.path.join(figure_dir, "estimators.png"))
  print(table(summary))
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  study = _CONFIG.value
  if _QUICK.value:
    study = flagutil.with_variant(study, estimator_configs.apply_variant, "quick")
  workdir = _WORKDIR.value or os.path.join("runs", "estimators-quick" if _QUICK.value else "estimators")
  try:
    run(study, workdir, _FIGURE_DIR.value or os.path.join("docs", "figures", "estimators"))
  except config_lib.ConfigError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
