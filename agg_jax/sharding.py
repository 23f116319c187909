"""Device mesh, batch and parameter shardings (`pjit` is `jax.jit` with shardings now).

The mesh comes from the config as `[(axis, size), ...]` with at most one size of -1 (all the
remaining devices), e.g. `[("data", -1)]`; one device is a mesh of one. Batches are split over
every mesh axis named "data" or "fsdp". Parameters follow regex rules on their paths
(big_vision style): the first rule that matches decides, "replicate" or "fsdp" (shard the
largest dimension divisible by the fsdp axis, or by "data" when there is no "fsdp" axis).
"""

import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(axes: Sequence[tuple[str, int]], devices=None) -> Mesh:
  """A mesh over all devices (or `devices`) with the named axis sizes."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  names = [name for name, _ in axes]
  sizes = [int(size) for _, size in axes]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {list(axes)}: at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if devices.size % known:
      raise ValueError(f"mesh {list(axes)}: {devices.size} devices do not divide by {known}")
    sizes[sizes.index(-1)] = devices.size // known
  if int(np.prod(sizes)) != devices.size:
    raise ValueError(f"mesh {list(axes)} needs {int(np.prod(sizes))} devices, "
                     f"there are {devices.size}")
  return Mesh(devices.reshape(sizes), names)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  return tuple(name for name in mesh.axis_names if name in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data-parallel axes."""
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh) -> int:
  """Global batch sizes must be multiples of this."""
  return int(np.prod([mesh.shape[name] for name in batch_axes(mesh)]))


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _fsdp_spec(shape: tuple[int, ...], mesh: Mesh) -> P:
  axis = "fsdp" if "fsdp" in mesh.axis_names else "data"
  size = mesh.shape[axis]
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % size == 0 and shape[dim] >= size:
      spec = [None] * len(shape)
      spec[dim] = axis
      return P(*spec)
  return P()


def param_shardings(tree, mesh: Mesh, rules: Sequence[tuple[str, str]]):
  """NamedShardings for every leaf of `tree` (arrays or shape structs) by the first matching rule.

  Leaves that no rule matches are replicated.
  """
  compiled = [(re.compile(pattern), rule) for pattern, rule in rules]
  for _, rule in rules:
    if rule not in ("replicate", "fsdp"):
      raise ValueError(f"sharding rule {rule!r}: use 'replicate' or 'fsdp'")

  def shard(path, leaf):
    name = _path_name(path)
    for pattern, rule in compiled:
      if pattern.search(name):
        spec = _fsdp_spec(tuple(leaf.shape), mesh) if rule == "fsdp" else P()
        return NamedSharding(mesh, spec)
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(shard, tree)


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles each process's rows into global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}
