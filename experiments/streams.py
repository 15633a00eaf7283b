r"""Streams that never reset: a streaming rule run for 100-200 times its training window.

  python -m experiments.remember --config=learned_rules/configs/remember.py:streaming --workdir=runs/streaming
  python -m experiments.streams --rule=runs/streaming                 # 64 streams x 200 windows
  python -m experiments.streams --rule=runs/streaming --quick         # 32 streams x 100 windows
  python -m experiments.streams --rule=runs/streaming --figure_dir=docs/figures/streams  # the docs' figure
  python -m experiments.streams --rule=runs/streaming --quick --num_neurons=256  # on a larger network
  python -m experiments.streams --rule=runs/streaming --quick --stream_seed=1    # on fresh streams

Runs `learned_rules.streams_study` on the rule: fresh streams of its streaming protocol, never reset,
for `--num_windows` windows of the training length W, on the `train` protocol (lags the rule was
meta-trained on) and, with lags up to `--probe_max_lag`, the `probe` protocol; beside the rule, the
palimpsest (a Hebbian memory with tuned decay; the tables also show the best decay at each lag), the
same memory without decay, the key-blind floor (the best answer that ignores the cue) and, when the
rule's run has one (`<rule>/synapses_off`, written by `experiments.remember`), the same network
meta-trained with synapse updates off, all on the same stream steps. `--num_neurons` runs the rule,
without retraining, on a `full` network of another size (keys and values a quarter of it wide), without
the synapses-off run. `--stream_seed` draws fresh streams (default: those of the trainer's evaluation).
Every forgetting curve has a 95 % bootstrap interval over streams, and the rule's differences from the
palimpsests and the floor have paired intervals; the tables end with the lags at which the rule is
above each with the whole interval.

Prints the forgetting-curve tables and the norm summary; writes `<workdir>/results.json` (default
runs/streams, or runs/streams-quick with --quick) and draws `streams.png` (`streams-quick.png` with
--quick) into `--figure_dir` (default: the workdir).

Exit status: 0 done; 2 a bad flag, or a rule that is missing or not a streaming rule; see
experiments/harness.py.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from experiments import harness
from learned_rules import files, streams_figures, streams_study


def default_workdir(cfg, quick: bool = False) -> str:
  del cfg
  return os.path.join("runs", "streams-quick" if quick else "streams")


def sizes_of(opts) -> streams_study.StreamSizes:
  """The stream sizes of `--quick`, `--num_streams` and `--num_windows` (0: the default)."""
  sizes = streams_study.QUICK if opts.quick else streams_study.FULL
  for name in ("num_streams", "num_windows"):
    if getattr(opts, name) < 0:
      raise harness.UsageError(f"--{name} must be >= 1 (0: the default)")
  return dataclasses.replace(
    sizes,
    num_streams=opts.num_streams or sizes.num_streams,
    num_windows=opts.num_windows or sizes.num_windows,
  )


def main(cfg, workdir: str, opts) -> dict:
  del cfg  # no config of its own: the rule's
  sizes = sizes_of(opts)
  if opts.probe_max_lag < 1:
    raise harness.UsageError("--probe_max_lag must be >= 1")
  if opts.stream_seed < -1:
    raise harness.UsageError("--stream_seed must be >= 0 (-1: the rule's meta-training seed)")
  stream_seed = None if opts.stream_seed == -1 else opts.stream_seed
  out = streams_study.run(
    opts.rule, sizes, opts.probe_max_lag, opts.synapses_off, opts.num_neurons, stream_seed
  )
  files.write_json(files.join(workdir, "results.json"), out, indent=1)
  print(streams_study.format_tables(out))
  figure = files.join(
    harness.figure_dir(workdir, opts.figure_dir), f"streams{'-quick' if opts.quick else ''}.png"
  )
  streams_figures.plot(out, figure)
  print(f"wrote {workdir}/results.json and {figure} ({out['wall_seconds']:.0f} s wall, "
        f"{out['cpu_seconds']:.0f} s CPU)")  # fmt: skip
  return out


if __name__ == "__main__":
  harness.run(
    main,
    workdir=default_workdir,
    workdir_help="Output folder (results.json; the figure unless --figure_dir). Default: runs/streams, or "
    "runs/streams-quick with --quick.",
    options={
      "rule": (flags.DEFINE_string, "runs/streaming", "A streaming rule: a run directory or a saved rule."),
      "quick": (flags.DEFINE_bool, False, "Fewer streams, 100 windows (minutes)."),
      "figure_dir": (flags.DEFINE_string, None, "Where to draw the PNG (default: the workdir)."),
      "num_streams": (flags.DEFINE_integer, 0, "Streams (0: 64, --quick 32)."),
      "num_windows": (flags.DEFINE_integer, 0, "Windows of W steps per stream (0: 200, --quick 100)."),
      "num_neurons": (
        flags.DEFINE_integer,
        0,
        "Run the rule, without retraining, on a `full` network of this many neurons (a quarter input, a "
        "quarter output, the rest hidden); 0: the network it was meta-trained on.",
      ),
      "stream_seed": (
        flags.DEFINE_integer,
        -1,
        "Seed of the evaluation and decay-tuning streams (-1: the rule's meta-training seed, the streams "
        "its trainer evaluates on). Another seed gives fresh streams.",
      ),
      "probe_max_lag": (
        flags.DEFINE_integer,
        16,
        "Dmax of the probe protocol (<= the rule's Dmax: no probe).",
      ),
      "synapses_off": (
        flags.DEFINE_string,
        "",
        "The synapses-off run to compare with ('': <rule>/synapses_off if it exists; 'none': skip). Not "
        "with --num_neurons: it runs at the size it was trained at.",
      ),
    },
  )
