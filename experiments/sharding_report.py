r"""How a meta step splits over device meshes: per-device memory, collectives, and throughput.

  python -m experiments.sharding_report                                   # every mesh of the devices
  python -m experiments.sharding_report --config=learned_rules/configs/remember.py:mesh2d --batch=16
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.sharding_report --steps=0

For every (batch x neurons) mesh over all devices (and one device, unsharded), compiles the trainer's
meta step of the config (default: the `mesh2d` network of 256 neurons,
learned_rules/configs/sharding_report.py) and prints the compiled temporary memory per device, the
count of each collective in the program, and with `--steps` > 0 the meta-gradient throughput (episodes
per second, after one warm-up step), one mesh at a time (`learned_rules.mesh_survey`); then writes the
rows to `<workdir>/sharding_report.json`. Emulated CPU devices (`--xla_force_host_platform_device_count`)
share the host's cores: their memory and collectives are the real partitioning, their timings are not
a speed-up.

Exit status: 0 done; 2 a bad config or flag; see experiments/harness.py.
"""

from __future__ import annotations

import jax
from absl import flags

from experiments import harness
from learned_rules import files, mesh_survey


def main(cfg, workdir: str, opts) -> list[dict]:
  if opts.batch < 1 or opts.steps < 0:
    raise harness.UsageError("--batch must be >= 1 and --steps >= 0")
  print(mesh_survey.describe(cfg, opts.batch))
  print(mesh_survey.format_header(opts.steps))
  rows = []
  for row in mesh_survey.survey(cfg, opts.batch, opts.steps):
    print(mesh_survey.format_row(row), flush=True)
    rows.append(row)
  devices = {"devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind}
  report = {**devices, "batch": opts.batch, "steps": opts.steps, "rows": rows}
  files.write_json(files.join(workdir, "sharding_report.json"), report)
  print(f"wrote {workdir}/sharding_report.json")
  return rows


if __name__ == "__main__":
  harness.run(
    main,
    config="sharding_report",
    workdir="runs/sharding_report",
    workdir_help="Where to write sharding_report.json (default runs/sharding_report).",
    options={
      "batch": (flags.DEFINE_integer, 8, "Episodes per meta step (meshes whose batch axis divides it)."),
      "steps": (flags.DEFINE_integer, 3, "Timed meta steps per mesh (0: memory and collectives only)."),
    },
  )
