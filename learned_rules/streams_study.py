r"""Streams that never reset: a streaming rule run for 100-200 times its training window, beside the
memories that see the same stream steps (`python -m experiments.streams`).

Fresh streams of the rule's streaming protocol (`learned_rules.streaming`) run window by window, never
reset, for `num_windows` windows of the training length W, on one or two protocols:

- `train`: the protocol the rule was meta-trained on (lags d = 1..Dmax): recall over stream time and the
  state norms (the largest |body| and |synapse| entry of every window, their RMS);
- `probe`: the same with lags up to `probe_max_lag`: a forgetting curve past the lags the rule was
  trained on (its input then holds cues of older snippets than it ever saw in training).

On exactly the same stream steps run: the palimpsest, a Hebbian outer-product memory with decay
(`baselines.hebbian`, online), its decay tuned over `DECAY_GRID` on separate streams of the same protocol,
and the same memory with decay 1 (no forgetting); as a stricter yardstick, every decay's forgetting curve
and the best decay at each lag (picked on the evaluation streams themselves); and, when there is one,
the same network meta-trained with synapse updates off (no synaptic memory). Recall is scored, as in
training, on both query steps of every slot whose asked-for snippet was shown whole in the stream.
`streams_figures.plot` draws the result.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from learned_rules import capacity_plan, evaluation, files, pretrained, streaming
from learned_rules import config as config_lib
from learned_rules import metrics as metrics_lib

# Fine near 1, where the best decay lies on the streams of lags 1..16: 0.985 at N = 64 and 128, 0.99 at
# N = 192 and 256 (with a neighbour on each side, so the palimpsest is tuned to within them).
DECAY_GRID = (0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98)
DECAY_GRID += (0.985, 0.99, 0.993, 0.995, 0.998, 1.0)
MEMORIES = ("learned", "palimpsest", "hebbian_no_decay", "key_blind", "synapses_off")
# What the rule's forgetting curve is compared with, lag by lag, on the same streams (paired intervals).
YARDSTICKS = ("palimpsest", "palimpsest_best_per_lag", "key_blind")


@dataclasses.dataclass(frozen=True)
class StreamSizes:
  """How many streams run, and for how many windows of W steps each."""

  num_streams: int = 64
  num_windows: int = 200


FULL = StreamSizes(64, 200)
QUICK = StreamSizes(32, 100)


class StreamsError(pretrained.RuleLoadError):
  """The rule given cannot be run on never-reset streaming (missing, or of another protocol)."""


def _clock():
  return time.perf_counter(), time.process_time()


def _since(start) -> dict[str, float]:
  return {"wall_seconds": time.perf_counter() - start[0], "cpu_seconds": time.process_time() - start[1]}


# The runs over the streams of one protocol, in order, as the progress lines name them.
RUNS = {
  "tuning": f"{len(DECAY_GRID)} palimpsests on the decay-tuning streams",
  "hebbian": f"{len(DECAY_GRID)} palimpsests on the evaluation streams",
  "learned": "the learned rule",
  "synapses_off": "the synapses-off network",
}


def _nan_to_none(values) -> list:
  return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, np.float64).ravel()]


def load_streaming_rule(path: str, what: str = "rule") -> pretrained.Rule:
  """The rule at `path`, checked to be meta-trained on the streaming protocol; `StreamsError` if not."""
  try:
    rule = pretrained.load_rule(path)
  except (FileNotFoundError, pretrained.RuleLoadError) as e:
    raise StreamsError(f"cannot load the {what} {path!r}: {e}") from e
  protocol = rule.experiment.task.protocol
  if protocol != "streaming":
    raise StreamsError(
      f"the {what} {path!r} was meta-trained on the {protocol!r} protocol, not 'streaming'; meta-train one "
      "with: python -m experiments.remember --config=learned_rules/configs/remember.py:streaming "
      "--workdir=runs/streaming"
    )
  return rule


def on_protocol(rule: pretrained.Rule, max_lag: int):
  """`(topology, problem)` of `rule` on its streaming protocol with lags up to `max_lag`."""
  cfg = config_lib.with_overrides(rule.config, {"task.max_lag": max_lag})
  return rule.topology, config_lib.problem(cfg, rule.topology)


def synapses_off_rule(rule_path: str, rule: pretrained.Rule, synapses_off: str) -> pretrained.Rule | None:
  """The synapses-off run to compare `rule` with, or None: `synapses_off` names it ('': the run's own
  `<rule_path>/synapses_off` if it exists; 'none': none). `StreamsError` if it has synapse updates on
  or was trained on another stream."""
  if synapses_off == "none":
    return None
  path = synapses_off or files.join(rule_path, "synapses_off")
  if not synapses_off and not files.is_dir(files.join(path, "checkpoints")):
    return None
  off = load_streaming_rule(path, "synapses-off run")
  if off.experiment.synapse_updates:
    raise StreamsError(f"the synapses-off run {path!r} has synapse updates on (net.synapse_updates)")
  if on_protocol(off, 1)[1].task != on_protocol(rule, 1)[1].task:
    raise StreamsError(f"the synapses-off run {path!r} was trained on another stream than the rule")
  return off


def synapse_bound(rule: pretrained.Rule) -> float | None:
  """`streaming.synapse_bound` of `rule` on its own streaming network (its fan-ins)."""
  spec = config_lib.rule_spec(rule.config, rule.topology)
  return streaming.synapse_bound(rule.theta, spec, rule.topology.fan_in)


def _memory_record(counts: streaming.RecallCounts, resamples: np.ndarray, **extra) -> dict:
  """Forgetting curve with its 95 % bootstrap interval over streams (`resamples`), and per-window
  accuracy, of one memory's `[num_windows, B, Dmax]` counts."""
  low, high = evaluation.percentile_interval(streaming.resampled_by_lag(counts, resamples))
  return {
    "bit_accuracy": _nan_to_none(streaming.accuracy(counts))[0],
    "accuracy_by_lag": _nan_to_none(streaming.accuracy(counts, axis=(0, 1))),
    "accuracy_by_lag_low": _nan_to_none(low),
    "accuracy_by_lag_high": _nan_to_none(high),
    "scored_bits_by_lag": _nan_to_none(np.sum(counts.bits_by_lag, axis=(0, 1))),
    "accuracy_by_window": _nan_to_none(streaming.accuracy(counts, axis=(1, 2))),
    **extra,
  }


