"""Train-step throughput of the aggregated model, two variants measured in the same run.

--compare=depthwise: depthwise convolutions as k*k shifted multiply-adds against XLA's grouped
convolution, which is slow on CPU (docs/architecture.md). --compare=dtype: float32 against
bfloat16 mixed precision (`model.dtype`). --compare=cpu_kernels: the C++ kernels
(agg_jax/models/cpu_kernels.py: the depthwise kernel gradient, the batch norm's passes)
against XLA's forms of the same computations (`cpu_kernels.suspended`). The whole jitted train
step (forward, backward, AdamW) is timed in alternating rounds after a warm-up; medians and the
ratio are printed.

  python bench/bench_train_step.py --model=efficientnetv2_mini --size=64 --batch=32
  python bench/bench_train_step.py --compare=dtype --model=efficientnetv2_mini --size=64
  python bench/bench_train_step.py --model=efficientnetv2_s --size=256 --batch=8 --steps=3
  python bench/bench_train_step.py --compare=cpu_kernels --model=mobilenetv2 --size=128
"""

import contextlib
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_common  # noqa: E402
from agg_jax import models  # noqa: E402
from agg_jax.models import cpu_kernels  # noqa: E402
from configs import default as default_config  # noqa: E402

flags.DEFINE_string("model", "efficientnetv2_mini", "Backbone name.")
flags.DEFINE_integer("size", 64, "Input side.")
flags.DEFINE_integer("batch", 32, "Global batch size.")
flags.DEFINE_integer("steps", 10, "Timed steps per round (after one warm-up step).")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the median round is reported.")
flags.DEFINE_enum("compare", "depthwise", ["depthwise", "dtype", "cpu_kernels"],
                  "What the two variants are.")
FLAGS = flags.FLAGS


# variant -> the backbone's fields, and whether the step is traced with the C++ kernels.
VARIANTS = {"depthwise": {"shifted": {"depthwise": "shifted"}, "xla": {"depthwise": "xla"}},
            "dtype": {"float32": {"dtype": jnp.float32}, "bfloat16": {"dtype": jnp.bfloat16}},
            "cpu_kernels": {"cpp": {}, "xla_forms": {"with_cpu_kernels": False}}}


def make_step(with_cpu_kernels=True, **backbone_fields):
  """(compile seconds, a function that times FLAGS.steps steps) of the jitted train step, traced
  with the C++ kernels or, `with_cpu_kernels=False`, with XLA's forms."""
  config = default_config.get_config()
  config.model.name = FLAGS.model
  state, step, batch = bench_common.synthetic_train_step(
      config, FLAGS.size, FLAGS.batch, models.create(FLAGS.model, **backbone_fields))
  start = time.perf_counter()
  with contextlib.nullcontext() if with_cpu_kernels else cpu_kernels.suspended():
    state, metrics = step(state, batch)  # traced and compiled here
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  holder = [state]

  def timed() -> float:
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      holder[0], metrics = step(holder[0], batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / FLAGS.steps

  timed()  # warm-up
  return compile_s, timed


def main(_):
  print(f"{FLAGS.model} at {FLAGS.size}x{FLAGS.size}, batch {FLAGS.batch}, "
        f"{jax.devices()[0].platform}; {FLAGS.rounds} alternating rounds of {FLAGS.steps} steps")
  variants = VARIANTS[FLAGS.compare]
  steps = {name: make_step(**fields) for name, fields in variants.items()}
  rounds = {name: [] for name in variants}
  for _ in range(FLAGS.rounds):
    for name, (_, timed) in steps.items():
      rounds[name].append(timed())
  medians = {name: float(np.median(times)) for name, times in rounds.items()}
  for name, step_s in medians.items():
    print(f"  {FLAGS.compare}={name:8s} compile {steps[name][0]:6.1f} s   step "
          f"{step_s * 1e3:8.1f} ms   {FLAGS.batch / step_s:7.1f} images/s")
  first, second = variants
  print(f"{first} is {medians[second] / medians[first]:.2f}x the speed of {second} (train step)")


if __name__ == "__main__":
  app.run(main)
