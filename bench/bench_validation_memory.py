"""Peak resident memory of training steps with validations between them, as the training loop
runs them (train.train_and_evaluate), against the same steps before any validation.

One process: the detector's train step (bench_common.synthetic_train_step) runs --steps steps,
then the prediction (evaluate.make_predict_fn, the training loop's validation) --eval_calls
batches of --eval_batch, --cycles times, then --steps steps again. After each phase it prints
the process's resident size, its peak (VmHWM), glibc's heap (`mallinfo2`: its size, what is
free in it) and the large-block allocator's mappings. The peer is the first phase: training
steps alone, the process's peak before any validation ran; the ratio is the final peak to it.

The process starts itself again with the allocator for XLA's large blocks, as agg_jax.main does
(agg_jax/large_blocks.py says why a run's memory grew without it: glibc 2.36's memalign);
`AGG_JAX_MALLOC=no_large_blocks` shows glibc alone. Whether and when glibc's heap grows varies
from run to run, so run that more than once.

  .venv/bin/python bench/bench_validation_memory.py
  .venv/bin/python bench/bench_validation_memory.py --model=efficientnet_lite0 --batch=32
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import agg_jax  # noqa: E402,F401  (its CPU defaults, before JAX starts)
import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from agg_jax import cpu_defaults, evaluate, large_blocks, models, sharding, train  # noqa: E402
from configs import default as default_config  # noqa: E402

import bench_common  # noqa: E402

flags.DEFINE_string("model", "efficientnetv2_s", "The detector's backbone.")
flags.DEFINE_integer("size", 256, "Image side.")
flags.DEFINE_integer("batch", 16, "Training batch.")
flags.DEFINE_integer("eval_batch", 64, "Validation batch (the default config's eval_batch_size).")
flags.DEFINE_integer("steps", 3, "Training steps per phase.")
flags.DEFINE_integer("eval_calls", 3, "Validation batches per validation.")
flags.DEFINE_integer("cycles", 3, "Validations, each after --steps training steps.")
FLAGS = flags.FLAGS


def resident_gb() -> float:
  with open("/proc/self/statm") as statm:
    return int(statm.read().split()[1]) * cpu_defaults.PAGE / 2**30


def heap() -> str:
  """glibc's heap (its size, what is free in it) and the large-block allocator's mappings (their
  size, what is in use), each where there is one."""
  info, blocks, text = cpu_defaults.heap_info(), large_blocks.stats(), ""
  if info is not None:
    text += f"; heap {info.arena / 2**30:.2f} GB, {info.fordblks / 2**30:.2f} free"
  if blocks is not None:
    text += f"; large blocks {blocks.mapped / 2**30:.2f} GB, {blocks.used / 2**30:.2f} in use"
  return text


def report(phase: str) -> float:
  peak = bench_common.peak_resident_gb()
  print(f"{phase:<24} resident {resident_gb():5.2f} GB, peak {peak:5.2f} GB{heap()}", flush=True)
  return peak


def main(_):
  config = default_config.get_config()
  config.model.name = FLAGS.model
  mesh = sharding.make_mesh(config.mesh)
  model = models.from_config(config.model)
  state, step, batch = bench_common.synthetic_train_step(config, FLAGS.size, FLAGS.batch, model)
  predict = evaluate.make_predict_fn(model, mesh)
  images = np.random.default_rng(1).integers(
      0, 256, (FLAGS.eval_batch, FLAGS.size, FLAGS.size, 3), np.uint8)
  images = sharding.global_batch({"images": images}, mesh)["images"]
  print(f"{FLAGS.model} at {FLAGS.size}x{FLAGS.size}, batch {FLAGS.batch}, validation batch "
        f"{FLAGS.eval_batch}; {FLAGS.steps} steps, then {FLAGS.cycles} x ({FLAGS.eval_calls} "
        f"validation batches, {FLAGS.steps} steps)")

  def train_steps():
    nonlocal state
    for _ in range(FLAGS.steps):
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)

  train_steps()
  alone = report("training alone")
  for cycle in range(1, FLAGS.cycles + 1):
    variables = train.variables_of(state)
    for _ in range(FLAGS.eval_calls):
      np.asarray(predict(variables, images))
    report(f"validation {cycle}")
    train_steps()
    final = report("training after it")
  print(f"peak with validations / peak of training alone: {final:.2f} / {alone:.2f} GB = "
        f"{final / alone:.2f}x")


if __name__ == "__main__":
  large_blocks.start_preloaded()  # as agg_jax.main runs: unless AGG_JAX_MALLOC switches it off
  app.run(main)
