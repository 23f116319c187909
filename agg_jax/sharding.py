"""Device mesh, batch and parameter shardings (`pjit` is `jax.jit` with shardings now).

The mesh comes from the config as `[(axis, size), ...]` with at most one size of -1 (all the
remaining devices), e.g. `[("data", -1)]`; one device is a mesh of one. Batches are split over
every mesh axis named "data" or "fsdp". Parameters follow regex rules on their paths
(big_vision style): the first rule that matches decides, "replicate" or "fsdp" (shard the
largest dimension divisible by the fsdp axis, or by "data" when there is no "fsdp" axis;
`(regex, "fsdp", min_size)` keeps leaves of fewer than min_size values whole). The rules match
the whole train state, so a parameter's Adam moments (`opt_state/.../mu/<its path>`) follow it.
(Where no rule shards, the optimizer keeps them in one vector per group instead, and
checkpoints per parameter: concatenated_update.py.)
`config.sharding_rules` is a tuple of rules or the name of one of PRESETS.
"""

import collections
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from agg_jax.config_validation import ConfigError, require

BATCH_AXES = ("data", "fsdp")
RULES = ("replicate", "fsdp")
# Kernels of fewer values stay whole under the "fsdp" preset (16 KiB in float32): splitting a
# stem or squeeze-excitation kernel would add an all-gather for little memory.
FSDP_MIN_SIZE = 4096
PRESETS = {
    "replicate": ((".*", "replicate"),),
    # The convolution and dense kernels of the backbone and the head, and their Adam moments;
    # biases, batch-norm parameters and statistics stay whole.
    "fsdp": ((r"(backbone|head)/.*kernel$", "fsdp", FSDP_MIN_SIZE), (".*", "replicate")),
}


def mesh_shape(axes: Sequence[tuple[str, int]], device_count: int) -> dict[str, int]:
  """Axis name -> size of the mesh `config.mesh` describes on `device_count` devices (a size of
  -1 takes the remaining devices); ConfigError when the axes do not fit the devices."""
  require(isinstance(axes, (list, tuple)) and len(axes) > 0 and all(
      isinstance(axis, (list, tuple)) and len(axis) == 2 and isinstance(axis[0], str)
      and isinstance(axis[1], int) for axis in axes), "mesh", axes,
          "must be ((name, size), ...), e.g. (('data', -1),)")
  names = [name for name, _ in axes]
  sizes = [int(size) for _, size in axes]
  require(sizes.count(-1) <= 1 and all(s > 0 or s == -1 for s in sizes), "mesh", axes,
          "sizes must be > 0, and at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    require(device_count % known == 0, "mesh", axes,
            f"does not fit the {device_count} devices (they do not divide by {known})")
    sizes[sizes.index(-1)] = device_count // known
  require(int(np.prod(sizes)) == device_count, "mesh", axes,
          f"needs {int(np.prod(sizes))} devices, there are {device_count}")
  return dict(zip(names, sizes))


def _rule_ok(item) -> bool:
  if not isinstance(item, (list, tuple)):
    return False
  if len(item) == 3:
    return item[1] == "fsdp" and isinstance(item[2], int) and item[2] >= 0
  return len(item) == 2 and item[1] in RULES


def check_rules(rules: Sequence[tuple]) -> None:
  """Each rule is (regex on the parameter path, "replicate" or "fsdp"), or
  (regex, "fsdp", min_size): leaves of fewer than min_size values stay whole."""
  require(isinstance(rules, (list, tuple)), "sharding_rules", rules,
          f"must be ((regex, rule), ...) or a preset: {', '.join(PRESETS)}")
  for item in rules:
    require(_rule_ok(item), "sharding_rules", item,
            f"each rule is (regex, one of {RULES}) or (regex, 'fsdp', min_size >= 0)")
    try:
      re.compile(item[0])
    except (re.error, TypeError) as e:
      raise ConfigError(f"config.sharding_rules: {item[0]!r} is not a regex ({e})") from None


