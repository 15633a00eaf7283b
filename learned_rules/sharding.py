"""Device meshes and the shardings of meta-training, from one CPU to a TPU pod.

A meta-training run lays its devices out as a 2-D mesh (`jax.make_mesh`) with axes

- `batch`: data parallel. The episodes (or streams) of a meta step, and the network states that
  run them, are split over it; theta and the optimizer state are replicated. The loss is a mean over
  the batch, so its gradient is summed across the axis by the compiler, not by us.
- `neurons`: one network split over devices. Every synapse block `[P, Q, Ds]` is split along its
  post-neuron axis P, and so is the synapse update. A neuron's message sums over its pre neurons,
  which all live with it, so the sum needs no communication; only the activations `[N, Da]` of all
  neurons (small) are gathered each step.

One device is a mesh of shape (1, 1): the same program, with trivial shardings. No `shard_map` is
used: every per-device step here is the same SPMD program, which `jit` partitions from the
shardings declared below. Episodes are drawn inside the jitted step from a replicated key, so under
the batch sharding each device (and so each host) draws only its own episodes.
"""

from __future__ import annotations

import math

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH, NEURONS = "batch", "neurons"


def make_mesh(batch: int = 0, neurons: int = 1, devices=None) -> Mesh:
  """A `(batch, neurons)` mesh over `devices` (default: every device of every process).

  `batch = 0` takes all the devices that `neurons` leaves; a smaller mesh takes the first devices
  (in one process only: a multi-process run uses every device). Raises ValueError if the sizes do
  not fit the devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  if neurons < 1 or len(devices) % neurons:
    raise ValueError(f"mesh.neurons: {neurons} does not divide the {len(devices)} devices")
  batch = batch or len(devices) // neurons
  if batch * neurons > len(devices) or (jax.process_count() > 1 and batch * neurons != len(devices)):
    raise ValueError(
      f"mesh.batch x mesh.neurons: {batch} x {neurons} does not fit the {len(devices)} devices of "
      f"{jax.process_count()} process(es) (a multi-process run uses them all)"
    )
  devices = devices[: batch * neurons]
  return jax.make_mesh((batch, neurons), (BATCH, NEURONS), axis_types=(AxisType.Auto,) * 2, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def net_state_specs(state, batched: bool = True):
  """PartitionSpecs of a `network.NetState` (`[B, ...]` when `batched`): bodies split over the batch
  only, synapse blocks `[B, P, Q, Ds]` over the batch and their post neurons."""
  lead = (BATCH,) if batched else ()
  return type(state)(
    bodies=P(*lead),
    synapses=tuple(P(*lead, NEURONS) for _ in state.synapses),
  )


def constrain(tree, mesh: Mesh | None, spec_fn):
  """`tree` under the sharding constraint `spec_fn(leaf) -> PartitionSpec` on `mesh`; unchanged when
  `mesh` is None (a problem built without one, e.g. for evaluation)."""
  if mesh is None:
    return tree
  return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_fn(x))), tree)


def constrain_net_state(state, mesh: Mesh | None, batched: bool = True):
  if mesh is None:
    return state
  specs = net_state_specs(state, batched)
  return jax.tree.map(
    lambda x, s: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, s)),
    state,
    specs,
    is_leaf=lambda x: isinstance(x, P),
  )


def batch_size_error(batch: int, mesh: Mesh) -> str | None:
  """Why `batch` episodes cannot be split over `mesh`'s batch axis, or None."""
  size = mesh.shape[BATCH]
  if batch % size:
    return f"{batch} episodes do not split over the {size} devices of the mesh's batch axis"
  return None


def describe(mesh: Mesh) -> str:
  kinds = sorted({d.device_kind for d in mesh.devices.flat})
  return (
    f"mesh batch={mesh.shape[BATCH]} x neurons={mesh.shape[NEURONS]} over {math.prod(mesh.devices.shape)} "
    f"{'/'.join(kinds)} device(s) in {jax.process_count()} process(es)"
  )


def _carry_shardings(carry, mesh: Mesh):
  """Shardings of what an estimator carries: every `[B, ...]` stream split with its streams (network
  states as `net_state_specs`, positions and the rest over the batch); anything else replicated."""

  def streams(c):
    net = net_state_specs(c.net_state)
    return type(c)(
      net_state=jax.tree.map(lambda s: NamedSharding(mesh, s), net, is_leaf=lambda x: isinstance(x, P)),
      position=jax.tree.map(lambda _: NamedSharding(mesh, P(BATCH)), c.position),
    )

  is_streams = lambda x: hasattr(x, "net_state") and hasattr(x, "position")  # noqa: E731 (unroll.StreamCarry)
  if is_streams(carry):
    return streams(carry)
  if hasattr(carry, "streams") and hasattr(carry, "window") and is_streams(carry.streams):
    return carry.replace(streams=streams(carry.streams), window=NamedSharding(mesh, P(BATCH)))
  return jax.tree.map(lambda _: replicated(mesh), carry)


def train_state_shardings(state, mesh: Mesh):
  """Shardings of a `meta_train.TrainState`: everything replicated but the streams that its estimators
  carry, which are split with their streams."""
  shardings = jax.tree.map(lambda _: replicated(mesh), state)
  return shardings.replace(carries=tuple(_carry_shardings(c, mesh) for c in state.carries))


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Joins this process to a multi-process run (`jax.distributed.initialize`), before any other JAX
  call. With no arguments, the cluster is discovered (TPU pods, SLURM, ...); otherwise all three
  are needed. On CPU, the cross-process collectives use gloo."""
  given = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in given) and not all(v is not None for v in given):
    raise ValueError(
      "distributed: give all of --coordinator_address, --num_processes and --process_id, or none "
      "(to discover them on a TPU pod or under SLURM)"
    )
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )


def shutdown_distributed() -> None:
  """Leaves a multi-process run at its end, in every process, while JAX is still whole.

  `jax.distributed.shutdown` waits until every process has called it, then disconnects this one;
  process 0 stops the coordinator last. Left to interpreter exit, JAX runs it only after clearing
  its backends, and there process 0 was once seen to abort after its work was done, on a gRPC check
  in the coordinator's shutdown (requests still queued).
  """
  jax.distributed.shutdown()
