r"""How a meta step splits over device meshes: per-device memory, collectives, and throughput.

  python -m experiments.sharding_report                                   # every mesh of the devices
  python -m experiments.sharding_report --config=learned_rules/configs/remember.py:mesh2d --batch=16
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.sharding_report --steps=0

For every (batch x neurons) mesh over all devices (and one device, unsharded), compiles the trainer's
meta step and prints the compiled temporary memory per device, the count of each collective in the
program, and with `--steps` > 0 the meta-gradient throughput (episodes per second, after one warm-up
step). Emulated CPU devices (`--xla_force_host_platform_device_count`) share the host's cores: their
memory and collectives are the real partitioning, their timings are not a speed-up.
"""

from __future__ import annotations

import os
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from experiments import flagutil
from learned_rules import meta_train, sharding

_CONFIG = flagutil.define(
  config_flags.DEFINE_config_file,
  "config",
  os.path.join(os.path.dirname(__file__), "configs", "remember.py") + ":mesh2d",
  "Experiment config file[:variant] (its mesh block is ignored: every mesh is tried).",
)
_BATCH = flagutil.define(
  flags.DEFINE_integer, "batch", 8, "Episodes per meta step (divisible by every mesh's batch axis)."
)
_STEPS = flagutil.define(
  flags.DEFINE_integer, "steps", 3, "Timed meta steps per mesh (0: memory and collectives only)."
)

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def meshes(num_devices: int) -> list[tuple[int, int] | None]:
  shapes = [(num_devices // n, n) for n in range(1, num_devices + 1) if num_devices % n == 0]
  return [None, *shapes]


def measure(cfg, shape, batch: int, steps: int) -> dict:
  topo, problem, optimizer = meta_train.setup(cfg)
  if shape is not None:
    topo, problem = meta_train.on_mesh(topo, problem, sharding.make_mesh(*shape))
  state = meta_train.initial_train_state(topo, problem, optimizer, batch, cfg.seed)
  meta_step = meta_train.make_run_meta_step(topo, problem, optimizer, batch, cfg.seed)
  compiled = meta_step.lower(state, topo).compile()
  text = compiled.as_text()
  out = {
    "mesh": "1 device" if shape is None else f"{shape[0]} x {shape[1]}",
    "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
    **{c: text.count(f" {c}(") + text.count(f" {c}-start(") for c in COLLECTIVES},
  }
  if steps:
    state, metrics = meta_step(state, topo)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = meta_step(state, topo)
    jax.block_until_ready(metrics)
    out["episodes_per_s"] = steps * batch / (time.perf_counter() - start)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = _CONFIG.value
  topo, _, _ = meta_train.setup(cfg)
  devices = jax.devices()
  print(
    f"{len(devices)} {devices[0].device_kind} device(s); {cfg.net.topology} network of {topo.num_neurons} "
    f"neurons, {topo.num_synapses} synapses; {_BATCH.value} episodes of {cfg.task.num_snippets} snippets"
  )
  header = f"{'mesh (batch x neurons)':<24}{'temp MiB/device':>16}" + "".join(f"{c:>20}" for c in COLLECTIVES)
  print(header + (f"{'episodes/s':>12}" if _STEPS.value else ""))
  for shape in meshes(len(devices)):
    if shape is not None and _BATCH.value % shape[0]:
      continue
    r = measure(cfg, shape, _BATCH.value, _STEPS.value)
    line = f"{r['mesh']:<24}{r['temp_mib']:>16.1f}" + "".join(f"{r[c]:>20d}" for c in COLLECTIVES)
    print(line + (f"{r['episodes_per_s']:>12.2f}" if _STEPS.value else ""), flush=True)


if __name__ == "__main__":
  app.run(main)
