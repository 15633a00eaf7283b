r"""Throughput and memory of the library's unroll and meta-gradient, against a straightforward reference.

  python -m experiments.benchmark --quick              # about 4 minutes on 2 CPU cores
  python -m experiments.benchmark                      # every case, the sweeps, the million-synapse case
  python -m experiments.benchmark --config.cases=full-256,layered-256 --config.repeats=5 --out=/tmp/b.json
  python -m experiments.benchmark --config.sections=remat --config.remat_policies=none,step
  python -m experiments.benchmark --config.chunk_synapses=0      # the library's synapse update unchunked
  python -m experiments.benchmark --config=learned_rules/configs/benchmark.py:tiny --workdir=/tmp/tiny

For each case (a topology, a batch `B` of networks, an unroll of `T` steps) it times, in one process,
after compilation and one warm-up call, as the best of `repeats` calls:

- the batched forward unroll and the meta-gradient (`jax.grad` in theta of the mean squared error of
  the readouts over the whole unroll), in synapse-steps per second (`B * synapses * T / seconds`);
- for the library (`unroll.unroll`, its default remat policy) and for the reference
  (learned_rules/reference.py: dense synapses, the whole first layer of `f_s` per synapse, no
  rematerialisation), which computes the same numbers (each case records the largest differences);
- with XLA's compiled peak memory and the meta-gradient's fraction of a float32 matmul's FLOP rate.

Four cases time the shapes of the project's work: `train-64` (the default run's meta step),
`train-128`, `host-64` (a host model's training step around a frozen `PlasticMemory`, against the
same host with the straightforward synapse form) and `eval-1024` (one episode's forward recall).

Then the library meta-gradient under every remat policy, its compiled peak against `T`, and (full
plan only) a network of a million synapses. The sizes of each plan (`full`, `quick`, `tiny`), the FLOP
convention and every detail: learned_rules/benchmark_cases.py. The settings, overridable field by
field: learned_rules/configs/benchmark.py. Programs whose compiled peak exceeds `max_run_gb` are
compiled but not run; their throughputs are `null` with a note.

Prints the tables and writes the results as JSON to `--out` (default `<workdir>/benchmark.json`).
Exit status: 0 done; 2 an unknown plan, case, section or remat policy, or an invalid number, refused
before anything is compiled, with one `error:` line.
"""

from __future__ import annotations

from absl import flags

from experiments import harness
from learned_rules import benchmarking, files


def _names(value: str) -> tuple[str, ...]:
  """The names of a comma-separated config field."""
  return tuple(filter(None, (part.strip() for part in value.split(","))))


def options_of(cfg) -> benchmarking.Options:
  """The config's fields as `benchmarking.Options`; a number 0 stands for the library's default."""
  return benchmarking.Options(
    plan=cfg.plan,
    cases=_names(cfg.cases),
    sections=_names(cfg.sections),
    remat_policies=_names(cfg.remat_policies),
    repeats=cfg.repeats or None,
    compile_threads=cfg.compile_threads or None,
    chunk_synapses=cfg.chunk_synapses,
    max_run_bytes=int(cfg.max_run_gb * 2**30) or None,
  )


def main(cfg, workdir: str, opts) -> dict:
  try:
    options = options_of(cfg)
  except ValueError as e:
    raise harness.UsageError(f"--config: {e}") from None
  out = opts.out or files.join(workdir, "benchmark.json")
  results = benchmarking.run(options, out)
  print(benchmarking.format_tables(results))
  print(f"wall time {results['wall_seconds']:.0f} s; results in {out}")
  return results


if __name__ == "__main__":
  harness.run(
    main,
    config="benchmark",
    workdir="runs/benchmark",
    workdir_help="Folder of the results (benchmark.json). Default: runs/benchmark.",
    options={
      "out": (
        flags.DEFINE_string,
        None,
        "Where to write the JSON results. Default: <workdir>/benchmark.json.",
      ),
    },
  )
