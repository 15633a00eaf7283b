r"""Throughput and memory of the library's unroll and meta-gradient against the straightforward
reference (learned_rules/benchmark_cases.py says what is measured; docs/PERFORMANCE.md reports a run).

  python -m experiments.benchmark                       # every case, the sweeps, the million-synapse case
  python -m experiments.benchmark --quick               # about 4 minutes on 2 CPU cores
  python -m experiments.benchmark --config.cases=full-256,layered-256 --config.repeats=5
  python -m experiments.benchmark --config.sections=remat --config.remat_policies=none,step
  python -m experiments.benchmark --config=learned_rules/configs/benchmark.py:tiny --workdir=/tmp/tiny

Variants: `quick` (smaller sizes, about 4 minutes), `tiny` (seconds; the sizes the tests use).
"""

from learned_rules import config as config_lib
from learned_rules import configs, rules


def get_config(variant: str = "") -> config_lib.ConfigDict:
  cfg = config_lib.ConfigDict()
  cfg.plan = "full"  # full | quick | tiny: the sizes (learned_rules/benchmark_cases.py, PLANS)
  cfg.cases = ""  # the plan's case names to run, comma-separated; "" runs every case of the plan
  cfg.sections = "cases,remat,memory,million"  # comma-separated
  cfg.remat_policies = ""  # policies to time and sweep, comma-separated; "": unroll.REMAT_POLICIES
  cfg.repeats = 0  # timed calls per program; 0: the plan's (full 3, quick 2, tiny 1)
  cfg.compile_threads = 0  # programs compiled at once before they are timed one by one; 0: CPU count
  cfg.chunk_synapses = rules.RuleSpec.chunk_synapses  # per chunk of the library's synapse update; 0: whole
  # Programs whose compiled peak exceeds this many GiB are compiled but not run; 0: 60% of RAM.
  cfg.max_run_gb = 0.0

  configs.apply_variants(cfg, variant, VARIANTS)
  return cfg


def _plan(name):
  def apply(cfg):
    cfg.plan = name

  return apply


VARIANTS = {
  "quick": _plan("quick"),
  "tiny": _plan("tiny"),
}
