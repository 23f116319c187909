"""CPU kernels for what XLA:CPU has no fast form of, compiled from `cpu_kernels.cc` on first use
and called through XLA's FFI.

- the depthwise convolution's kernel gradient (`depthwise_kernel_grad`), one pass over the input
  and the output gradient where XLA's form (k*k separate products and sums,
  `layers._summed_taps`) reads both once per tap: the layer's forward and backward pass
  1.35-1.94x as fast at EfficientNetV2-S's shapes, the training step 1.10x (EfficientNetV2-S),
  1.34x (MobileNetV2) and 1.49x (EfficientNet-Lite0) (docs/architecture.md, "The depthwise
  kernel gradient in C++");
- the batch norm's passes in training (`batch_norm_moments`, `batch_norm_grad_sums`,
  `batch_norm_grad_input`, used by `layers.batch_norm_train`): each reads its operands once with
  the activation's derivative computed on the way, where XLA:CPU writes the products out for its
  reductions and recomputes the derivative in a pass of its own: the layer's forward and
  backward pass 1.04-1.40x as fast, all the kernels together 1.15x (EfficientNetV2-S), 1.60x
  (MobileNetV2) and 1.62x (EfficientNet-Lite0) on the training step (docs/architecture.md, "The
  batch norm's training passes in C++");
- matmuls over the channels and their gradients (`matmul`, through `layers.channel_matmul`: the
  1x1 convolutions, the squeeze-excite's, the aggregation head's dense layers) by Intel's MKL
  where it is installed (`pip install --no-deps mkl`; `make` does it on x86-64 Linux),
  single-threaded calls on XLA's threads, each on its share of the rows or columns: MKL's
  sgemm runs EfficientNetV2-S's 1x1 convolutions 1.1-1.4x and the head's 16-row matmuls
  1.2-2.3x as fast as XLA's dot, the detector's inference 1.05-1.07x and its training step
  1.07-1.08x (docs/architecture.md, "The matmuls through MKL"). On by default on Intel processors,
  where it was measured; `AGG_JAX_MATMUL=mkl` turns it on elsewhere, `AGG_JAX_MATMUL=xla` off.

The library is built with the system's C++ compiler (`$CXX`, else `c++`) against jaxlib's FFI
headers, for this processor (`-march=native`), into `$XDG_CACHE_HOME/agg_jax/cpu_kernels/<key>`
(`~/.cache` by default), where `<key>` covers the source, the jaxlib version, the compiler and
the processor: a second run, or a second process, loads it. Where there is no compiler or the
build fails, a warning says why and the layers keep XLA's forms, which compute the same sums.
`AGG_JAX_CPU_KERNELS=none` in the environment turns the kernels off; `suspended()` does for
the programs traced inside it, as for `jax.export` (export.py), whose serialised programs cannot
call a library built on this machine.

Inside a jitted function traced under a mesh (`jax.sharding.use_abstract_mesh`, as the train
step is) whose batch axes split the images, each device runs the kernels on its own images and
sums are added over those axes (`shard_map`); XLA would otherwise gather the batch onto every
device.
"""

import contextlib
import contextvars
import ctypes
import functools
import importlib.metadata
import logging
import os
import pathlib
import platform

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax.sharding import PartitionSpec as P

from agg_jax import native_build
from agg_jax.sharding import BATCH_AXES

SWITCH = "AGG_JAX_CPU_KERNELS"
SOURCE = pathlib.Path(__file__).with_suffix(".cc")
COMPILE_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
DEPTHWISE_KERNEL_GRAD = "agg_jax_depthwise_kernel_grad"
BATCH_NORM_MOMENTS = "agg_jax_batch_norm_moments"
BATCH_NORM_GRAD_SUMS = "agg_jax_batch_norm_grad_sums"
BATCH_NORM_GRAD_INPUT = "agg_jax_batch_norm_grad_input"
MATMUL = "agg_jax_matmul"
TARGETS = {  # FFI target -> the library's symbol
    DEPTHWISE_KERNEL_GRAD: "DepthwiseKernelGrad",
    BATCH_NORM_MOMENTS: "BatchNormMoments",
    BATCH_NORM_GRAD_SUMS: "BatchNormGradSums",
    BATCH_NORM_GRAD_INPUT: "BatchNormGradInput",
    MATMUL: "Matmul",
}
MATMUL_SWITCH = "AGG_JAX_MATMUL"  # "mkl" or "xla"; unset: MKL where installed, on Intel CPUs
# The activations the batch-norm kernels apply, in the library's numbering.
ACTIVATIONS = ("linear", "relu", "relu6", "silu")


_suspended = contextvars.ContextVar("agg_jax_cpu_kernels_suspended", default=False)


def enabled(environ=os.environ) -> bool:
  """Whether the kernels are on (`AGG_JAX_CPU_KERNELS` is not "none", not `suspended()`), JAX
  computes on the CPU by default, and the library is built: the first call builds and loads it,
  or warns once why it cannot and answers False from then on."""
  return (environ.get(SWITCH, "").lower() != "none" and not _suspended.get()
          and jax.default_backend() == "cpu" and _loaded() is not None)


