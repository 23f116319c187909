"""Train-state memory per device and loss curves: one device, data parallel and FSDP on 8 devices.

Memory is computed from shapes alone (jax.eval_shape of train.init_state, with the shardings it
makes): the bytes of parameters, Adam moments and batch-norm statistics each device holds, for
the demo's model (configs/demo.py) and the paper's (configs/default.py). The loss curves train
one model on the same demo batches under each set-up. The script asks for 8 simulated CPU
devices itself (XLA_FLAGS) when it runs on the CPU.

  python bench/bench_sharding.py
  python bench/bench_sharding.py --curve_model=efficientnetv2_tiny --curve_size=32 --steps=6
"""

import os
import sys

DEVICES = 8
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={DEVICES}")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agg_jax import data, models, sharding, train  # noqa: E402
from configs import default as default_config, demo as demo_config  # noqa: E402

flags.DEFINE_string("curve_model", "efficientnetv2_mini", "Backbone the loss curves train.")
flags.DEFINE_integer("curve_size", 64, "Input side of the loss curves' model.")
flags.DEFINE_integer("batch", 32, "Global batch size of the loss curves.")
flags.DEFINE_integer("steps", 10, "Training steps per loss curve.")
FLAGS = flags.FLAGS

# name -> (devices, mesh, sharding_rules); the loss curves use the first three.
SETUPS = {"one device": (1, (("data", 1),), ("replicate",)),
          "data parallel": (DEVICES, (("data", DEVICES),), ("replicate",)),
          "fsdp": (DEVICES, (("fsdp", DEVICES),), ("fsdp",)),
          "data 2 x fsdp 4": (DEVICES, (("data", 2), ("fsdp", DEVICES // 2)), ("fsdp",))}
CURVE_SETUPS = ("one device", "data parallel", "fsdp")
MIB = 2**20


def use_setup(config, name: str):
  """Sets the config's mesh and rules to the set-up's; returns its mesh."""
  devices, config.mesh, config.sharding_rules = SETUPS[name]
  return sharding.make_mesh(config.mesh, jax.devices()[:devices])


def most_on_a_device(tree, shardings) -> int:
  return max(sharding.bytes_per_device(tree, shardings).values())


def print_memory(title: str, config) -> None:
  print(f"\n{title}: {config.model.name}, head {config.model.head}, "
        f"{config.data.image_size}x{config.data.image_size}; MiB on the fullest device")
  print(f"  {'set-up':16s} {'params':>9s} {'Adam mu+nu':>11s} {'state':>9s} {'vs one':>7s}")
  one = None
  for name in SETUPS:
    state, shardings = train.abstract_state(config, use_setup(config, name))
    params = most_on_a_device(state.params, shardings.params)
    moments = most_on_a_device(state.opt_state, shardings.opt_state)
    total = most_on_a_device(state, shardings)
    one = one or total
    print(f"  {name:16s} {params / MIB:9.2f} {moments / MIB:11.2f} {total / MIB:9.2f} "
          f"{total / one:7.3f}")


def loss_curves(config) -> dict[str, list[float]]:
  """Set-up -> losses of the first FLAGS.steps steps on the same demo batches."""
  batches = data.BalancedBatches(data.load(config.data).train, config.train.batch_size,
                                 config.seed, flip=False)
  model = models.from_config(config.model)
  curves = {}
  for name in CURVE_SETUPS:
    mesh = use_setup(config, name)
    state, shardings = train.init_state(model, train.create_optimizer(config), config, mesh,
                                        data.image_shape(config.data))
    step = train.make_train_step(mesh, shardings)
    curves[name] = []
    for i in range(FLAGS.steps):
      state, metrics = step(state, sharding.global_batch(batches.batch(i), mesh))
      curves[name].append(float(metrics["loss"]))
    measured = max(sharding.bytes_per_device(state).values())
    print(f"  {name}: {measured / MIB:.2f} MiB of train state on the fullest device (measured)",
          flush=True)
  return curves


def main(_):
  print(f"{jax.device_count()} {jax.devices()[0].platform} devices")
  print_memory("the demo's model", demo_config.get_config())
  print_memory("the paper's model", default_config.get_config())

  config = demo_config.get_config()
  config.model.name = FLAGS.curve_model
  config.data.image_size = FLAGS.curve_size
  config.data.train_per_class = max(FLAGS.batch, 64)
  config.data.val_per_class = config.data.test_per_class = 2  # not used
  config.train.batch_size = FLAGS.batch
  print(f"\nloss curves: {FLAGS.curve_model} at {FLAGS.curve_size}x{FLAGS.curve_size}, batch "
        f"{FLAGS.batch}, learning rate {config.train.learning_rate} after "
        f"{config.train.warmup_steps} warm-up steps")
  curves = loss_curves(config)
  reference = np.array(curves["one device"])
  print(f"  {'step':>4s} " + " ".join(f"{name:>14s}" for name in CURVE_SETUPS))
  for i in range(FLAGS.steps):
    print(f"  {i + 1:4d} " + " ".join(f"{curves[name][i]:14.6f}" for name in CURVE_SETUPS))
  for name in CURVE_SETUPS[1:]:
    relative = np.abs(np.array(curves[name]) / reference - 1)
    print(f"  {name}: largest relative difference from one device {relative.max():.2e} "
          f"(step {int(relative.argmax()) + 1})")


if __name__ == "__main__":
  app.run(main)
