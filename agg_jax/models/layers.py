"""Building blocks shared by the backbones: TF "SAME" depthwise convolution, 1x1 convolution as a
matmul, batch norm with its activation, squeeze-excite, drop path.

Depthwise convolution is written as k*k shifted multiply-adds over the channels-last tensor
(`implementation="shifted"`): XLA's grouped convolution is several times slower on CPU (see
docs/architecture.md, "Depthwise convolutions"); `implementation="xla"` uses
`lax.conv_general_dilated` with `feature_group_count=C`, the better choice on some accelerators.
Both give the same result.
"""

import functools
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from agg_jax.models import cpu_kernels

DepthwiseImpl = Literal["shifted", "xla"]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF "SAME" padding (before, after) for one spatial axis: the extra pixel goes after."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1,
                   implementation: DepthwiseImpl = "shifted", padding: str = "same") -> jax.Array:
  """Depthwise 2D convolution.

  Args:
    x: (N, H, W, C) input.
    kernel: (k, k, 1, C) kernel, Flax's layout for a grouped convolution with C groups.
    stride: the same stride on both spatial axes.
    implementation: "shifted" (k*k multiply-adds, fast on CPU) or "xla" (grouped convolution).
    padding: "same" (TensorFlow: the odd pixel goes after) or "symmetric" (PyTorch: k // 2 on
      each side).
  """
  k_h, k_w, _, channels = kernel.shape
  if x.shape[-1] != channels:
    raise ValueError(f"depthwise kernel has {channels} channels, input has {x.shape[-1]}")
  if padding == "same":
    pads = (same_padding(x.shape[1], k_h, stride), same_padding(x.shape[2], k_w, stride))
  elif padding == "symmetric":
    pads = ((k_h // 2, k_h // 2), (k_w // 2, k_w // 2))
  else:
    raise ValueError(f"unknown padding {padding!r}: use 'same' or 'symmetric'")
  if implementation == "xla":
    return lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride), padding=pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)
  if implementation != "shifted":
    raise ValueError(f"unknown depthwise implementation {implementation!r}: use 'shifted' or 'xla'")
  return _shifted_depthwise(x, kernel, stride, pads)


def strided_windows(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
                    out_hw: tuple[int, int]):
  """The window[0] * window[1] strided (N, *out_hw, C) slices of x that offset (i, j) of a window
  reads, in window order, as (i, j, slice): a depthwise convolution's taps over its padded input,
  an average pooling's terms."""
  (k_h, k_w), (s_h, s_w), (out_h, out_w) = window, strides, out_hw
  for i in range(k_h):
    for j in range(k_w):
      yield i, j, lax.slice(x, (0, i, j, 0),
                            (x.shape[0], i + (out_h - 1) * s_h + 1, j + (out_w - 1) * s_w + 1,
                             x.shape[3]), (1, s_h, s_w, 1))