@contextlib.contextmanager
def suspended():
  """The kernels are off for what is traced inside the block: layers use XLA's forms. A
  function JAX traced before keeps what it traced then, so trace new functions inside."""
  token = _suspended.set(True)
  try:
    yield
  finally:
    _suspended.reset(token)


def _compiler() -> str | None:
  return native_build.compiler("CXX", native_build.COMPILERS["CXX"][0])


@functools.cache
def _cpuinfo() -> list[tuple[str, str]]:
  """/proc/cpuinfo's (field, value) lines, one per line of every processor; [] off Linux."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    return []
  return [(field.strip(), value.strip()) for field, _, value in
          (line.partition(":") for line in lines)]


def _processor() -> str:
  """What -march=native compiles for: the CPU's model and flags (Linux), else the machine."""
  fields = ("model name", "flags", "Features", "CPU part")
  lines = {f"{field}: {value}" for field, value in _cpuinfo() if field in fields}
  return "\n".join(sorted(lines)) if _cpuinfo() else platform.machine()


def build(compiler: str, output_dir: pathlib.Path) -> pathlib.Path:
  """The shared library for this source, jaxlib, compiler and processor (native_build.build).
  Raises native_build.BuildError with the compiler's message."""
  return native_build.build(compiler, SOURCE, _flags(), output_dir, depends_on=_depends_on())


def _flags() -> list[str]:
  return [*COMPILE_FLAGS, f"-I{jax.ffi.include_dir()}"]


def _depends_on() -> tuple[str, ...]:
  return (jaxlib.__version__, _processor())


@functools.cache
def _loaded() -> pathlib.Path | None:
  """Builds (or finds) the library and registers its kernels with XLA; None, after one warning,
  where that fails."""
  library = native_build.built_or_warn(
      "agg_jax.models.cpu_kernels", SOURCE, _flags(), "CXX",
      without="the layers use XLA's slower forms", depends_on=_depends_on())
  if library is None:
    return None
  try:
    handle = ctypes.cdll.LoadLibrary(str(library))
    for target, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(handle, symbol)),
                                  platform="cpu")
  except (OSError, AttributeError) as error:
    logging.warning("agg_jax.models.cpu_kernels: %s\nThe layers use XLA's slower forms.", error)
    return None
  return library


def matmul_enabled(environ=os.environ) -> bool:
  """Whether matmuls over channels (`layers.channel_matmul`) go through MKL (`matmul`): the
  kernels are `enabled()`, MKL is installed (`pip install --no-deps mkl`) and `AGG_JAX_MATMUL`
  is not "xla". Unset, it is on for Intel processors only, where it was measured;
  `AGG_JAX_MATMUL=mkl` turns it on for others."""
  choice = environ.get(MATMUL_SWITCH, "").lower()
  if choice not in ("", "mkl", "xla"):
    _warn_once(f"{MATMUL_SWITCH}={choice!r} is not 'mkl' or 'xla'; using XLA's dot")
    return False
  if choice == "xla" or (choice == "" and _vendor() != "GenuineIntel"):
    return False
  return enabled(environ) and _mkl_set()


@functools.cache
def _warn_once(message: str) -> None:
  logging.warning("agg_jax.models.cpu_kernels: %s", message)


def _vendor() -> str:
  """The processor's vendor_id (GenuineIntel, AuthenticAMD), "" where Linux does not say."""
  return next((value for field, value in _cpuinfo() if field == "vendor_id"), "")


def mkl_runtime() -> pathlib.Path | None:
  """MKL's single dynamic library (libmkl_rt), where the `mkl` package is installed."""
  try:
    files = importlib.metadata.files("mkl") or []
  except importlib.metadata.PackageNotFoundError:
    return None
  return next((pathlib.Path(file.locate()) for file in files
               if file.name.startswith("libmkl_rt.so")), None)


@functools.cache
def _mkl_set() -> bool:
  """Hands MKL's cblas_sgemm, single-threaded, to the library's Matmul; False where MKL is not
  installed or does not load (said once)."""
  runtime, library = mkl_runtime(), _loaded()
  if runtime is None or library is None:
    return False
  try:
    mkl = ctypes.CDLL(str(runtime))
    mkl.MKL_Set_Threading_Layer(1)  # MKL_THREADING_SEQUENTIAL: XLA's threads split the work
    sgemm = ctypes.cast(mkl.cblas_sgemm, ctypes.c_void_p)
    ctypes.CDLL(str(library)).agg_jax_set_sgemm(sgemm)
  except (OSError, AttributeError) as error:
    _warn_once(f"MKL ({runtime}) did not load: {error}; matmuls use XLA's dot")
    return False
  return True


