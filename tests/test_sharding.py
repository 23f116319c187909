"""Parameter sharding: the rule presets, and FSDP on 8 simulated CPU devices training like one
device with a fraction of the parameter memory per device."""

import json
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from agg_jax import data, models, sharding, train
from agg_jax.config_validation import ConfigError
from configs import demo as demo_config
from tests.helpers import REPO

# name -> (devices, mesh, sharding_rules)
SETUPS = {"one device": (1, (("data", 1),), ("replicate",)),
          "data parallel": (8, (("data", 8),), ("replicate",)),
          "fsdp": (8, (("fsdp", 8),), ("fsdp",))}
BIG_KERNEL = ("backbone", "blocks_6", "expand_conv", "kernel")  # (1, 1, 64, 384) in the tiny model


def tiny_config():
  config = demo_config.get_config()
  config.model.name = "efficientnetv2_tiny"
  config.model.hidden = (16,)
  config.data.image_size = 32
  config.data.train_per_class = 16
  config.data.val_per_class = 2
  config.data.test_per_class = 2
  config.train.batch_size = 16
  config.train.warmup_steps = 0
  return config


def leaf(tree, keys):
  for key in keys:
    tree = tree[key]
  return tree


def shard_shapes(array) -> list[list[int]]:
  return [list(shard.data.shape) for shard in array.addressable_shards]


def train_under_each_setup(steps: int = 6) -> dict:
  """Runs in a process with 8 CPU devices. `train.init_state` makes the tiny model's state under
  FSDP; the same values are placed as the other SETUPS place them (one init compiles instead of
  three), and each trains on the same demo batches. Name -> losses, bytes per device, shards of
  two leaves."""
  assert jax.device_count() == 8, jax.devices()
  config = tiny_config()
  batches = data.BalancedBatches(data.load(config.data).train, config.train.batch_size,
                                 config.seed, flip=False)
  model = models.from_config(config.model)
  results, initial = {}, None
  for name in ("fsdp", "one device", "data parallel"):
    devices, config.mesh, config.sharding_rules = SETUPS[name]
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:devices])
    if initial is None:
      state, shardings = train.init_state(model, train.create_optimizer(config), config, mesh,
                                          data.image_shape(config.data))
      initial = jax.device_get(state)
    else:
      shardings = sharding.param_shardings(initial, mesh, config.sharding_rules)
      state = jax.device_put(initial, shardings)
    measured = sharding.bytes_per_device(state)
    assert measured == sharding.bytes_per_device(state, shardings), name  # shapes alone agree
    results[name] = {"bytes": measured, "losses": [],
                     "kernel_shards": shard_shapes(leaf(state.params, BIG_KERNEL)),
                     "bias_shards": shard_shapes(state.params["head"]["aggregate"]["bias"])}
    step = train.make_train_step(mesh, shardings)
    for i in range(steps):
      state, metrics = step(state, sharding.global_batch(batches.batch(i), mesh))
      results[name]["losses"].append(float(metrics["loss"]))
    assert leaf(state.params, BIG_KERNEL).sharding == leaf(shardings.params, BIG_KERNEL)
  return results


def test_fsdp_on_8_devices_trains_like_one_device_with_an_eighth_of_the_big_kernels():
  # LLVM optimisation level 0 compiles much faster; every set-up is compiled alike.
  env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS="--xla_force_host_platform_device_count=8"
             " --xla_backend_optimization_level=0")
  script = ("import json; from tests.test_sharding import train_under_each_setup; "
            "print(json.dumps(train_under_each_setup()))")
  out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads(out.stdout.splitlines()[-1])
  one, dp, fsdp = (results[name] for name in SETUPS)
  # The same global batch, and batch-norm statistics over all of it: only the order of float32
  # sums differs (gradients reduced over 8 shards), which moves the losses by ~1e-6 in these
  # 6 steps. Adam's first steps (~ lr * sign(gradient)) amplify it on near-zero gradients: at
  # 3x this learning rate the 6th loss differs by ~2e-3, at the demo's 1e-3 by < 1e-5.
  np.testing.assert_allclose(fsdp["losses"], one["losses"], rtol=1e-4)
  np.testing.assert_allclose(dp["losses"], one["losses"], rtol=1e-4)

  assert fsdp["kernel_shards"] == [[1, 1, 64, 48]] * 8  # an eighth on each device
  assert dp["kernel_shards"] == [[1, 1, 64, 384]] * 8
  assert fsdp["bias_shards"] == [[1]] * 8  # small leaves stay whole
  total = one["bytes"]["0"]
  assert set(dp["bytes"].values()) == {total}  # data parallel: a whole copy on every device
  assert len(fsdp["bytes"]) == 8 and max(fsdp["bytes"].values()) < 0.4 * total