def _shifted_forward(x, kernel, stride, pads, padded_apart: bool = False):
  # bfloat16 products are summed in float32 and rounded once, as the grouped convolution (and
  # nn.Conv) accumulates them: k*k roundings in bfloat16 cost 2.5x the error of one.
  k_h, k_w, _, _ = kernel.shape
  result_dtype = jnp.result_type(x, kernel)
  accumulate = jnp.promote_types(result_dtype, jnp.float32)
  padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  if padded_apart:
    padded = _kept_apart_on_cpu(padded)
  out_hw = ((padded.shape[1] - k_h) // stride + 1, (padded.shape[2] - k_w) // stride + 1)
  out = None
  for i, j, window in strided_windows(padded, (k_h, k_w), (stride, stride), out_hw):
    term = window.astype(accumulate) * kernel[i, j, 0].astype(accumulate)
    out = term if out is None else out + term
  return out.astype(result_dtype)


def _kept_apart_on_cpu(padded: jax.Array) -> jax.Array:
  """On CPU, `padded` behind an optimization barrier; elsewhere, `padded` itself.

  Without it XLA reads the centre tap of a stride-1 convolution from the unpadded input (the
  slice of the pad that is the input itself), so the input, the activation before it, is kept as
  well as its padded copy, and part of that activation is computed twice (EfficientNetV2-S's
  inference: the depthwise blocks ran 8-16% and the detector 4% slower on CPU). Behind the
  barrier the activation is written once, padded, and the taps read only that."""
  return lax.platform_dependent(padded, cpu=lax.optimization_barrier, default=lambda x: x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _shifted_depthwise(x, kernel, stride, pads):
  # Inference (no gradient) only: in the training step the barrier bought nothing (measured).
  return _shifted_forward(x, kernel, stride, pads, padded_apart=True)


def _shifted_depthwise_fwd(x, kernel, stride, pads):
  return _shifted_forward(x, kernel, stride, pads), (x, kernel)


def _shifted_depthwise_bwd(stride, pads, residuals, grad):
  """Both gradients from x and the kernel, the only residuals.

  The input gradient is the transposed convolution: the shifted forward pass over the gradient,
  dilated by the stride and padded by k - 1 - pad, with the kernel flipped. (Autodiff's
  transpose, k*k pads and adds, fuses into the preceding batch norm's backward pass as one loop
  that ran 5-10x slower than this.) The kernel gradient: `_kernel_gradient`."""
  x, kernel = residuals
  k_h, k_w = kernel.shape[:2]
  out_h, out_w = grad.shape[1:3]
  grad_kernel = _kernel_gradient(x, grad, (k_h, k_w), stride, pads).astype(kernel.dtype)

  spans = [(n - 1) * stride + 1 for n in (out_h, out_w)]  # the gradient dilated by the stride
  padding = [(0, 0, 0)]
  for axis, k, (before, _) in ((1, k_h, pads[0]), (2, k_w, pads[1])):
    padding.append((k - 1 - before, x.shape[axis] - spans[axis - 1] + before, stride - 1))
  padding.append((0, 0, 0))
  spread = lax.pad(grad, jnp.zeros((), grad.dtype), padding)
  grad_x = _shifted_forward(spread, kernel[::-1, ::-1], 1, ((0, 0), (0, 0)))
  return grad_x.astype(x.dtype), grad_kernel


_shifted_depthwise.defvjp(_shifted_depthwise_fwd, _shifted_depthwise_bwd)


def _kernel_gradient(x, grad, kernel_hw, stride, pads):
  """The (k, k, 1, C) kernel gradient, float32: on CPU, where the C++ kernels are built, one
  pass over x and the gradient (`cpu_kernels.depthwise_kernel_grad`, 3-7x faster); elsewhere
  XLA's k*k sums (`_summed_taps`). Both compute the same sums."""
  summed_taps = functools.partial(_summed_taps, kernel_hw=kernel_hw, stride=stride, pads=pads)
  native = functools.partial(cpu_kernels.depthwise_kernel_grad, kernel_hw=kernel_hw,
                             stride=stride, pads=pads)
  return _on_cpu_where_built(summed_taps, native, x, grad)


def _summed_taps(x, grad, kernel_hw, stride, pads):
  """Tap (i, j) of the kernel gradient is the sum of the padded input's phase (i mod stride,
  j mod stride) times the gradient placed at (i // stride, j // stride) in it. (Autodiff's
  form, the windows of x times the gradient, depends on x alone, so XLA computes and keeps the
  k*k windows of every layer from the forward pass on.)"""
  k_h, k_w = kernel_hw
  accumulate = jnp.promote_types(grad.dtype, jnp.float32)
  padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))).astype(accumulate)
  grad_accumulate = grad.astype(accumulate)
  out_h, out_w = grad.shape[1:3]
  zero = jnp.zeros((), accumulate)
  taps = []
  for i in range(k_h):
    for j in range(k_w):
      phase = padded[:, i % stride::stride, j % stride::stride]
      row, col = i // stride, j // stride
      placed = lax.pad(grad_accumulate, zero, (
          (0, 0, 0), (row, phase.shape[1] - row - out_h, 0),
          (col, phase.shape[2] - col - out_w, 0), (0, 0, 0)))
      taps.append(jnp.sum(phase * placed, axis=(0, 1, 2)))
  return jnp.stack(taps).reshape(k_h, k_w, 1, x.shape[-1])


