"""agg_jax's hand-written layers against the plain JAX/Flax form of the same computation, in the
same run: seconds of a jitted forward and backward pass (the gradient of sum(y^2) by the input
and every parameter) at EfficientNetV2-S's shapes (256x256 input, batch 16), alternating rounds
after a warm-up, medians and the ratio.

  pointwise   layers.PointwiseConv (a 1x1 convolution as a matmul, through MKL where it is
              installed) against the same through XLA's dot (AGG_JAX_MATMUL=xla) and
              flax.linen.Conv
  dense       the batch-sized matmuls: layers.Dense (the aggregation head's first layer) and the
              squeeze-excite's 1x1 convolutions with bias, against the same through XLA's dot
              and flax.linen.Dense / Conv
  depthwise   layers.DepthwiseConv (shifted multiply-adds, hand-written backward pass, the
              kernel gradient in C++) against the same with XLA's k*k sums for the kernel
              gradient (cpu_kernels.suspended), autodiff of the shifted form and XLA's
              grouped convolution
  batch_norm  layers.BatchNorm with its activation (hand-written backward pass, its passes in
              C++) against the same with XLA's forms (cpu_kernels.suspended) and
              flax.linen.BatchNorm followed by the activation; SiLU (EfficientNet) and ReLU6
              (MobileNetV2, EfficientNet-Lite)
  avg_pool    head.average_pool (strided slices summed, broadcast gradient) against
              flax.linen.avg_pool and autodiff of a crop, reshape and mean, each followed by a
              dense layer as in the head: the forward pass ("fwd") and the input gradient
              ("bwd", which needs nothing from the forward pass) apart

  python bench/bench_layers.py
  python bench/bench_layers.py --layers=depthwise --batch=8
"""

import functools
import os
import sys
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import agg_jax  # noqa: E402,F401  (its CPU defaults, before JAX starts)
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402

from agg_jax.models import cpu_kernels, head, layers  # noqa: E402

import bench_common  # noqa: E402

LAYERS = ("pointwise", "dense", "depthwise", "batch_norm", "avg_pool")
flags.DEFINE_list("layers", list(LAYERS), f"Which of {LAYERS} to measure.")
flags.DEFINE_integer("batch", 16, "Batch size.")
flags.DEFINE_integer("steps", 5, "Timed calls per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the median round is reported.")
FLAGS = flags.FLAGS


class _AutodiffDepthwise(nn.Module):
  """The shifted depthwise convolution differentiated by JAX (no custom VJP)."""
  kernel_size: int
  stride: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.kernel_size, self.kernel_size, 1, x.shape[-1]))
    pads = tuple(layers.same_padding(n, self.kernel_size, self.stride) for n in x.shape[1:3])
    return layers._shifted_forward(x, kernel, self.stride, pads)  # pylint: disable=protected-access


class _FlaxBatchNorm(nn.Module):
  activation: str

  @nn.compact
  def __call__(self, x):
    x = nn.BatchNorm(use_running_average=False, momentum=0.99, epsilon=1e-3)(x)
    return layers.ACTIVATIONS[self.activation][0](x)


def _module_grad(module, shape):
  """A jitted fwd+bwd of `module` on a (B, H, W, C) input: d sum(y^2) / d (x, params)."""
  grad, args = bench_common.module_grad(module, (FLAGS.batch, *shape))
  return lambda: jax.block_until_ready(grad(*args))


def _without_cpu_kernels(call):
  """`call`, traced (its first call) with the C++ kernels suspended: XLA's forms."""
  with cpu_kernels.suspended():
    call()
  return call


def _with_xla_matmul(call):
  """`call`, traced (its first call) with AGG_JAX_MATMUL=xla: matmuls through XLA's dot."""
  with mock.patch.dict(os.environ, {cpu_kernels.MATMUL_SWITCH: "xla"}):
    call()
  return call


