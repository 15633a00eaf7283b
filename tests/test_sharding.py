"""Meta-training sharded over a device mesh (`learned_rules/sharding.py`), on the 8 CPU devices of
`conftest.py`: the same numbers as one device, the declared shardings, checkpoints across meshes, and
two processes joined by `jax.distributed`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from learned_rules import checkpointing, meta_train, metrics, sharding
from learned_rules import config as config_lib
from learned_rules.configs import remember

BATCH = 8
STEPS = 2


def _config(variant: str = "tiny"):
  cfg = remember.get_config(variant)
  cfg.train.batch_size = BATCH
  return cfg


def _steps(cfg, mesh=None, steps: int = STEPS):
  """`steps` meta steps of `cfg`, unsharded (`mesh` None) or as the trainer runs them on `mesh`."""
  topos, meta_batch, optimizer = meta_train.setup_meta_batch(cfg)
  if mesh is not None:
    topos, meta_batch = meta_train.on_mesh(topos, meta_batch, mesh)
  state = meta_train.initial_train_state(topos, meta_batch, optimizer, cfg.seed)
  meta_step = meta_train.make_run_meta_step(topos, meta_batch, optimizer, cfg.seed)
  for _ in range(steps):
    state, step_metrics = meta_step(state, topos)
  return state, step_metrics


@pytest.fixture(scope="module")
def streaming_runs():
  """The streaming protocol (its carried network state is sharded too): one device, and 8 devices
  as (batch 8 x neurons 1) and (batch 2 x neurons 4)."""
  cfg = _config("tiny,streaming")
  return {
    shape: _steps(cfg, None if shape is None else sharding.make_mesh(*shape))
    for shape in (None, (8, 1), (2, 4))
  }


def _assert_same(a, b, trees_close):
  state_a, metrics_a = a
  state_b, metrics_b = b
  trees_close(state_b.theta, state_a.theta, rtol=1e-5, atol=1e-6)
  trees_close(state_b.opt_state, state_a.opt_state, rtol=1e-5, atol=1e-6)
  trees_close(metrics_b, metrics_a, rtol=1e-5, atol=1e-6)


def test_eight_devices_are_there():
  assert jax.device_count() == 8  # conftest.py's --xla_force_host_platform_device_count


def test_data_parallel_step_equals_one_device(trees_close):
  cfg = _config()
  mesh = sharding.make_mesh()
  assert dict(mesh.shape) == {"batch": 8, "neurons": 1}
  _assert_same(_steps(cfg), _steps(cfg, mesh), trees_close)


@pytest.mark.slow  # the two-size meta step compiled twice: about a minute
def test_a_two_size_meta_batch_sharded_equals_one_device(trees_close):
  """A meta-batch of two network sizes at two K (`:mixture`) on a (batch 4 x neurons 2) mesh: the same
  train state and metrics as on one device."""
  cfg = _config("tiny,mixture")
  _assert_same(_steps(cfg), _steps(cfg, sharding.make_mesh(4, 2)), trees_close)


@pytest.mark.slow  # the streaming runs on three meshes: about 15 s
def test_sharded_streams_equal_one_device_and_carry_their_shardings(streaming_runs, trees_close):
  for shape in ((8, 1), (2, 4)):
    _assert_same(streaming_runs[None], streaming_runs[shape], trees_close)
    state, step_metrics = streaming_runs[shape]
    trees_close(state.carries, streaming_runs[None][0].carries, rtol=1e-5, atol=1e-6)
    mesh = jax.tree.leaves(state.theta)[0].sharding.mesh
    assert dict(mesh.shape) == {"batch": shape[0], "neurons": shape[1]}
    replicated = NamedSharding(mesh, P())
    for leaf in jax.tree.leaves((state.theta, state.opt_state, state.step, step_metrics)):
      assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
    for block in state.carries[0].net_state.synapses:  # [B, post, pre, Ds]: batch and post neurons split
      assert block.sharding.is_equivalent_to(NamedSharding(mesh, P("batch", "neurons")), block.ndim)
      assert block.addressable_shards[0].data.shape == (
        BATCH // shape[0],
        block.shape[1] // shape[1],
        *block.shape[2:],
      )
    bodies = state.carries[0].net_state.bodies
    assert bodies.sharding.is_equivalent_to(NamedSharding(mesh, P("batch")), bodies.ndim)


def test_neuron_sharded_step_equals_unsharded(trees_close):
  """Episodes (nothing carried): synapses split over 4 devices along the post neurons."""
  cfg = _config()
  _assert_same(_steps(cfg), _steps(cfg, sharding.make_mesh(2, 4)), trees_close)


@pytest.mark.slow  # shares the streaming runs of the test above
def test_checkpoint_of_8_devices_restores_onto_one_device_and_a_2x4_mesh(
  streaming_runs, tmp_path, trees_close
):
  cfg = _config("tiny,streaming")
  saved, _ = streaming_runs[(8, 1)]
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(STEPS, saved, cfg)

  topos, meta_batch, optimizer = meta_train.setup_meta_batch(cfg)
  one = ckpt.restore(meta_train.initial_train_state(topos, meta_batch, optimizer, cfg.seed))
  trees_close(one, saved)
  assert all(len(leaf.devices()) == 1 for leaf in jax.tree.leaves(one))

  mesh = sharding.make_mesh(2, 4)
  topos, meta_batch = meta_train.on_mesh(topos, meta_batch, mesh)
  onto = ckpt.restore(meta_train.initial_train_state(topos, meta_batch, optimizer, cfg.seed))
  ckpt.close()
  trees_close(onto, saved)
  expected = meta_train.state_shardings(topos, meta_batch, optimizer)
  for leaf, want in zip(jax.tree.leaves(onto), jax.tree.leaves(expected), strict=True):
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim)


def test_meshes_that_do_not_fit_are_config_errors():
  cfg = _config()
  cfg.mesh.neurons = 3
  with pytest.raises(config_lib.ConfigError, match="mesh.neurons: 3 does not divide the 8 devices"):
    meta_train.make_mesh(config_lib.train_spec(cfg))
  cfg.mesh.neurons, cfg.mesh.batch = 2, 8
  with pytest.raises(config_lib.ConfigError, match=r"mesh.batch x mesh.neurons: 8 x 2 does not fit the 8"):
    meta_train.make_mesh(config_lib.train_spec(cfg))
  cfg.mesh.batch = 2  # a smaller mesh takes the first devices
  assert meta_train.make_mesh(config_lib.train_spec(cfg)).devices.flatten().tolist() == jax.devices()[:4]
  cfg.mesh.batch, cfg.train.batch_size = 0, 6
  with pytest.raises(config_lib.ConfigError, match="train.batch_size: 6 episodes do not split over the 4"):
    meta_train.make_mesh(config_lib.train_spec(cfg))
  cfg.mesh.batch = -1
  with pytest.raises(config_lib.ConfigError, match="mesh.batch"):
    config_lib.validate(cfg)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch_two(repo_root, env, args, workdir):
  port = _free_port()
  return [
    subprocess.Popen(
      [
        sys.executable, "-m", "experiments.remember", *args, f"--workdir={workdir}", "--distributed",
        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
      ],
      cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for i in range(2)
  ]  # fmt: skip


def _two_processes(repo_root, env, args, workdir):
  procs = _launch_two(repo_root, env, args, workdir)
  outputs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 0, f"stdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}"
  return outputs


TWO_PROCESS_ARGS = [
  "--config=learned_rules/configs/remember.py:tiny",
  "--config.train.batch_size=4",
  "--config.train.log_every=1",
  "--config.mesh.batch=0",
  "--config.baseline_synapses_off=False",
]


def _two_process_env():
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(
    "--xla_force_host_platform_device_count=8", "--xla_force_host_platform_device_count=2"
  )
  return env


@pytest.mark.slow  # two OS processes, each compiling its own programs: about a minute
def test_two_processes_match_one(repo_root, tmp_path):
  """Two processes of 2 CPU devices each, joined by jax.distributed on 127.0.0.1 (gloo collectives),
  run two meta steps over a (4 x 1) mesh, then resume from the checkpoint both wrote for a third:
  process 0 logs the numbers of one process running all three steps, and the final checkpoint
  restores to its parameters."""
  args, env = TWO_PROCESS_ARGS, _two_process_env()
  multi = str(tmp_path / "multi")
  outputs = _two_processes(repo_root, env, [*args, f"--config.train.num_steps={STEPS}"], multi)
  assert "mesh batch=4 x neurons=1 over 4 cpu device(s) in 2 process(es)" in outputs[0][1]
  assert "Held-out recall" in outputs[0][0] and "Held-out recall" not in outputs[1][0]  # process 0 only
  resumed = _two_processes(repo_root, env, [*args, f"--config.train.num_steps={STEPS + 1}"], multi)
  assert f"resumed from step {STEPS}" in resumed[0][1]

  # The same three steps in this process, on one device.
  single = str(tmp_path / "single")
  cfg = remember.get_config("tiny")
  cfg.train.batch_size, cfg.train.log_every, cfg.train.num_steps = 4, 1, STEPS + 1
  cfg.mesh.batch, cfg.baseline_synapses_off = 1, False
  meta_train.train_and_evaluate(cfg, single, evaluate=False)

  def training(path):
    return [r for r in metrics.read_metrics(os.path.join(path, "metrics.jsonl")) if "loss" in r]

  got, want = training(multi), training(single)
  assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3]
  for g, w in zip(got, want, strict=True):
    assert g.keys() == w.keys()
    for name in g:
      assert g[name] == pytest.approx(w[name], rel=1e-5, abs=1e-6), name
  _, _, multi_state = meta_train.load_run(multi)
  _, _, single_state = meta_train.load_run(single)
  assert int(multi_state.step) == STEPS + 1
  for a, b in zip(jax.tree.leaves(multi_state.theta), jax.tree.leaves(single_state.theta), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  with open(os.path.join(multi, "summary.json")) as f:
    assert json.load(f)["meta_steps"] == STEPS + 1


def _training_steps(workdir) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  return len([r for r in metrics.read_metrics(path) if "loss" in r]) if os.path.exists(path) else 0


@pytest.mark.slow  # three two-process runs: about two minutes
def test_sigterm_to_one_process_stops_both_at_one_step(repo_root, tmp_path):
  """SIGTERM to process 1 only, mid-run: through JAX's preemption sync both processes save the same
  step, one complete checkpoint, and stop (exit 143); rerunning both resumes from it, and the result
  is bit for bit the uninterrupted two-process run's."""
  env, long = _two_process_env(), 10_000
  stopped = str(tmp_path / "stopped")
  args = [*TWO_PROCESS_ARGS, "--config.train.checkpoint_every=100000"]  # the stop's checkpoint only
  procs = _launch_two(repo_root, env, [*args, f"--config.train.num_steps={long}"], stopped)
  deadline = time.monotonic() + 240
  while _training_steps(stopped) < 3 and all(p.poll() is None for p in procs):
    assert time.monotonic() < deadline, "the run did not start training"
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)
  outputs = [p.communicate(timeout=240) for p in procs]
  for p, (_, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
  ckpt = checkpointing.Checkpointer(stopped, create=False)
  steps = ckpt.all_steps()
  ckpt.close()
  assert len(steps) == 1 and 3 <= steps[0] < long  # one checkpoint, of the step where both stopped
  saved = steps[0]
  for _, err in outputs:
    assert f"after step {saved}," in err

  total = saved + 2
  resumed = _two_processes(repo_root, env, [*args, f"--config.train.num_steps={total}"], stopped)
  assert f"resumed from step {saved}" in resumed[0][1]
  straight = str(tmp_path / "straight")
  _two_processes(repo_root, env, [*args, f"--config.train.num_steps={total}"], straight)
  _, _, a = meta_train.load_run(stopped)
  _, _, b = meta_train.load_run(straight)
  assert int(a.step) == int(b.step) == total
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