class DepthwiseConv(nn.Module):
  """Depthwise convolution without bias; parameter `kernel` of shape (k, k, 1, C)."""
  kernel_size: int
  stride: int = 1
  implementation: DepthwiseImpl = "shifted"
  padding: str = "same"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                        (self.kernel_size, self.kernel_size, 1, x.shape[-1]), jnp.float32)
    return depthwise_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.stride,
                          self.implementation, self.padding)


class PointwiseConv(nn.Module):
  """A 1x1 convolution, as one matmul over the flattened pixels (`channel_matmul`). Its
  parameters are nn.Conv's (`kernel` of shape (1, 1, C_in, C_out) and, with `use_bias`, `bias`;
  the same initialisers), so weights and checkpoints carry over. On CPU the matmul and its
  gradients run 1.0-1.8x faster than XLA's convolution at EfficientNetV2-S's shapes, most on
  large maps, and through MKL, where it is installed, 1.1-1.6x faster again
  (bench/bench_layers.py)."""
  features: int
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (1, 1, x.shape[-1], self.features), jnp.float32)
    kernel = kernel.reshape(x.shape[-1], self.features).astype(self.dtype)
    y = channel_matmul(x.astype(self.dtype), kernel)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(
          self.dtype)
    return y


class Dense(nn.Module):
  """nn.Dense (the same parameters, initialisers and result) through `channel_matmul`: MKL's
  sgemm on CPU where it is installed, for the aggregation head's small batches of rows 1.2-2.3x
  as fast as XLA's dot."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return channel_matmul(x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(
        self.dtype)


def channel_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x (..., C_in) @ kernel (C_in, C_out): in float32 on CPU, through MKL's sgemm where
  `cpu_kernels.matmul_enabled()`; otherwise XLA's dot, in the operands' dtype."""
  if x.dtype == kernel.dtype == jnp.float32:
    return _on_cpu_where_built(_xla_channel_matmul, _mkl_channel_matmul, x, kernel,
                               native_if=cpu_kernels.matmul_enabled())
  return _xla_channel_matmul(x, kernel)


def _xla_channel_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`channel_matmul` as XLA computes it: one dot over the flattened pixels."""
  y = x.reshape(-1, x.shape[-1]) @ kernel
  return y.reshape(*x.shape[:-1], kernel.shape[1])


@jax.custom_vjp
def _mkl_channel_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`channel_matmul` and its gradients as MKL's sgemm computes them (`cpu_kernels.matmul`)."""
  return cpu_kernels.matmul(x, kernel)


def _mkl_channel_matmul_fwd(x, kernel):
  return cpu_kernels.matmul(x, kernel), (x, kernel)


def _mkl_channel_matmul_bwd(residuals, grad):
  x, kernel = residuals
  return (cpu_kernels.matmul(grad, kernel, transpose_b=True),
          cpu_kernels.matmul(x, grad, transpose_a=True))


_mkl_channel_matmul.defvjp(_mkl_channel_matmul_fwd, _mkl_channel_matmul_bwd)


# Activations a BatchNorm can apply itself, with their derivatives as functions of the input.
def _silu_grad(z):
  s = jax.nn.sigmoid(z)
  return s * (1 + z * (1 - s))


ACTIVATIONS = {
    "linear": (lambda z: z, lambda z: jnp.ones_like(z)),
    "relu": (nn.relu, lambda z: (z > 0).astype(z.dtype)),
    "relu6": (nn.relu6, lambda z: ((z > 0) & (z < 6)).astype(z.dtype)),
    "silu": (nn.silu, _silu_grad),
}


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon: float, activation: str):
  """activation(batch-normalised x * scale + bias) with the batch's statistics over all axes
  but the last, as Flax's BatchNorm computes it in training (float32 statistics, variance
  E[x^2] - E[x]^2 clipped at 0). Returns (y in x's dtype, mean, variance)."""
  return _batch_norm_forward(x, scale, bias, epsilon, activation)[0]


