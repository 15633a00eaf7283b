"""How a meta step splits over device meshes: per-device memory, collectives, and throughput
(`python -m experiments.sharding_report`).

For every (batch x neurons) mesh over all devices (and one device, unsharded), `survey` compiles the
trainer's meta step (`meta_train.make_run_meta_step`, as a run of the config would) and reads the
compiled temporary memory per device and the count of each collective in the program; with `steps` > 0
it also times the meta step (episodes per second, after one warm-up step). Emulated CPU devices
(`--xla_force_host_platform_device_count`) share the host's cores: their memory and collectives are
the real partitioning, their timings are not a speed-up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import jax

from learned_rules import config as config_lib
from learned_rules import meta_train, sharding

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def meshes(num_devices: int) -> list[tuple[int, int] | None]:
  """None (one device, unsharded), then every `(batch, neurons)` shape of `num_devices` devices."""
  shapes = [(num_devices // n, n) for n in range(1, num_devices + 1) if num_devices % n == 0]
  return [None, *shapes]


def _count_collectives(hlo_text: str) -> dict[str, int]:
  """How often each of `COLLECTIVES` (or its async `-start`) is called in a compiled program's text."""
  return {c: hlo_text.count(f" {c}(") + hlo_text.count(f" {c}-start(") for c in COLLECTIVES}


def _time_steps(meta_step, state, topos, steps: int) -> float:
  """Seconds of `steps` meta steps after one warm-up step (compilation and first transfers)."""
  state, metrics = meta_step(state, topos)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = meta_step(state, topos)
  jax.block_until_ready(metrics)
  return time.perf_counter() - start


def measure(cfg, shape: tuple[int, int] | None, steps: int) -> dict:
  """The meta step of `cfg` on mesh `shape` (None: one device): `{mesh, temp_mib, <collective>: count}`,
  and `episodes_per_s` if `steps` > 0."""
  topos, meta_batch, optimizer = meta_train.setup_meta_batch(cfg)
  if shape is not None:
    topos, meta_batch = meta_train.on_mesh(topos, meta_batch, sharding.make_mesh(*shape))
  seed = config_lib.train_spec(cfg).seed
  state = meta_train.initial_train_state(topos, meta_batch, optimizer, seed)
  meta_step = meta_train.make_run_meta_step(topos, meta_batch, optimizer, seed)
  compiled = meta_step.lower(state, topos).compile()
  out = {
    "mesh": "1 device" if shape is None else f"{shape[0]} x {shape[1]}",
    "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
    **_count_collectives(compiled.as_text()),
  }
  if steps:
    out["episodes_per_s"] = steps * sum(meta_batch.batches) / _time_steps(meta_step, state, topos, steps)
  return out


def survey(cfg, batch: int, steps: int) -> Iterator[dict]:
  """`measure` of `cfg` with `batch` episodes per meta step on every mesh of `meshes` whose batch axis
  divides `batch`, one mesh at a time (each compiles its own program: minutes for a large network).
  The config's `mesh` block is ignored: every mesh is tried."""
  cfg = config_lib.with_overrides(cfg, {"train.batch_size": batch})
  for shape in meshes(jax.device_count()):
    if shape is None or batch % shape[0] == 0:
      yield measure(cfg, shape, steps)


def describe(cfg, batch: int) -> str:
  """The devices and the network of `cfg` surveyed, in a line. Raises `ConfigError` on an invalid config."""
  config_lib.validate(cfg)
  spec, topo = config_lib.experiment_spec(cfg), config_lib.make_topology(cfg)
  devices = jax.devices()
  return (
    f"{len(devices)} {devices[0].device_kind} device(s); {spec.topology} network of {topo.num_neurons} "
    f"neurons, {topo.num_synapses} synapses; {batch} episodes of {spec.task.num_snippets} snippets"
  )


def format_header(steps: int) -> str:
  head = f"{'mesh (batch x neurons)':<24}{'temp MiB/device':>16}" + "".join(f"{c:>20}" for c in COLLECTIVES)
  return head + (f"{'episodes/s':>12}" if steps else "")


def format_row(r: dict) -> str:
  line = f"{r['mesh']:<24}{r['temp_mib']:>16.1f}" + "".join(f"{r[c]:>20d}" for c in COLLECTIVES)
  return line + (f"{r['episodes_per_s']:>12.2f}" if "episodes_per_s" in r else "")