def matmul(a: jax.Array, b: jax.Array, *, transpose_a: bool = False,
           transpose_b: bool = False) -> jax.Array:
  """op(a) @ op(b) through MKL's sgemm, float32, each operand viewed as a matrix whose rows are
  all its axes but the last (a 1x1 convolution's pixels) and op transposing it where asked:
  `matmul(x, kernel)` is a pointwise convolution (x's leading axes kept), `matmul(grad, kernel,
  transpose_b=True)` its input gradient, `matmul(x, grad, transpose_a=True)` its kernel gradient
  (K, N), summed over every pixel. CPU only; call `matmul_enabled()` first."""
  def call(a, b):
    if transpose_a:
      shape = (a.shape[-1], b.shape[-1])
    else:
      shape = (*a.shape[:-1], b.shape[0] if transpose_b else b.shape[-1])
    return jax.ffi.ffi_call(MATMUL, jax.ShapeDtypeStruct(shape, jnp.float32))(
        a, b, transpose_a=transpose_a, transpose_b=transpose_b)
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  if transpose_a:  # x^T @ grad: both batched, summed over the batch
    return _over_batch(call, (a, b), summed=True)
  return _over_batch(call, (a,), (b,), summed=False)


def depthwise_kernel_grad(x: jax.Array, grad: jax.Array, kernel_hw: tuple[int, int],
                          stride: int, pads) -> jax.Array:
  """The (KH, KW, 1, C) float32 kernel gradient of a depthwise convolution of x (N, H, W, C)
  whose output gradient is `grad` (N, OH, OW, C), with `stride` and `pads` ((top, bottom),
  (left, right)). CPU only; call `enabled()` first."""
  out = jax.ShapeDtypeStruct((*kernel_hw, 1, x.shape[-1]), jnp.float32)
  call = jax.ffi.ffi_call(DEPTHWISE_KERNEL_GRAD, out)
  return _over_batch(
      lambda x, grad: call(x, grad, stride=np.int64(stride), pad_top=np.int64(pads[0][0]),
                           pad_left=np.int64(pads[1][0])),
      (x.astype(jnp.float32), grad.astype(jnp.float32)), summed=True)


def batch_norm_moments(x: jax.Array) -> jax.Array:
  """(2, C) float32: the sums of x and of x^2 over all axes but the last (channels), of a
  float32 x. CPU only; call `enabled()` first."""
  call = jax.ffi.ffi_call(BATCH_NORM_MOMENTS, jax.ShapeDtypeStruct((2, x.shape[-1]), jnp.float32))
  return _over_batch(call, (x,), summed=True)


def batch_norm_grad_sums(x, grad_y, mean, inv, scale, bias, activation: str) -> jax.Array:
  """(2, C) float32: the sums of g and of g * n over all axes but the last, where
  n = (x - mean) * inv and g = grad_y * activation'(n * scale + bias): the gradients of a batch
  norm's bias and scale. Float32 operands; CPU only, call `enabled()` first."""
  call = jax.ffi.ffi_call(BATCH_NORM_GRAD_SUMS,
                          jax.ShapeDtypeStruct((2, x.shape[-1]), jnp.float32))
  return _over_batch(
      lambda x, grad_y, *vectors: call(x, grad_y, *vectors,
                                       activation=np.int64(ACTIVATIONS.index(activation))),
      (x, grad_y), (mean, inv, scale, bias), summed=True)


def batch_norm_grad_input(x, grad_y, mean, inv, scale, bias, coefficients,
                          activation: str) -> jax.Array:
  """a * g + b * n + k with g and n as in `batch_norm_grad_sums` and the per-channel
  coefficients (3, C) = (a, b, k): a batch norm's input gradient, float32, shaped like x."""
  def call(x, grad_y, *vectors):  # x: the images of one device under a mesh
    return jax.ffi.ffi_call(BATCH_NORM_GRAD_INPUT, jax.ShapeDtypeStruct(x.shape, jnp.float32))(
        x, grad_y, *vectors, activation=np.int64(ACTIVATIONS.index(activation)))
  return _over_batch(call, (x, grad_y), (mean, inv, scale, bias, coefficients), summed=False)


def _over_batch(call, batched: tuple, replicated: tuple = (), *, summed: bool):
  """call(*batched, *replicated), where `batched` share their leading (batch) axis and the
  call either sums over it (`summed`) or maps it to its result's leading axis. Under a mesh
  whose batch axes split the batch, each device calls on its own images, and sums are added
  over those axes; XLA would otherwise gather the batch onto every device."""
  mesh = jax.sharding.get_abstract_mesh()
  axes = tuple(a for a in BATCH_AXES if not mesh.empty and a in mesh.axis_names
               and mesh.shape[a] > 1)
  if not axes or batched[0].shape[0] % int(np.prod([mesh.shape[a] for a in axes])):
    return call(*batched, *replicated)
  body = (lambda *args: jax.lax.psum(call(*args), axes)) if summed else call
  mapped = jax.shard_map(body, mesh=mesh,
                         in_specs=(P(axes),) * len(batched) + (P(),) * len(replicated),
                         out_specs=P() if summed else P(axes), axis_names=set(axes))
  return mapped(*batched, *replicated)