def _batch_norm_forward(x, scale, bias, epsilon, activation):
  xf = x.astype(jnp.float32)
  count = x.size // x.shape[-1]
  mean, mean_square = _on_cpu_where_built(
      _moments, lambda xf: cpu_kernels.batch_norm_moments(xf) / count, xf,
      native_if=x.dtype == jnp.float32)
  var = jnp.maximum(0.0, mean_square - mean * mean)
  inv = lax.rsqrt(var + epsilon)
  y = ACTIVATIONS[activation][0]((xf - mean) * (inv * scale) + bias).astype(x.dtype)
  return (y, mean, var), (x, mean, inv, scale, bias)


def _moments(xf):
  """(2, C): the means of x and of x^2 over all axes but the last."""
  axes = tuple(range(xf.ndim - 1))
  return jnp.stack([xf.mean(axes), (xf * xf).mean(axes)])


def _batch_norm_backward(epsilon, activation, residuals, grads):
  """The gradient from the input alone: the normalised input n, the activation's derivative
  and two sums per channel are recomputed, where autodiff keeps x - mean, the activation's
  intermediates and more for the backward pass. On CPU (float32, where the C++ kernels are
  built) one pass for the sums and one for the input gradient (`cpu_kernels`); elsewhere XLA's
  form, the same arithmetic."""
  del epsilon
  x, mean, inv, scale, bias = residuals
  grad_y, grad_mean, grad_var = grads
  count = x.size // x.shape[-1]
  operands = (x, grad_y.astype(jnp.float32), mean, inv, scale, bias)
  native = x.dtype == jnp.float32 and activation in cpu_kernels.ACTIVATIONS
  grad_bias, grad_scale = _on_cpu_where_built(
      functools.partial(_grad_sums, activation=activation),
      functools.partial(cpu_kernels.batch_norm_grad_sums, activation=activation), *operands,
      native_if=native)
  # grad_x = scale * inv * (g - (grad_bias + n * grad_scale) / count), plus the statistics'
  # cotangents (zero in training, exact here: d mean / dx = 1 / count, d var / dx =
  # 2 (x - mean) / count, and x - mean = n / inv), as a * g + b * n + k per channel.
  a = scale * inv
  coefficients = jnp.stack([a, (2 * grad_var / inv - a * grad_scale) / count,
                            (grad_mean - a * grad_bias) / count])
  grad_x = _on_cpu_where_built(
      functools.partial(_grad_input, activation=activation),
      functools.partial(cpu_kernels.batch_norm_grad_input, activation=activation), *operands,
      coefficients, native_if=native)
  return grad_x.astype(x.dtype), grad_scale, grad_bias


def _activation_grad(x, grad_y, mean, inv, scale, bias, activation):
  """(g, n): the gradient at the activation's input and the normalised input, float32."""
  normalised = (x.astype(jnp.float32) - mean) * inv
  return grad_y * ACTIVATIONS[activation][1](normalised * scale + bias), normalised


def _grad_sums(x, grad_y, mean, inv, scale, bias, activation):
  """(2, C): the sums of g and of g * n over all axes but the last (XLA's form)."""
  g, normalised = _activation_grad(x, grad_y, mean, inv, scale, bias, activation)
  axes = tuple(range(x.ndim - 1))
  return jnp.stack([g.sum(axes), (g * normalised).sum(axes)])


def _grad_input(x, grad_y, mean, inv, scale, bias, coefficients, activation):
  """a * g + b * n + k, float32 (XLA's form)."""
  g, normalised = _activation_grad(x, grad_y, mean, inv, scale, bias, activation)
  a, b, k = coefficients
  return a * g + b * normalised + k


