r"""`experiments.remember` with faults injected: the harness of tests/test_reliability.py and of the fault
table in docs/RELIABILITY.md. It is the real command (same flags, same `main`), with at most three
patches installed first, each chosen by an environment variable:

  FAULT_PAUSE_IN_SAVE=S      pause inside orbax's save of step S, after every file of the step is written
                             into its temporary directory and before the rename that commits it
  FAULT_PAUSE_AFTER_STEP=S   pause after meta step S (S counted from 1, as in the logs)
  FAULT_NAN_STEPS=S1,S2,...  poison meta steps S1, S2, ... inside the jitted step (`poison`)
  FAULT_STEP_SECONDS=T       sleep T seconds after every meta step (so that kills at random moments
                             spread over the steps of a run whose steps take milliseconds)
  FAULT_DIR=dir              where a paused process writes `paused` (and waits until `resume` appears)

A paused process can be killed (SIGKILL: a crash at that point) or sent SIGTERM and resumed.

  FAULT_DIR=/tmp/f FAULT_PAUSE_IN_SAVE=4 python tests/fault_harness.py \
      --config=learned_rules/configs/remember.py:tiny --config.baseline_synapses_off=False --workdir=/tmp/r
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from learned_rules import meta_train  # noqa: E402


def poison(objective_and_grads, grad_steps=(), loss_steps=()):
  """`meta_train.objective_and_grads` with NaN gradients at meta steps `grad_steps` and a NaN loss (the
  gradients left finite) at `loss_steps`; steps count from 1, as in the logs. Decided inside the jitted
  step from the step number, so a resumed run is poisoned at the same steps."""
  grad_bad, loss_bad = (jnp.asarray(list(s) or [-1], jnp.int32) for s in (grad_steps, loss_steps))

  def poisoned(state, topos, meta_batch, key):
    metrics, grads, carry = objective_and_grads(state, topos, meta_batch, key)
    number = state.step + 1
    grads = jax.tree.map(lambda g: jnp.where(jnp.any(number == grad_bad), jnp.nan, g), grads)
    loss = jnp.where(jnp.any(number == loss_bad), jnp.nan, metrics["loss"])
    return {**metrics, "loss": loss}, grads, carry

  return poisoned


def _pause(where: str) -> None:
  directory = os.environ["FAULT_DIR"]
  with open(os.path.join(directory, "paused"), "w") as f:
    f.write(where)
  while not os.path.exists(os.path.join(directory, "resume")):
    time.sleep(0.02)


def _pause_in_save(step: int) -> None:
  from orbax.checkpoint._src.path import atomicity

  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def paused_finalize(self, *args, **kwargs):
    if self._final_path.name == str(step):
      _pause(f"saving step {step}: {self._tmp_path}")
    return await finalize(self, *args, **kwargs)

  atomicity.AtomicRenameTemporaryPath.finalize = paused_finalize


def _pause_after_step(step: int) -> None:
  make = meta_train.make_run_meta_step

  def make_paused(*args, **kwargs):
    meta_step = make(*args, **kwargs)

    def paused_step(state, topo):
      state, metrics = meta_step(state, topo)
      if int(state.step) == step:
        _pause(f"after meta step {step}")
      return state, metrics

    return paused_step

  meta_train.make_run_meta_step = make_paused


def _pace(seconds: float) -> None:
  make = meta_train.make_run_meta_step

  def make_paced(*args, **kwargs):
    meta_step = make(*args, **kwargs)

    def paced_step(state, topo):
      out = meta_step(state, topo)
      time.sleep(seconds)
      return out

    return paced_step

  meta_train.make_run_meta_step = make_paced


def install_from_environment() -> None:
  if "FAULT_STEP_SECONDS" in os.environ:
    _pace(float(os.environ["FAULT_STEP_SECONDS"]))
  if "FAULT_PAUSE_IN_SAVE" in os.environ:
    _pause_in_save(int(os.environ["FAULT_PAUSE_IN_SAVE"]))
  if "FAULT_PAUSE_AFTER_STEP" in os.environ:
    _pause_after_step(int(os.environ["FAULT_PAUSE_AFTER_STEP"]))
  if os.environ.get("FAULT_NAN_STEPS"):
    steps = [int(s) for s in os.environ["FAULT_NAN_STEPS"].split(",")]
    meta_train.objective_and_grads = poison(meta_train.objective_and_grads, grad_steps=steps)


if __name__ == "__main__":
  from experiments import remember

  install_from_environment()
  remember.cli()