def test_presets_by_name_and_as_the_command_line_gives_them():
  assert sharding.resolve_rules("fsdp") == sharding.PRESETS["fsdp"]
  assert sharding.resolve_rules(("fsdp",)) == sharding.PRESETS["fsdp"]
  assert sharding.resolve_rules(["replicate"]) == sharding.PRESETS["replicate"]  # config.json
  rules = ((r"head/.*kernel", "fsdp"), (".*", "replicate"))
  assert sharding.resolve_rules(rules) == rules

  argv = ["prog", f"--config={REPO / 'configs' / 'demo.py'}", "--config.sharding_rules=fsdp",
          "--config.mesh=((\"data\",1),(\"fsdp\",-1))"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
  values(argv)
  assert values.config.sharding_rules == ("fsdp",)
  sharding.check_config(values.config, device_count=8)
  assert sharding.resolve_rules(values.config.sharding_rules) == sharding.PRESETS["fsdp"]


@pytest.mark.parametrize("rules, message", [
    ("fdsp", "config.sharding_rules='fdsp': unknown preset; known: replicate, fsdp"),
    (("zero3",), "config.sharding_rules=('zero3',): unknown preset; known: replicate, fsdp"),
    (((".*", "shard"),), "config.sharding_rules=('.*', 'shard'): each rule is (regex, one of"),
    (((".*", "fsdp", -1),), "(regex, 'fsdp', min_size >= 0)"),
    ((("(", "fsdp"),), "config.sharding_rules: '(' is not a regex"),
])
def test_unknown_presets_and_bad_rules_name_the_config_key(rules, message):
  config = ml_collections.ConfigDict({"mesh": (("data", 1),), "sharding_rules": rules})
  with pytest.raises(ConfigError, match=re.escape(message)):
    sharding.check_config(config, device_count=1)


def test_fsdp_preset_splits_big_kernels_and_their_moments_only():
  config = tiny_config()
  config.mesh, config.sharding_rules = (("fsdp", 1),), ("fsdp",)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  state, shardings = train.abstract_state(config, mesh)
  split = set()
  for (path, shape), spec in zip(jax.tree_util.tree_leaves_with_path(state),
                                 jax.tree.leaves(shardings)):
    name = sharding._path_name(path)  # pylint: disable=protected-access
    big_kernel = (name.endswith("/kernel") and ("backbone/" in name or "head/" in name)
                  and int(np.prod(shape.shape)) >= sharding.FSDP_MIN_SIZE)
    assert ("fsdp" in spec.spec) == big_kernel, (name, shape.shape, spec.spec)
    if big_kernel:
      assert shape.shape[spec.spec.index("fsdp")] == max(shape.shape), (name, spec.spec)
      split.add(name)
  assert f"params/{'/'.join(BIG_KERNEL)}" in split
  assert "params/backbone/stem_conv/kernel" not in split  # 216 values: under the min size
  params = {name[len("params/"):] for name in split if name.startswith("params/")}
  for moment in ("mu", "nu"):  # Adam's moments are split as their parameters
    assert params == {name.split(f"/{moment}/")[1] for name in split if f"/{moment}/" in name}

  config.sharding_rules = ("replicate",)
  _, shardings = train.abstract_state(config, mesh)
  assert all(s.spec == jax.sharding.PartitionSpec() for s in jax.tree.leaves(shardings))
