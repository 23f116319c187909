"""Train-step throughput of the aggregated model: shifted depthwise convolution vs XLA's grouped.

Depthwise convolutions are written as k*k shifted multiply-adds because XLA's grouped
convolution is slow on CPU (docs/architecture.md). This measures the whole jitted train step
(forward, backward, AdamW) both ways in the same run and prints the ratio.

  python bench/bench_train_step.py --model=efficientnetv2_mini --size=64 --batch=32
  python bench/bench_train_step.py --model=efficientnetv2_s --size=256 --batch=8 --steps=3
"""

import os
import sys
import time

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agg_jax import models, sharding, train  # noqa: E402
from configs import default as default_config  # noqa: E402

flags.DEFINE_string("model", "efficientnetv2_mini", "Backbone name.")
flags.DEFINE_integer("size", 64, "Input side.")
flags.DEFINE_integer("batch", 32, "Global batch size.")
flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up step).")
FLAGS = flags.FLAGS


def time_train_step(depthwise: str) -> tuple[float, float]:
  """(compile seconds, seconds per step) of the jitted train step."""
  config = default_config.get_config()
  config.model.name = FLAGS.model
  mesh = sharding.make_mesh(config.mesh)
  model = models.create(FLAGS.model, depthwise=depthwise)
  state, shardings = train.init_state(model, train.create_optimizer(config), config, mesh,
                                      (FLAGS.size, FLAGS.size, 3))
  step = train.make_train_step(mesh, shardings)
  rng = np.random.default_rng(0)
  batch = sharding.global_batch({
      "images": rng.integers(0, 256, (FLAGS.batch, FLAGS.size, FLAGS.size, 3), np.uint8),
      "labels": np.tile(np.float32([0, 1]), FLAGS.batch // 2)}, mesh)
  start = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  return compile_s, (time.perf_counter() - start) / FLAGS.steps


def main(_):
  print(f"{FLAGS.model} at {FLAGS.size}x{FLAGS.size}, batch {FLAGS.batch}, "
        f"{jax.devices()[0].platform}")
  results = {impl: time_train_step(impl) for impl in ("shifted", "xla")}
  for impl, (compile_s, step_s) in results.items():
    print(f"  depthwise={impl:8s} compile {compile_s:6.1f} s   step {step_s * 1e3:8.1f} ms   "
          f"{FLAGS.batch / step_s:7.1f} images/s")
  ratio = results["xla"][1] / results["shifted"][1]
  print(f"shifted is {ratio:.2f}x the speed of XLA grouped convolution (train step)")


if __name__ == "__main__":
  app.run(main)
