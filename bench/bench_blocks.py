"""One block of each EfficientNetV2-S stage, agg_jax against torchvision's same block, in the
same run: seconds of a forward and backward pass in training mode (batch-norm statistics of the
batch; the gradient of sum(y^2) by the input and every parameter), alternating rounds after a
warm-up, medians and the ratio. Each stage's representative is its second block (stride 1, with
the residual), the block the stage repeats; stochastic depth is off on both sides. Where
profile_stages.py says which stage is slow, this says whether the peer is slow there too.

  python bench/bench_blocks.py                       # every stage, 256x256 input, batch 16
  python bench/bench_blocks.py --stages=5,6 --steps=5

Needs `make bench-install` (torchvision).
"""

import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import agg_jax  # noqa: E402,F401  (its CPU defaults, before JAX starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402

from agg_jax.models import efficientnet  # noqa: E402

import bench_common  # noqa: E402

flags.DEFINE_list("stages", ["1", "2", "3", "4", "5", "6"], "Stages (1-6) to measure.")
flags.DEFINE_integer("size", 256, "Input image size; a stage's maps are this over its stride.")
flags.DEFINE_integer("batch", 16, "Batch size.")
flags.DEFINE_integer("steps", 3, "Timed calls per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the median round is reported.")
FLAGS = flags.FLAGS

ARCH = efficientnet.ARCHS["efficientnetv2_s"]


def stage_inputs(size: int):
  """(stage spec, input (H, W, C) of its repeated block) for stages 1-6 of EfficientNetV2-S."""
  hw, out = size // 2, []  # after the stem's stride 2
  for stage in efficientnet.parse_arch(ARCH):
    hw //= stage.stride
    out.append((stage, (hw, hw, stage.channels)))
  return out


def block(stage) -> efficientnet.Block:
  """agg_jax's repeated block of a stage: stride 1, with its residual, no stochastic depth."""
  return efficientnet.Block(stage.kind, stage.channels, stage.kernel, 1, stage.expand,
                            stage.se_ratio, stage.kind != "cn" or bool(stage.skip), 0.0, "silu",
                            "same", 0.9, 1e-3, "shifted", jnp.float32)


def jax_block(stage, shape):
  """agg_jax's block as a jitted fwd+bwd call."""
  grad, args = bench_common.module_grad(block(stage), (FLAGS.batch, *shape), train=True)
  return lambda: jax.block_until_ready(grad(*args))


def torch_block(stage_index, shape):
  """torchvision's second block of the same stage of `efficientnet_v2_s`, eager."""
  torch, torchvision = bench_common.import_torchvision()
  torch.set_num_threads(os.cpu_count())
  block = torchvision.models.efficientnet_v2_s().features[stage_index + 1][1].train()
  block.stochastic_depth.p = 0.0
  h, w, c = shape
  x = torch.randn(FLAGS.batch, c, h, w, requires_grad=True)

  def call():
    block.zero_grad(set_to_none=True)
    x.grad = None
    torch.sum(torch.square(block(x))).backward()
  return call


def main(_):
  try:
    chosen = sorted({int(s) for s in FLAGS.stages})
  except ValueError:
    chosen = [0]
  if not chosen or chosen[0] < 1 or chosen[-1] > 6:
    raise app.UsageError(f"--stages: {','.join(FLAGS.stages)!r}; use numbers from 1 to 6")
  if importlib.util.find_spec("torchvision") is None:
    raise app.UsageError("the peer, torchvision, is not installed: run `make bench-install`")
  print(f"one block, forward + backward in training mode, batch {FLAGS.batch}, float32, "
        f"{os.cpu_count()} CPUs; median of {FLAGS.rounds} alternating rounds of {FLAGS.steps} "
        "calls after a warm-up")
  print(f"{'stage':>5s} {'block':28s} {'input':>11s} {'agg_jax ms':>10s} {'torch ms':>9s} "
        f"{'agg_jax/torch speed':>20s} {'x repeats ms':>13s}")
  total = {"agg_jax": 0.0, "torch": 0.0}
  for index, (stage, shape) in enumerate(stage_inputs(FLAGS.size)):
    if index + 1 not in chosen:
      continue
    calls = {"agg_jax": jax_block(stage, shape), "torch": torch_block(index, shape)}
    seconds = bench_common.alternating_medians(calls, FLAGS.rounds, FLAGS.steps)
    ms = {side: 1e3 * t for side, t in seconds.items()}
    for side in total:
      total[side] += ms[side] * stage.repeats
    name = f"{stage.kind} e{stage.expand:g} c{stage.channels}" + (" se" if stage.se_ratio else "")
    print(f"{index + 1:5d} {name:28s} {'x'.join(map(str, shape)):>11s} {ms['agg_jax']:10.1f} "
          f"{ms['torch']:9.1f} {ms['torch'] / ms['agg_jax']:19.2f}x "
          f"{ms['agg_jax'] * stage.repeats:6.0f}/{ms['torch'] * stage.repeats:.0f}", flush=True)
  print(f"the measured stages, each block times its stage's repeats: agg_jax {total['agg_jax']:.0f} "
        f"ms, torch {total['torch']:.0f} ms, {total['torch'] / total['agg_jax']:.2f}x")


if __name__ == "__main__":
  app.run(main)