def _on_cpu_where_built(xla_form, native, *args, native_if: bool = True):
  """xla_form(*args), or on CPU, where the C++ kernels are built and `native_if`, native(*args):
  the same computation (`cpu_kernels`)."""
  if not (native_if and cpu_kernels.enabled()):
    return xla_form(*args)
  return lax.platform_dependent(*args, cpu=native, default=xla_form)


batch_norm_train.defvjp(_batch_norm_forward, _batch_norm_backward)


class BatchNorm(nn.Module):
  """Flax's `nn.BatchNorm` over all axes but the last (the same variables: params `scale`,
  `bias`; batch_stats `mean`, `var`; the same statistics and running-average update), followed
  by an activation (`ACTIVATIONS`, "linear" for none) computed in float32 before the result
  is cast to `dtype`. In training its backward pass is written by hand (`batch_norm_train`):
  it keeps only the input, where autodiff also keeps the centred and the activated tensors, and
  on CPU its passes over the tensor are C++ kernels (`cpu_kernels`; speed against flax and
  XLA's forms: bench/bench_layers.py)."""
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  activation: str = "linear"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
    scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
    if self.use_running_average:
      inv = lax.rsqrt(ra_var.value + self.epsilon)
      y = ACTIVATIONS[self.activation][0](
          (x.astype(jnp.float32) - ra_mean.value) * (inv * scale) + bias)
      return y.astype(self.dtype)
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, self.activation)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(self.dtype)


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation: global pool, 1x1 reduce + activation, 1x1 expand + sigmoid gate."""
  reduced_features: int
  activation: Any = nn.silu
  gate: Any = nn.sigmoid
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = self.activation(PointwiseConv(self.reduced_features, use_bias=True, dtype=self.dtype,
                                      name="reduce")(s))
    s = self.gate(PointwiseConv(x.shape[-1], use_bias=True, dtype=self.dtype, name="expand")(s))
    return x * s


class DropPath(nn.Module):
  """Stochastic depth: drops a whole residual branch per example while training."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


def emit_endpoint(module: nn.Module, endpoints: dict, name: str, x: jax.Array) -> jax.Array:
  """Publishes a block output, the contract of every backbone: sown into `intermediates` and
  added to the returned `endpoints`. With the backbone's `perturb_endpoints` set it first passes
  through `Module.perturb`, so `jax.grad` by a zero perturbation is the gradient by the block's
  output (Grad-CAM); off (the default), the model and its variables are unchanged."""
  if module.perturb_endpoints:
    x = module.perturb(name, x)
  module.sow("intermediates", name, x)
  endpoints[name] = x
  return x


def check_num_blocks(num_blocks: int | None, total: int, include_top: bool) -> int | None:
  """The block count after which a cut backbone returns (it has no top); None: not cut."""
  if num_blocks is None:
    return None
  if include_top or not 0 < num_blocks <= total:
    raise ValueError(f"num_blocks={num_blocks}: needs include_top=False and 1..{total} blocks")
  return num_blocks


# Rematerialisation policies of a backbone's blocks (`remat`): what a block keeps for the
# backward pass. "conv" keeps the convolutions' outputs and recomputes batch norm, activations,
# depthwise convolutions and squeeze-excite from them (elementwise work, cheap to redo on CPU);
# "block" keeps only each block's input.
REMAT_POLICIES = {"conv": jax.checkpoint_policies.dots_saveable,
                  "block": jax.checkpoint_policies.nothing_saveable}


def remat_block(block: type[nn.Module], remat: str) -> type[nn.Module]:
  """`block` (a module called as `block(x, train)`) under the rematerialisation policy named
  by `remat` ("none": unchanged). Parameters and their names are unchanged."""
  if remat == "none":
    return block
  if remat not in REMAT_POLICIES:
    raise ValueError(f"unknown remat {remat!r}: use 'none' or one of {sorted(REMAT_POLICIES)}")
  return nn.remat(block, policy=REMAT_POLICIES[remat], static_argnums=(2,))