def _norm_record(norms: streaming.StateNorms) -> dict:
  """Per-window `[num_windows]` norms, the first, last and largest maximum, and whether all are finite."""
  record = {name: _nan_to_none(getattr(norms, name)) for name in streaming.StateNorms._fields}
  for name in ("max_body", "max_synapse"):
    values = np.asarray(getattr(norms, name))
    first, last, most = _nan_to_none([values[0], values[-1], values.max()])  # NaN: not finite
    record[f"{name}_summary"] = {"first_window": first, "last_window": last, "max": most}
  record["finite"] = bool(all(np.all(np.isfinite(np.asarray(v))) for v in norms))
  return record


def _pick(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def _hebbian_memories(task, keys, sizes: StreamSizes, resamples, done: Callable[[str], None]):
  """The palimpsest (its decay the best of `DECAY_GRID` on the tuning streams of `keys[1]`) and decay 1,
  on the evaluation streams of `keys[0]`, with the tuning table; and the counts `[num_windows, B, Dmax]`
  of the two yardsticks the rule is compared with (`YARDSTICKS`: the tuned palimpsest and, at each lag,
  the decay best there)."""
  k_eval, k_tune = keys
  b, w = sizes.num_streams, sizes.num_windows
  start = _clock()
  grid = jnp.asarray(DECAY_GRID)
  tune_counts, _ = jax.block_until_ready(streaming.run_hebbian_streams(task, k_tune, b, w, grid))
  done("tuning")
  counts, max_weight = jax.block_until_ready(streaming.run_hebbian_streams(task, k_eval, b, w, grid))
  done("hebbian")
  tuned = [float(streaming.accuracy(_pick(tune_counts, i))) for i in range(len(DECAY_GRID))]
  best = int(np.argmax(tuned))
  by_lag = np.stack([streaming.accuracy(_pick(counts, i), axis=(0, 1)) for i in range(len(DECAY_GRID))])
  best_at_lag = np.argmax(np.nan_to_num(by_lag, nan=-1.0), axis=0)  # a lag nothing asked for stays NaN
  lags = np.arange(by_lag.shape[1])
  # [num_windows, B, Dmax]: at lag d, the counts of the decay best at d
  envelope = streaming.RecallCounts(
    *(np.asarray(c)[best_at_lag, ..., lags].transpose(1, 2, 0) for c in counts)
  )
  out = {
    "decay_tuning": {
      "grid": list(DECAY_GRID),
      "accuracy_tuning_streams": tuned,
      "accuracy_eval_streams": [float(streaming.accuracy(_pick(counts, i))) for i in range(len(DECAY_GRID))],
      "chosen": DECAY_GRID[best],
      "accuracy_by_lag_eval_streams": [_nan_to_none(row) for row in by_lag],
    },
    # A stricter yardstick than the tuned palimpsest: at each lag, the best decay of the grid on the
    # evaluation streams themselves (a different decay per lag, chosen after seeing the answers).
    "palimpsest_best_per_lag": {
      **_memory_record(envelope, resamples),
      "decay_by_lag": [DECAY_GRID[i] for i in best_at_lag],
    },
  }
  del out["palimpsest_best_per_lag"]["accuracy_by_window"]  # a different memory at each lag
  timing = _since(start)  # both Hebbian runs, every decay of the grid
  for name, i in (("palimpsest", best), ("hebbian_no_decay", DECAY_GRID.index(1.0))):
    extra = {"decay": DECAY_GRID[i], "max_abs_weight": _nan_to_none(max_weight[i])}
    out[name] = _memory_record(_pick(counts, i), resamples, **extra, **timing)
  return out, {"palimpsest": _pick(counts, best), "palimpsest_best_per_lag": envelope}


def _comparison(counts, other, resamples) -> dict:
  """The rule's forgetting curve minus another memory's on the same streams (`[num_windows, B, Dmax]`
  each), by lag, with the paired 95 % bootstrap interval of the difference over streams."""
  difference = streaming.accuracy(counts, axis=(0, 1)) - streaming.accuracy(other, axis=(0, 1))
  samples = streaming.resampled_by_lag(counts, resamples) - streaming.resampled_by_lag(other, resamples)
  low, high = evaluation.percentile_interval(samples)
  return {"difference_by_lag": _nan_to_none(difference), "low": _nan_to_none(low), "high": _nan_to_none(high)}


def _network_memory(rule: pretrained.Rule, max_lag: int, key, sizes: StreamSizes, resamples):
  """`rule`'s network on the streams of `key`: its recall record (intervals from `resamples`) with its
  state norms and timing, and its counts `[num_windows, B, Dmax]`."""
  start = _clock()
  topo, problem = on_protocol(rule, max_lag)
  run = streaming.run_long_streams(rule.theta, topo, problem, key, sizes.num_streams, sizes.num_windows)
  counts, norms = jax.block_until_ready(run)
  return _memory_record(counts, resamples, norms=_norm_record(norms), **_since(start)), counts


def run_protocol(
  rule, off_rule, max_lag: int, keys, sizes: StreamSizes, done: Callable[[str], None] = lambda run: None
) -> dict:
  """Every memory on `sizes.num_streams` streams of `rule`'s protocol with lags up to `max_lag`,
  `sizes.num_windows` windows each: the learned rule, the key-blind floor, the palimpsest (its decay the
  best of `DECAY_GRID` on as many other streams of `keys[1]`), decay 1, and synapses off (`off_rule`, if
  any); every curve with its 95 % bootstrap interval over streams, and the rule's differences from the
  yardsticks (`YARDSTICKS`) with paired intervals. `done(run)` is called as each run of `RUNS` ends."""
  task = on_protocol(rule, max_lag)[1].task
  out = {"max_lag": max_lag, "window": task.window, "num_streams": sizes.num_streams}
  out["num_windows"] = sizes.num_windows
  resamples = evaluation.resample_indices(sizes.num_streams)
  start = _clock()
  blind = jax.block_until_ready(
    streaming.run_key_blind_streams(task, keys[0], sizes.num_streams, sizes.num_windows)
  )
  out["key_blind"] = _memory_record(blind, resamples, **_since(start))
  hebbian, yardsticks = _hebbian_memories(task, keys, sizes, resamples, done)
  out.update(hebbian)
  out["learned"], counts = _network_memory(rule, max_lag, keys[0], sizes, resamples)
  yardsticks["key_blind"] = blind
  out["learned"]["versus"] = {name: _comparison(counts, yardsticks[name], resamples) for name in YARDSTICKS}
  done("learned")
  if off_rule is not None:
    out["synapses_off"] = _network_memory(off_rule, max_lag, keys[0], sizes, resamples)[0]
    done("synapses_off")
  return out


def _meta_training(rule_path: str) -> dict | None:
  """What `experiments.remember` recorded of the rule's meta-training (its summary.json), if anything."""
  path = files.join(rule_path, "summary.json")
  return files.read_json(path) if files.is_file(path) else None


def at_size(rule: pretrained.Rule, num_neurons: int) -> pretrained.Rule:
  """`rule` on a `full` network of `num_neurons` neurons (a quarter input, a quarter output, the rest
  hidden, as the size study), without retraining; `StreamsError` if its network is not `full`."""
  if rule.experiment.topology != "full":
    topology = rule.experiment.topology
    raise StreamsError(f"only a rule meta-trained on `full` runs at another size, not {topology!r}")
  if num_neurons < 8:
    raise StreamsError(f"a network of {num_neurons} neurons is too small (at least 8)")
  config = capacity_plan.with_setting(rule.config, "size", num_neurons)
  return dataclasses.replace(rule, config=config, source=f"{rule.source} at N = {num_neurons}")


def run(
  rule_path: str,
  sizes: StreamSizes = FULL,
  probe_max_lag: int = 16,
  synapses_off: str = "",
  num_neurons: int = 0,
  stream_seed: int | None = None,
) -> dict:
  """Every protocol (`train`, and `probe` if `probe_max_lag` exceeds the rule's Dmax) of the streaming
  rule at `rule_path`, JSON-ready; on a `full` network of `num_neurons` neurons (`at_size`) when that is
  not 0, without the synapses-off run (trained at its own size; naming one is a `StreamsError`).
  `synapses_off` as in `synapses_off_rule`. The streams are those of
  `evaluation.eval_key(stream_seed)` (None: the rule's meta-training seed, the streams of its trainer's
  evaluation); another seed gives fresh streams, on which a choice made by looking at the default ones
  can be checked. Raises `StreamsError` for a rule that is not a streaming rule or cannot be loaded."""
  start = _clock()
  rule = load_streaming_rule(rule_path)
  if num_neurons and synapses_off not in ("", "none"):
    raise StreamsError(
      f"the synapses-off run {synapses_off!r} runs at the size it was trained at, not with num_neurons "
      f"{num_neurons}: leave it out there"
    )
  off = synapses_off_rule(rule_path, rule, "none" if num_neurons else synapses_off)
  if num_neurons:
    rule = at_size(rule, num_neurons)
  train_lag = rule.experiment.task.max_lag
  seed = rule.experiment.train.seed if stream_seed is None else stream_seed
  keys = jax.random.split(evaluation.eval_key(seed))  # evaluation, decay tuning
  lags = {"train": train_lag, **({"probe": probe_max_lag} if probe_max_lag > train_lag else {})}
  runs = [r for r in RUNS if off is not None or r != "synapses_off"]
  order = [(name, r) for name in lags for r in runs]
  # A line per run; a run takes as long as the same run on an earlier protocol (as many streams and
  # windows, compiled anew).
  progress = metrics_lib.StudyProgress("streams", len(order), kinds=[run for _, run in order])

  def done(protocol: str, run: str) -> None:
    progress.done(f"{protocol} protocol, {RUNS[run]}")

  if jax.process_index() == 0:
    logging.info(
      "streams: %d runs of %d streams x %d windows, protocols %s; each run compiles first",
      len(order),
      sizes.num_streams,
      sizes.num_windows,
      ", ".join(lags),
    )
  out = {
    "rule": rule_path,
    "meta_steps": rule.meta_steps,
    "meta_training": _meta_training(rule_path),
    "synapses_off_run": None if off is None else off.source,
    "num_neurons": rule.topology.num_neurons,
    "stream_seed": seed,
    "train_max_lag": train_lag,
    "sizes": dataclasses.asdict(sizes),
    "synapse_bound": synapse_bound(rule),
    "protocols": {
      name: run_protocol(rule, off, lag, keys, sizes, functools.partial(done, name))
      for name, lag in lags.items()
    },
  }
  out.update(_since(start))
  return out


def present(p: dict) -> list[str]:
  """The memories of `MEMORIES` that protocol record `p` holds."""
  return [m for m in MEMORIES if m in p]


def label(name: str, p: dict) -> str:
  """Memory `name` as the tables and the figure name it, with its decay."""
  if name in ("palimpsest", "hebbian_no_decay"):
    return f"{'palimpsest' if name == 'palimpsest' else 'Hebbian'} (decay {p[name]['decay']:g})"
  return {"learned": "learned rule", "synapses_off": "synapses off", "key_blind": "key-blind floor"}[name]


def _num(value) -> str:
  return "inf/nan" if value is None else f"{value:.3f}"


def _interval(low, high, signed: bool = False) -> str:
  form = "{:+.3f}" if signed else "{:.3f}"
  return "-" if low is None or high is None else f"[{form.format(low)}, {form.format(high)}]"


def _curve_table(name: str, p: dict) -> list[str]:
  """Protocol `name`'s forgetting curve: recall bit accuracy by lag, every memory, the rule's 95 %
  interval and its differences from the yardsticks (`YARDSTICKS`, paired intervals)."""
  memories = present(p)
  steps = p["num_windows"] * p["window"]
  envelope = p.get("palimpsest_best_per_lag")
  learned, versus = p["learned"], p["learned"]["versus"]
  lines = [
    f"\n{name} protocol: lags 1..{p['max_lag']}, {p['num_streams']} streams x {p['num_windows']} windows "
    f"of W={p['window']} ({steps} steps, never reset); recall bit accuracy by lag d (slots); intervals: "
    "95 % bootstrap over streams (differences paired on the same streams)",
    f"{'d':>4}{'bits':>9}"
    + "".join(f"{label(m, p):>24}" for m in memories)
    + f"{'learned 95 %':>18}"
    + (f"{'palimpsest, best per lag':>26}{'its decay':>10}" if envelope else "")
    + "".join(f"{'learned - ' + v.replace('palimpsest_best_per_lag', 'best per lag'):>26}" for v in versus),
  ]
  for d in range(p["max_lag"]):
    row = [p[m]["accuracy_by_lag"][d] for m in memories]
    cells = "".join(f"{'-' if v is None else _num(v):>24}" for v in row)
    cells += f"{_interval(learned['accuracy_by_lag_low'][d], learned['accuracy_by_lag_high'][d]):>18}"
    if envelope:
      best = envelope["accuracy_by_lag"][d]
      cells += f"{'-' if best is None else _num(best):>26}{envelope['decay_by_lag'][d]:>10g}"
    for v in versus.values():
      diff = v["difference_by_lag"][d]
      cells += f"{'-' if diff is None else f'{diff:+.3f} ' + _interval(v['low'][d], v['high'][d], True):>26}"
    lines.append(f"{d + 1:>4}{p['learned']['scored_bits_by_lag'][d]:>9.0f}{cells}")
  lines.append(f"{'all':>4}{'':>9}" + "".join(f"{_num(p[m]['bit_accuracy']):>24}" for m in memories))
  lines += _verdict(p)
  return lines


def _verdict(p: dict) -> list[str]:
  """One line per yardstick: at how many lags the rule is above it with the whole interval of the
  difference above 0, and at which it is below; then at how many lags the rule's whole interval is at
  least 0.95."""
  versus, learned = p["learned"]["versus"], p["learned"]
  asked = [d for d in range(p["max_lag"]) if learned["accuracy_by_lag"][d] is not None]
  lines = []
  for name, v in versus.items():
    above = [d + 1 for d in asked if v["low"][d] is not None and v["low"][d] > 0]
    below = [d + 1 for d in asked if v["high"][d] is not None and v["high"][d] < 0]
    lines.append(
      f"learned above {name} (interval of the difference above 0) at {len(above)} of {len(asked)} lags; "
      f"below it at lags {below or 'none'}"
    )
  lows = learned["accuracy_by_lag_low"]
  sure = [d + 1 for d in asked if lows[d] is not None and lows[d] >= 0.95]
  lines.append(f"learned >= 0.95 with its whole interval at {len(sure)} of {len(asked)} lags")
  return lines


def format_tables(out: dict) -> str:
  """The forgetting curve of every protocol and the state-norm summary, as text."""
  lines = [
    f"the rule {out['rule']} on a network of {out.get('num_neurons', '?')} neurons, streams of seed "
    f"{out.get('stream_seed', '?')}"
  ]
  lines += [line for name, p in out["protocols"].items() for line in _curve_table(name, p)]
  lines.append("\nstate norms: largest |entry| over every step of a window and every stream")
  lines.append(f"{'protocol':<10}{'memory':<14}{'state':<9}{'first window':>14}{'last window':>13}{'max':>9}")
  for name, p in out["protocols"].items():
    for m in ("learned", "synapses_off"):
      for state in ("body", "synapse") if m in p else ():
        s = p[m]["norms"][f"max_{state}_summary"]
        lines.append(
          f"{name:<10}{m:<14}{state:<9}{_num(s['first_window']):>14}{_num(s['last_window']):>13}{_num(s['max']):>9}"
        )
  lines.append(
    f"(the bounded synapse update allows |synapse| <= {out['synapse_bound']:.3f}; bodies are gated tanh)"
    if out["synapse_bound"] is not None
    else "(the rule centres its synapses: its update keeps no bound on |synapse|; bodies are gated tanh)"
  )
  return "\n".join(lines)
