"""One block of each EfficientNetV2-S stage, agg_jax against torchvision's same block, in the
same run: seconds of a forward and backward pass in training mode (batch-norm statistics of the
batch; the gradient of sum(y^2) by the input and every parameter) against torchvision eager, or
(`--task=infer`) of a forward pass in inference mode against torchvision eager and under
torch.compile; alternating rounds after a warm-up, medians and the ratio. Each stage's
representative is its second block (stride 1, with the residual), the block the stage repeats;
stochastic depth is off on both sides. Where profile_stages.py says which stage is slow, this
says whether the peer is slow there too.

  python bench/bench_blocks.py                       # every stage, 256x256 input, batch 16
  python bench/bench_blocks.py --stages=5,6 --steps=5
  python bench/bench_blocks.py --task=infer
  python bench/bench_blocks.py --task=infer --first  # each stage's first block

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
flags.DEFINE_bool("first", False, "Each stage's first block (its stride, the channels of the stage "
                  "before) instead of its repeated one.")
flags.DEFINE_enum("task", "train", ["train", "infer"],
                  "Forward and backward in training mode, or forward in inference mode.")
FLAGS = flags.FLAGS

ARCH = efficientnet.ARCHS["efficientnetv2_s"]


def stage_inputs(size: int, first: bool = False):
  """(stage spec, input (H, W, C) of its repeated block, or of its first block) for stages 1-6 of
  EfficientNetV2-S."""
  hw, channels, out = size // 2, 24, []  # after the stem: stride 2, 24 channels
  for stage in efficientnet.parse_arch(ARCH):
    out.append((stage, (hw, hw, channels) if first else (hw // stage.stride, hw // stage.stride,
                                                          stage.channels)))
    hw, channels = hw // stage.stride, stage.channels
  return out


def block(stage, first: bool = False, in_channels: int | None = None) -> efficientnet.Block:
  """agg_jax's repeated block of a stage (stride 1, with its residual), or its first block
  (the stage's stride; a residual only where the shape stays), no stochastic depth."""
  stride = stage.stride if first else 1
  same_shape = not first or (stride == 1 and in_channels == stage.channels)
  return efficientnet.Block(stage.kind, stage.channels, stage.kernel, stride, stage.expand,
                            stage.se_ratio, same_shape and (stage.kind != "cn" or bool(stage.skip)),
                            0.0, "silu", "same", 0.9, 1e-3, "shifted", jnp.float32)


def jax_block(stage, shape):
  """agg_jax's block as a jitted call: fwd+bwd (training) or fwd (inference)."""
  if FLAGS.task == "train":
    grad, args = bench_common.module_grad(block(stage, FLAGS.first, shape[-1]),
                                          (FLAGS.batch, *shape), train=True)
    return lambda: jax.block_until_ready(grad(*args))
  module = block(stage, FLAGS.first, shape[-1])
  x = jax.random.normal(jax.random.key(0), (FLAGS.batch, *shape), jnp.float32)
  variables = module.init(jax.random.key(1), x, train=False)
  forward = jax.jit(lambda variables, x: module.apply(variables, x, train=False))
  return lambda: jax.block_until_ready(forward(variables, x))


def torch_block(stage_index, shape, compiled: bool = False):
  """torchvision's second (or, with --first, first) block of the same stage of
  `efficientnet_v2_s`, eager or (inference) under torch.compile."""
  torch, torchvision = bench_common.import_torchvision()
  torch.set_num_threads(os.cpu_count())
  block = torchvision.models.efficientnet_v2_s().features[stage_index + 1][0 if FLAGS.first else 1]
  block.stochastic_depth.p = 0.0
  h, w, c = shape
  if FLAGS.task == "infer":
    block = block.eval()
    x = torch.randn(FLAGS.batch, c, h, w)
    forward = torch.compile(block) if compiled else block

    def infer():
      with torch.inference_mode():
        forward(x)
    return infer
  block = block.train()
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
  peers = ["torch", "torch_compile"] if FLAGS.task == "infer" else ["torch"]
  what = ("forward in inference mode" if FLAGS.task == "infer"
          else "forward + backward in training mode")
  print(f"one block, {what}, batch {FLAGS.batch}, float32, {os.cpu_count()} CPUs; median of "
        f"{FLAGS.rounds} alternating rounds of {FLAGS.steps} calls after a warm-up")
  print(f"{'stage':>5s} {'block':28s} {'input':>11s} {'agg_jax ms':>10s} "
        + " ".join(f"{peer + ' ms':>16s} {'speed vs ' + peer:>22s}" for peer in peers)
        + f" {'ms' if FLAGS.first else 'x repeats ms':>13s}")
  total = dict.fromkeys(["agg_jax", *peers], 0.0)
  for index, (stage, shape) in enumerate(stage_inputs(FLAGS.size, FLAGS.first)):
    if index + 1 not in chosen:
      continue
    calls = {"agg_jax": jax_block(stage, shape),
             **{peer: torch_block(index, shape, peer == "torch_compile") for peer in peers}}
    seconds = bench_common.alternating_medians(calls, FLAGS.rounds, FLAGS.steps)
    ms = {side: 1e3 * t for side, t in seconds.items()}
    repeats = 1 if FLAGS.first else stage.repeats
    for side in total:
      total[side] += ms[side] * repeats
    name = f"{stage.kind} e{stage.expand:g} c{stage.channels}" + (" se" if stage.se_ratio else "")
    print(f"{index + 1:5d} {name:28s} {'x'.join(map(str, shape)):>11s} {ms['agg_jax']:10.1f} "
          + " ".join(f"{ms[peer]:16.1f} {ms[peer] / ms['agg_jax']:21.2f}x" for peer in peers)
          + f" {'/'.join(f'{ms[side] * repeats:.0f}' for side in total):>13s}", flush=True)
  print("the measured stages" + ("" if FLAGS.first else ", each block times its stage's repeats")
        + ": "
        + ", ".join(f"{side} {ms_total:.0f} ms" for side, ms_total in total.items()) + "; "
        + ", ".join(f"{total[peer] / total['agg_jax']:.2f}x {peer}'s speed" for peer in peers))


if __name__ == "__main__":
  app.run(main)