def resolve_rules(rules: Sequence[tuple] | str) -> tuple:
  """The rules `config.sharding_rules` gives: its tuple of rules, or the preset it names (a
  string, or a 1-tuple of one: `--config.sharding_rules=fsdp` parses to ("fsdp",)); checked."""
  name = rules[0] if (isinstance(rules, (list, tuple)) and len(rules) == 1
                      and isinstance(rules[0], str)) else rules
  if isinstance(name, str):
    require(name in PRESETS, "sharding_rules", rules,
            f"unknown preset; known: {', '.join(PRESETS)}, or rules ((regex, rule), ...)")
    return PRESETS[name]
  check_rules(rules)
  return tuple(rules)


def shards_parameters(rules: Sequence[tuple] | str) -> bool:
  """Whether the rules (`config.sharding_rules`) may split a parameter over devices: whether
  any of them is "fsdp"."""
  return any(rule == "fsdp" for _, rule, *_ in resolve_rules(rules))


def check_config(config, device_count: int) -> None:
  """Checks `config.mesh` against the devices and `config.sharding_rules`."""
  mesh_shape(config.mesh, device_count)
  resolve_rules(config.sharding_rules)


def batch_divisor(axes: Sequence[tuple[str, int]], device_count: int) -> int:
  """Global batch sizes must be multiples of this: the devices along the batch axes."""
  shape = mesh_shape(axes, device_count)
  return int(np.prod([size for name, size in shape.items() if name in BATCH_AXES]))


def make_mesh(axes: Sequence[tuple[str, int]], devices=None) -> Mesh:
  """A mesh over all devices (or `devices`) with the named axis sizes."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  shape = mesh_shape(axes, devices.size)
  return Mesh(devices.reshape(list(shape.values())), list(shape))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  return tuple(name for name in mesh.axis_names if name in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data-parallel axes."""
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _fsdp_spec(shape: tuple[int, ...], mesh: Mesh, min_size: int = 0) -> P:
  if int(np.prod(shape)) < min_size:
    return P()
  axis = "fsdp" if "fsdp" in mesh.axis_names else "data"
  size = mesh.shape[axis]
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % size == 0 and shape[dim] >= size:
      spec = [None] * len(shape)
      spec[dim] = axis
      return P(*spec)
  return P()


def param_shardings(tree, mesh: Mesh, rules: Sequence[tuple] | str):
  """NamedShardings for every leaf of `tree` (arrays or shape structs) by the first matching rule
  of `rules` (a tuple of rules or a preset's name, as `config.sharding_rules`).

  Leaves that no rule matches are replicated.
  """
  compiled = [(re.compile(pattern), *action) for pattern, *action in resolve_rules(rules)]

  def shard(path, leaf):
    name = _path_name(path)
    for pattern, rule, *min_size in compiled:
      if pattern.search(name):
        spec = _fsdp_spec(tuple(leaf.shape), mesh, *min_size) if rule == "fsdp" else P()
        return NamedSharding(mesh, spec)
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(shard, tree)


def bytes_per_device(tree, shardings=None) -> dict[int, int]:
  """Device id -> bytes of `tree` it holds: its arrays' addressable shards or, given the
  matching tree of `shardings` (`param_shardings`), the shards they give its leaves (shape
  structs suffice: nothing is allocated)."""
  totals = collections.Counter()
  if shardings is None:
    for leaf in jax.tree.leaves(tree):
      for shard in leaf.addressable_shards:
        totals[shard.device.id] += shard.data.nbytes
    return dict(totals)

  def add(leaf, leaf_sharding):
    shard_shape = leaf_sharding.shard_shape(tuple(leaf.shape))
    size = int(np.prod(shard_shape)) * np.dtype(leaf.dtype).itemsize
    for device in leaf_sharding.device_set:
      totals[device.id] += size

  jax.tree.map(add, tree, shardings)
  return dict(totals)


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles each process's rows into global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}