def _pool_call(pool, shape, backward: bool):
  """A jitted pass of `pool` on a (B, H, W, C) input, its output flattened into a dense layer as
  in the head's projections; with `backward`, the input's gradient alone, for a random cotangent
  of the dense layer's output (the pooling's gradient needs nothing from its forward pass). A
  squared sum instead would let XLA fuse the pooling into its reduction, or into the backward
  pass and recompute it per pixel, which the detector never does."""
  x = jax.random.normal(jax.random.key(0), (FLAGS.batch, *shape), jnp.float32)
  pooled = jax.eval_shape(pool, x)
  dense = jax.random.normal(jax.random.key(1), (pooled.size // FLAGS.batch, 256), jnp.float32)
  cotangent = jax.random.normal(jax.random.key(2), (FLAGS.batch, 256), jnp.float32)
  forward = lambda x, dense: pool(x).reshape(FLAGS.batch, -1) @ dense
  if backward:
    call = jax.jit(lambda x, dense: jax.vjp(lambda x: forward(x, dense), x)[1](cotangent)[0])
  else:
    call = jax.jit(forward)
  return lambda: jax.block_until_ready(call(x, dense))


def cases():
  """(name, shape, {variant: fwd+bwd call}); the first variant is agg_jax's."""
  out = []
  if "pointwise" in FLAGS.layers:
    for shape, features in (((128, 128, 24), 96), ((64, 64, 192), 48), ((16, 16, 160), 960),
                            ((16, 16, 960), 160), ((8, 8, 256), 1536)):
      out.append((f"1x1 conv ->{features}", shape, {
          "agg_jax": _module_grad(layers.PointwiseConv(features), shape),
          "xla_matmul": _with_xla_matmul(_module_grad(layers.PointwiseConv(features), shape)),
          "flax_conv": _module_grad(nn.Conv(features, (1, 1), use_bias=False), shape)}))
  if "dense" in FLAGS.layers:
    for name, shape, make, make_flax in (
        ("dense ->256", (7776,), lambda: layers.Dense(256), lambda: nn.Dense(256)),
        ("se 1x1 ->64", (1, 1, 1536), lambda: layers.PointwiseConv(64, use_bias=True),
         lambda: nn.Conv(64, (1, 1))),
        ("se 1x1 ->1536", (1, 1, 64), lambda: layers.PointwiseConv(1536, use_bias=True),
         lambda: nn.Conv(1536, (1, 1)))):
      out.append((name, shape, {
          "agg_jax": _module_grad(make(), shape),
          "xla_matmul": _with_xla_matmul(_module_grad(make(), shape)),
          "flax": _module_grad(make_flax(), shape)}))
  if "depthwise" in FLAGS.layers:
    for shape, stride in (((64, 64, 192), 1), ((32, 32, 512), 1), ((16, 16, 960), 1),
                          ((32, 32, 512), 2)):
      out.append((f"depthwise 3x3 /{stride}", shape, {
          "agg_jax": _module_grad(layers.DepthwiseConv(3, stride), shape),
          "xla_sums": _without_cpu_kernels(_module_grad(layers.DepthwiseConv(3, stride), shape)),
          "autodiff": _module_grad(_AutodiffDepthwise(3, stride), shape),
          "xla_grouped": _module_grad(layers.DepthwiseConv(3, stride, "xla"), shape)}))
  if "batch_norm" in FLAGS.layers:
    for activation, shape in (("silu", (128, 128, 24)), ("silu", (64, 64, 192)),
                              ("silu", (16, 16, 960)), ("relu6", (64, 64, 144))):
      batch_norm = lambda: layers.BatchNorm(False, 0.99, 1e-3, activation)
      out.append((f"batch_norm+{activation}", shape, {
          "agg_jax": _module_grad(batch_norm(), shape),
          "xla_passes": _without_cpu_kernels(_module_grad(batch_norm(), shape)),
          "flax": _module_grad(_FlaxBatchNorm(activation), shape)}))
  if "avg_pool" in FLAGS.layers:
    pools = {"agg_jax": functools.partial(head.average_pool, window=(7, 7)),
             "flax": lambda x: nn.avg_pool(x, (7, 7), (7, 7), "VALID"),
             "crop_mean": functools.partial(_crop_mean_pool, window=(7, 7))}
    for backward, name in ((False, "avg_pool 7x7 fwd"), (True, "avg_pool 7x7 bwd")):
      for shape in ((128, 128, 24), (32, 32, 160)):
        out.append((name, shape, {variant: _pool_call(pool, shape, backward)
                                  for variant, pool in pools.items()}))
  return out


def _crop_mean_pool(x, window):
  """Average pooling as a crop, a reshape and a mean (head.average_pool before 2026-12-06)."""
  (k_h, k_w), (b, h, w, c) = window, x.shape
  rows, cols = h // k_h, w // k_w
  return x[:, :rows * k_h, :cols * k_w].reshape(b, rows, k_h, cols, k_w, c).mean(axis=(2, 4))


def main(_):
  unknown = set(FLAGS.layers) - set(LAYERS)
  if unknown:
    raise app.UsageError(f"--layers: unknown {sorted(unknown)}; use some of {LAYERS}")
  print(f"forward + backward, batch {FLAGS.batch}, float32, {jax.devices()[0].device_kind} "
        f"({os.cpu_count()} CPUs); median of {FLAGS.rounds} alternating rounds of "
        f"{FLAGS.steps} calls after a warm-up")
  print(f"{'layer':17s} {'input':>13s} {'variant':12s} {'ms':>9s} {'agg_jax speed-up':>17s}")
  for name, shape, variants in cases():
    medians = bench_common.alternating_medians(variants, FLAGS.rounds, FLAGS.steps)
    for variant, seconds in medians.items():
      print(f"{name:17s} {'x'.join(map(str, shape)):>13s} {variant:12s} {seconds * 1e3:9.2f} "
            f"{medians[variant] / medians['agg_jax']:16.2f}x", flush=True)


if __name__ == "__main__":
  app.run(main)
