"""Where a detector's time goes, stage by stage: seconds of a jitted forward pass (--task=infer)
or forward and backward pass (--task=train: gradients by every parameter, batch statistics
updated; no optimizer) of the backbone cut after each stage (`num_blocks`), and of the whole
detector, gradients compiled as the training step is. A stage's time is the difference between
consecutive cuts; "aggregation head" is the detector's time less the whole backbone's. Cuts are
timed in alternating rounds after a warm-up and medians reported.

  python bench/profile_stages.py
  python bench/profile_stages.py --task=infer
  python bench/profile_stages.py --model=efficientnet_lite0 --batch=32
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import agg_jax  # noqa: E402,F401  (its CPU defaults, before JAX starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from agg_jax import models  # noqa: E402

import bench_common  # noqa: E402

flags.DEFINE_string("model", "efficientnetv2_s", "Backbone (an EfficientNet of the registry).")
flags.DEFINE_integer("size", 256, "Input side.")
flags.DEFINE_integer("batch", 16, "Batch size.")
flags.DEFINE_enum("task", "train", ["train", "infer"], "Forward and backward, or forward only.")
flags.DEFINE_integer("steps", 2, "Timed calls per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the median round is reported.")
FLAGS = flags.FLAGS


def timed_call(model, images):
  """A function running the jitted forward (and backward) pass of `model` on `images`."""
  variables = jax.jit(lambda: model.init(jax.random.key(0), images[:1]))()
  rngs = {"dropout": jax.random.key(1)}

  def loss(params):
    out, updates = model.apply({**variables, "params": params}, images, train=True, rngs=rngs,
                               mutable=["batch_stats"])
    if isinstance(out, tuple):  # a cut backbone: (None, endpoints); its last block's output
      out = list(out[1].values())[-1]
    return jnp.mean(jnp.square(out.astype(jnp.float32))), updates

  if FLAGS.task == "train":
    call = bench_common.jit_training(jax.grad(loss, has_aux=True))
  else:
    call = jax.jit(lambda params: model.apply({**variables, "params": params}, images))
  return lambda: jax.block_until_ready(call(variables["params"]))


def main(_):
  backbone = models.create_backbone(FLAGS.model)
  cuts, ends = [], 0
  for index, stage in enumerate(backbone.stages()):
    ends += stage.repeats
    cuts.append((f"stage {index + 1} ({stage.repeats} x {stage.kind}, {stage.channels} ch)",
                 ends))
  images = jnp.asarray(np.random.default_rng(0).integers(
      0, 256, (FLAGS.batch, FLAGS.size, FLAGS.size, 3), np.uint8))
  calls = {name: timed_call(models.create_backbone(FLAGS.model, include_top=False,
                                                   num_blocks=blocks), images)
           for name, blocks in cuts}
  calls["aggregation head"] = timed_call(models.create(FLAGS.model), images)
  compile_s = {}
  for name, call in calls.items():
    start = time.perf_counter()
    call()
    compile_s[name] = time.perf_counter() - start
    call()  # warm-up
  rounds = {name: [] for name in calls}
  for _ in range(FLAGS.rounds):
    for name, call in calls.items():
      start = time.perf_counter()
      for _ in range(FLAGS.steps):
        call()
      rounds[name].append((time.perf_counter() - start) / FLAGS.steps)
  cumulative = {name: float(np.median(times)) for name, times in rounds.items()}
  print(f"{FLAGS.task}: {FLAGS.model} + aggregation head at {FLAGS.size}x{FLAGS.size}, batch "
        f"{FLAGS.batch}, {jax.devices()[0].device_kind} ({os.cpu_count()} CPUs); median of "
        f"{FLAGS.rounds} alternating rounds of {FLAGS.steps} calls")
  print(f"{'part (stage 1 includes the stem)':40s} {'ms':>9s} {'share':>6s} {'cumulative ms':>14s}")
  previous, total = 0.0, cumulative["aggregation head"]
  for name, seconds in cumulative.items():
    part = seconds - previous
    print(f"{name:40s} {part * 1e3:9.1f} {part / total:6.1%} {seconds * 1e3:14.1f}")
    previous = seconds
  print(f"whole detector: {FLAGS.batch / total:.2f} images/s; compile of the detector "
        f"{compile_s['aggregation head']:.1f} s")


if __name__ == "__main__":
  app.run(main)
