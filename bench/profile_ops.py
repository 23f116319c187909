"""Where a compiled step's time goes, operation by operation: JAX's profiler traces a few calls,
and each XLA:CPU fusion it recorded is named by the model operation it comes from (its HLO
`op_name`, block indices removed so that the same layer of every block adds up). The trace has
no events of their own for matmuls and most convolutions, so the listed total falls short of the
step by their time. This is how the depthwise convolution's slow backward pass was found
(docs/architecture.md, "Speed and memory on CPU").

  python bench/profile_ops.py --stages=5             # one stage-5 block of EfficientNetV2-S
  python bench/profile_ops.py --target=detector --task=infer
  python bench/profile_ops.py --target=detector --task=train --top=40
  python bench/profile_ops.py --target=detector --model=mobilenetv2 --size=128 --batch=32
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import agg_jax  # noqa: E402,F401  (its CPU defaults, before JAX starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from agg_jax import models  # noqa: E402

import bench_blocks  # noqa: E402  (its flags: --stages, --first, --size, --batch, --task)
import bench_common  # noqa: E402

flags.DEFINE_enum("target", "block", ["block", "detector"],
                  "One block of EfficientNetV2-S (the first of --stages), or the whole detector.")
flags.DEFINE_enum("model", "efficientnetv2_s", sorted(models.BACKBONES),
                  "The detector's backbone (--target=detector).")
flags.DEFINE_integer("calls", 3, "Traced calls (after two untraced ones); times are per call.")
flags.DEFINE_integer("top", 25, "How many operations to list.")
FLAGS = flags.FLAGS


def block_call():
  """(jitted function, arguments): one block, forward (+ backward) in training mode."""
  stage, shape = bench_blocks.stage_inputs(FLAGS.size, FLAGS.first)[int(FLAGS.stages[0]) - 1]
  module = bench_blocks.block(stage, FLAGS.first, shape[-1])
  if FLAGS.task == "train":
    return bench_common.module_grad(module, (FLAGS.batch, *shape), train=True)
  x = jax.random.normal(jax.random.key(0), (FLAGS.batch, *shape), jnp.float32)
  variables = module.init(jax.random.key(1), x, train=False)
  return jax.jit(lambda variables, x: module.apply(variables, x, train=False)), (variables, x)


def detector_call():
  """(jitted function, arguments): the detector's forward (+ backward) on random images."""
  model = models.create(FLAGS.model)
  images = jnp.asarray(np.random.default_rng(0).integers(
      0, 256, (FLAGS.batch, FLAGS.size, FLAGS.size, 3), np.uint8))
  variables = model.init(jax.random.key(0), images[:1])
  train = FLAGS.task == "train"

  def forward(params, images):
    (logits, _), _ = model.apply({**variables, "params": params}, images, train=train,
                                 mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
    return jnp.sum(jnp.square(logits))
  if train:
    return bench_common.jit_training(jax.grad(forward)), (variables["params"], images)
  return jax.jit(forward), (variables["params"], images)


def op_names(compiled_text: str) -> dict[str, str]:
  """Each HLO instruction's name -> its op_name, without `jit(...)/` and block indices."""
  names = {}
  for match in re.finditer(r'^\s+%(\S+) = .*?metadata=\{op_name="([^"]+)"', compiled_text, re.M):
    op = match.group(2).split("/", 1)[-1]
    names[match.group(1)] = re.sub(r"(blocks?_?)\d+", r"\1*", op)
  return names


def main(_):
  fn, args = block_call() if FLAGS.target == "block" else detector_call()
  for _ in range(2):
    jax.block_until_ready(fn(*args))
  names = op_names(fn.lower(*args).compile().as_text())
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder, create_perfetto_trace=True):
      for _ in range(FLAGS.calls):
        jax.block_until_ready(fn(*args))
    with gzip.open(glob.glob(f"{folder}/**/*.json.gz", recursive=True)[0]) as trace:
      events = json.load(trace)
  events = events["traceEvents"] if isinstance(events, dict) else events
  step_us, per_op, count = 0.0, collections.Counter(), collections.Counter()
  for event in events:
    if event.get("ph") != "X":
      continue
    if event["name"].startswith("ThunkExecutor::Execute (wait"):
      step_us += event["dur"] / FLAGS.calls
    elif event["name"] in names:
      per_op[names[event["name"]]] += event["dur"] / FLAGS.calls
      count[names[event["name"]]] += 1
  what = (f"EfficientNetV2-S stage-{FLAGS.stages[0]} block" if FLAGS.target == "block"
          else f"{FLAGS.model} detector")
  print(f"{FLAGS.task}: {what}, {FLAGS.size}x{FLAGS.size} input, batch "
        f"{FLAGS.batch}, {os.cpu_count()} CPUs; {step_us / 1e3:.1f} ms per call, of which the "
        f"listed fusions {sum(per_op.values()) / 1e3:.1f} ms (the rest: matmuls, convolutions)")
  print(f"{'ms':>8s} {'fusions':>7s}  operation")
  for op, us in per_op.most_common(FLAGS.top):
    print(f"{us / 1e3:8.2f} {count[op] // FLAGS.calls:7d}  {op}")


if __name__ == "__main__":
  app.run(main)
