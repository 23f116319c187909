"""The C++ CPU kernels (agg_jax/models/cpu_kernels.py): built and loaded; equal to XLA's grouped
convolution's gradient and to float64 batch-norm sums; taken by the depthwise layer's and the
batch norm's passes; split over a mesh's batch axes without gathering the images; and off
(with XLA's form in their place) where they cannot be built or are switched off."""

import logging
import os
import pathlib
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from agg_jax import native_build, sharding
from agg_jax.models import cpu_kernels, layers
from tests.helpers import REPO

pytestmark = pytest.mark.skipif(cpu_kernels._compiler() is None,
                                reason="no C++ compiler (c++ or $CXX) to build the CPU kernels")


@pytest.fixture(autouse=True)
def registered_kernels():
  """The kernels registered with XLA, which `enabled()` does on first use: a test that calls
  them directly may be the first to run in its process (pytest-xdist)."""
  assert cpu_kernels.enabled()


def grouped_conv_kernel_grad(x, grad, kernel_hw, stride, pads):
  """The reference: autodiff of XLA's grouped convolution with respect to its kernel."""
  channels = x.shape[-1]
  conv = lambda kernel: lax.conv_general_dilated(
      x, kernel, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=channels)
  _, vjp = jax.vjp(conv, jnp.zeros((*kernel_hw, 1, channels)))
  return vjp(grad)[0]


@pytest.mark.parametrize("shape,kernel,stride,pads", [
    ((2, 7, 9, 5), 3, 1, ((1, 1), (1, 1))),   # odd sides, fewer channels than a vector
    ((3, 8, 8, 20), 3, 2, ((0, 1), (0, 1))),   # TF "same" at stride 2: the odd pixel after
    ((1, 9, 9, 3), 5, 2, ((2, 2), (2, 2))),    # 5x5, one image
    ((5, 16, 16, 48), 3, 1, ((1, 1), (1, 1))),  # more images than threads
    ((2, 6, 6, 4), 3, 1, ((0, 0), (0, 0))),    # no padding
])
def test_kernel_gradient_equals_the_grouped_convolutions(shape, kernel, stride, pads):
  assert cpu_kernels.enabled()
  keys = jax.random.split(jax.random.key(0))
  x = jax.random.normal(keys[0], shape)
  out_hw = [(shape[axis] + sum(pads[axis - 1]) - kernel) // stride + 1 for axis in (1, 2)]
  grad = jax.random.normal(keys[1], (shape[0], *out_hw, shape[3]))
  native = jax.jit(lambda x, g: cpu_kernels.depthwise_kernel_grad(
      x, g, (kernel, kernel), stride, pads))(x, grad)
  expected = grouped_conv_kernel_grad(x, grad, (kernel, kernel), stride, pads)
  assert native.shape == expected.shape == (kernel, kernel, 1, shape[3])
  # Sums of up to 1280 float32 products in another order: within 1e-4 of sums of magnitude 40.
  np.testing.assert_allclose(native, expected, rtol=1e-5, atol=1e-4)


BATCH_NORM_SHAPES = [
    (2, 7, 9, 5),     # fewer channels than a block of 16
    (3, 8, 8, 40),    # two whole blocks and a part
    (33, 16),         # (rows, channels): any rank, one block
    (4, 64, 64, 24),  # more rows than one chunk (32K values)
]


def batch_norm_operands(shape):
  rng = np.random.default_rng(0)
  channels = shape[-1]
  x = (3 * rng.normal(size=shape) + 1).astype(np.float32)
  grad_y = rng.normal(size=shape).astype(np.float32)
  mean, inv = x.reshape(-1, channels).mean(0), 1 / (x.reshape(-1, channels).std(0) + 0.1)
  scale, bias = 1 + rng.normal(size=channels), rng.normal(size=channels)
  return x, grad_y, *(v.astype(np.float32) for v in (mean, inv, scale, bias))


def activation_derivative(activation, z):
  """float64 derivatives, written here from their definitions."""
  sigmoid = 1 / (1 + np.exp(-z))
  return {"linear": np.ones_like(z), "relu": (z > 0) * 1.0, "relu6": ((z > 0) & (z < 6)) * 1.0,
          "silu": sigmoid * (1 + z * (1 - sigmoid))}[activation]


@pytest.mark.parametrize("shape", BATCH_NORM_SHAPES)
def test_batch_norm_moments_are_the_float64_sums(shape):
  x = batch_norm_operands(shape)[0]
  moments = jax.jit(cpu_kernels.batch_norm_moments)(x)
  flat = x.reshape(-1, shape[-1]).astype(np.float64)
  np.testing.assert_allclose(moments, [flat.sum(0), (flat * flat).sum(0)], rtol=2e-6)


@pytest.mark.parametrize("activation", cpu_kernels.ACTIVATIONS)
@pytest.mark.parametrize("shape", BATCH_NORM_SHAPES)
def test_batch_norm_gradient_passes_are_the_float64_ones(shape, activation):
  x, grad_y, mean, inv, scale, bias = operands = batch_norm_operands(shape)
  channels = shape[-1]
  coefficients = np.random.default_rng(1).normal(size=(3, channels)).astype(np.float32)
  sums = jax.jit(lambda *args: cpu_kernels.batch_norm_grad_sums(*args, activation))(*operands)
  grad_x = jax.jit(lambda *args: cpu_kernels.batch_norm_grad_input(*args, activation))(
      *operands, coefficients)

  n = (x.astype(np.float64) - mean) * inv
  g = grad_y * activation_derivative(activation, n * scale + bias)
  flat_g, flat_gn = g.reshape(-1, channels), (g * n).reshape(-1, channels)
  # Sums of thousands of float32 terms: within 1e-5 of the largest term's sum of magnitudes.
  atol = 1e-5 * np.abs(flat_gn).sum(0).max()
  np.testing.assert_allclose(sums, [flat_g.sum(0), flat_gn.sum(0)], rtol=1e-5, atol=atol)
  a, b, k = coefficients
  np.testing.assert_allclose(grad_x, a * g + b * n + k, rtol=1e-5, atol=1e-5)


def test_batch_norm_kernels_refuse_operands_that_disagree():
  assert cpu_kernels.enabled()
  x, grad_y, mean, inv, scale, bias = batch_norm_operands((2, 4, 4, 8))
  sums = lambda *args, activation: jax.ffi.ffi_call(
      cpu_kernels.BATCH_NORM_GRAD_SUMS, jax.ShapeDtypeStruct((2, 8), jnp.float32))(
          *args, activation=np.int64(activation))
  with pytest.raises(jax.errors.JaxRuntimeError, match="per-channel vectors disagree in size"):
    sums(x, grad_y, mean[:5], inv, scale, bias, activation=3)
  with pytest.raises(jax.errors.JaxRuntimeError, match="unknown activation 7"):
    sums(x, grad_y, mean, inv, scale, bias, activation=7)


def test_the_batch_norms_training_passes_call_the_kernels_unless_switched_off(monkeypatch):
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 24))
  scale, bias = jnp.linspace(0.5, 1.5, 24), jnp.linspace(-1, 1, 24)
  loss = lambda x, scale, bias: jnp.sum(jnp.sin(
      layers.batch_norm_train(x, scale, bias, 1e-3, "silu")[0]))
  with_kernels = compiled_gradient(loss, x, scale, bias)
  monkeypatch.setenv(cpu_kernels.SWITCH, "none")
  without = compiled_gradient(loss, x, scale, bias)
  for target in (cpu_kernels.BATCH_NORM_MOMENTS, cpu_kernels.BATCH_NORM_GRAD_SUMS,
                 cpu_kernels.BATCH_NORM_GRAD_INPUT):
    assert target in with_kernels.as_text()
    assert target not in without.as_text()
  np.testing.assert_allclose(with_kernels(x, scale, bias), without(x, scale, bias), rtol=1e-5,
                             atol=1e-5)


needs_mkl = pytest.mark.skipif(cpu_kernels.mkl_runtime() is None,
                               reason="MKL is not installed: pip install -e '.[mkl]'")
MKL = {cpu_kernels.SWITCH: "", cpu_kernels.MATMUL_SWITCH: "mkl"}


@needs_mkl
@pytest.mark.parametrize("rows_shape", [(4, 6, 5), (3,), (2, 64, 33)])
def test_matmul_is_the_float64_product_in_each_form(rows_shape):
  """x @ kernel, grad @ kernel^T and x^T @ grad over every pixel, for row counts split over
  the threads unevenly (4 * 6 * 5 and 2 * 64 * 33) or not split at all (3)."""
  assert cpu_kernels.matmul_enabled(MKL)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((*rows_shape, 24)).astype(np.float32)
  kernel = rng.standard_normal((24, 40)).astype(np.float32)
  grad = rng.standard_normal((*rows_shape, 40)).astype(np.float32)
  x64, kernel64, grad64 = (a.astype(np.float64) for a in (x, kernel, grad))
  forms = {
      "forward": (lambda x, kernel, grad: cpu_kernels.matmul(x, kernel), x64 @ kernel64),
      "input gradient": (lambda x, kernel, grad: cpu_kernels.matmul(grad, kernel, transpose_b=True),
                         grad64 @ kernel64.T),
      "kernel gradient": (lambda x, kernel, grad: cpu_kernels.matmul(x, grad, transpose_a=True),
                          x64.reshape(-1, 24).T @ grad64.reshape(-1, 40)),
  }
  for name, (form, want) in forms.items():
    got = jax.jit(form)(x, kernel, grad)
    assert got.shape == want.shape, name
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=name)


@needs_mkl
def test_the_pointwise_convolution_multiplies_through_mkl_unless_switched_off(monkeypatch):
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 24))
  module = layers.PointwiseConv(40)
  variables = module.init(jax.random.key(1), x)
  loss = lambda variables, x: jnp.sum(jnp.sin(module.apply(variables, x)))
  monkeypatch.setenv(cpu_kernels.MATMUL_SWITCH, "mkl")
  through_mkl = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(variables, x).compile()
  monkeypatch.setenv(cpu_kernels.MATMUL_SWITCH, "xla")
  through_xla = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(variables, x).compile()
  assert through_mkl.as_text().count(f'custom_call_target="{cpu_kernels.MATMUL}"') == 3
  assert cpu_kernels.MATMUL not in through_xla.as_text()
  for got, want in zip(jax.tree.leaves(through_mkl(variables, x)),
                       jax.tree.leaves(through_xla(variables, x))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_the_matmul_switch_says_when_it_is_misspelt(caplog):
  with caplog.at_level(logging.WARNING):
    assert not cpu_kernels.matmul_enabled({cpu_kernels.MATMUL_SWITCH: "mlk"})
  assert "AGG_JAX_MATMUL='mlk' is not 'mkl' or 'xla'; using XLA's dot" in caplog.text
  assert not cpu_kernels.matmul_enabled({cpu_kernels.MATMUL_SWITCH: "xla"})


@needs_mkl
def test_mkl_is_the_default_on_intel_processors_only(monkeypatch):
  """MKL's speed was measured on Intel's; elsewhere it takes AGG_JAX_MATMUL=mkl."""
  for vendor, default in (("GenuineIntel", True), ("AuthenticAMD", False), ("", False)):
    monkeypatch.setattr(cpu_kernels, "_vendor", lambda vendor=vendor: vendor)
    assert cpu_kernels.matmul_enabled({}) == default, vendor
    assert cpu_kernels.matmul_enabled({cpu_kernels.MATMUL_SWITCH: "mkl"}), vendor
    assert not cpu_kernels.matmul_enabled({cpu_kernels.MATMUL_SWITCH: "xla"}), vendor


def test_without_mkl_the_pointwise_convolution_uses_xlas_matmul(monkeypatch):
  monkeypatch.setattr(cpu_kernels, "mkl_runtime", lambda: None)
  cpu_kernels._mkl_set.cache_clear()
  try:
    assert not cpu_kernels.matmul_enabled(MKL)
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 8))
    module = layers.PointwiseConv(16)
    variables = module.init(jax.random.key(1), x)
    assert cpu_kernels.MATMUL not in jax.jit(module.apply).lower(variables, x).as_text()
  finally:
    cpu_kernels._mkl_set.cache_clear()


def compiled_gradient(loss, *args):
  return jax.jit(jax.grad(loss)).lower(*args).compile()


def test_the_depthwise_layers_backward_pass_calls_the_kernel_unless_switched_off(monkeypatch):
  x = jax.random.normal(jax.random.key(0), (4, 12, 12, 16))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 16))
  loss = lambda kernel, x: jnp.sum(jnp.sin(layers.depthwise_conv(x, kernel, 2)))
  with_kernel = compiled_gradient(loss, kernel, x)
  monkeypatch.setenv(cpu_kernels.SWITCH, "none")
  without = compiled_gradient(loss, kernel, x)
  assert cpu_kernels.DEPTHWISE_KERNEL_GRAD in with_kernel.as_text()
  assert cpu_kernels.DEPTHWISE_KERNEL_GRAD not in without.as_text()
  np.testing.assert_allclose(with_kernel(kernel, x), without(kernel, x), rtol=1e-5, atol=1e-5)


def test_suspended_programs_use_xlas_form_and_can_be_exported():
  """jax.export refuses a program that calls a library built here; `suspended()` (used by
  export.py, whose Grad-CAM differentiates the model) traces XLA's form instead."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 16))
  gradient = lambda: jax.grad(lambda kernel, x: jnp.sum(jnp.sin(layers.depthwise_conv(x, kernel))))
  # A new function each time, as export.py's: JAX reuses what it traced for the same function.
  export = lambda: jax.export.export(jax.jit(gradient()), platforms=("cpu",))(kernel, x)
  with pytest.raises(ValueError, match=cpu_kernels.DEPTHWISE_KERNEL_GRAD):
    export()
  with cpu_kernels.suspended():
    assert not cpu_kernels.enabled()
    exported = export()
  assert cpu_kernels.enabled()
  assert cpu_kernels.DEPTHWISE_KERNEL_GRAD not in exported.mlir_module()
  np.testing.assert_allclose(exported.call(kernel, x), gradient()(kernel, x), rtol=1e-5,
                             atol=1e-5)


def test_under_a_mesh_each_device_sums_its_own_images():
  """8 devices on the batch axis: each kernel runs on each device's 2 images and the sums are
  added across devices; no device gathers the batch."""
  env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS="--xla_force_host_platform_device_count=8",
             **{cpu_kernels.MATMUL_SWITCH: "mkl"})
  script = "from tests.models.test_cpu_kernels import sharded_kernel_gradient as f; f()"
  out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]


def sharded_kernel_gradient():
  from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: PLC0415
  mesh = sharding.make_mesh((("data", 8),))
  x = jax.device_put(jax.random.normal(jax.random.key(0), (16, 8, 8, 32)),
                     NamedSharding(mesh, P("data")))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 32))
  scale, bias = jnp.linspace(0.5, 1.5, 32), jnp.linspace(-1, 1, 32)
  pointwise = layers.PointwiseConv(32)
  pointwise_variables = pointwise.init(jax.random.key(2), x[:1])
  targets = [cpu_kernels.DEPTHWISE_KERNEL_GRAD, cpu_kernels.BATCH_NORM_MOMENTS,
             cpu_kernels.BATCH_NORM_GRAD_SUMS, cpu_kernels.BATCH_NORM_GRAD_INPUT]
  if cpu_kernels.matmul_enabled():  # MKL installed: the forward pass and both gradients
    targets += [cpu_kernels.MATMUL] * 3

  def loss(kernel, pointwise_variables, x):
    y = pointwise.apply(pointwise_variables, layers.depthwise_conv(x, kernel))
    return jnp.sum(jnp.sin(layers.batch_norm_train(y, scale, bias, 1e-3, "silu")[0]))

  def under_mesh(kernel, pointwise_variables, x):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return jax.grad(loss, argnums=(0, 1, 2))(kernel, pointwise_variables, x)

  compiled = jax.jit(under_mesh).lower(kernel, pointwise_variables, x).compile()
  text = compiled.as_text()
  for target in set(targets):
    calls = [line for line in text.splitlines() if f'custom_call_target="{target}"' in line]
    assert len(calls) == targets.count(target), (target, calls)
    assert all("f32[2,8,8,32]" in call for call in calls), (target, calls)
  assert "all-gather" not in text and "all-reduce" in text
  with cpu_kernels.suspended():
    expected = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(kernel, pointwise_variables, x)
  for got, want in zip(jax.tree.leaves(compiled(kernel, pointwise_variables, x)),
                       jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.fixture
def fresh_load(monkeypatch):
  """`cpu_kernels._loaded` forgets its answer before and after the test."""
  cpu_kernels._loaded.cache_clear()
  yield
  monkeypatch.undo()
  cpu_kernels._loaded.cache_clear()
  assert cpu_kernels.enabled()


def test_without_a_compiler_a_warning_says_so_and_the_kernels_are_off(monkeypatch, caplog,
                                                                      fresh_load):
  monkeypatch.setenv("CXX", "no-such-compiler")
  with caplog.at_level(logging.WARNING):
    assert not cpu_kernels.enabled()
  assert "no C++ compiler (no-such-compiler)" in caplog.text


def test_a_failed_build_raises_with_the_compilers_message(tmp_path):
  compiler = tmp_path / "broken-c++"
  compiler.write_text("#!/bin/sh\necho 'cpu_kernels.cc:1: error: something is wrong' >&2\n"
                      "exit 1\n")
  compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
  with pytest.raises(native_build.BuildError, match="cpu_kernels.cc:1: error: something is wrong"):
    cpu_kernels.build(str(compiler), tmp_path / "cache")
  assert not list((tmp_path / "cache").rglob("*.so"))  # no half-built library left to load


def test_the_library_is_built_once_and_then_found(tmp_path):
  compiler = cpu_kernels._compiler()
  library = cpu_kernels.build(compiler, tmp_path)
  built = library.stat().st_mtime_ns
  assert cpu_kernels.build(compiler, tmp_path) == library
  assert library.stat().st_mtime_ns == built
  assert [p.name for p in pathlib.Path(tmp_path).rglob("*") if p.is_file()] == [library.name]


def test_the_switch_turns_the_kernels_off():
  assert not cpu_kernels.enabled({cpu_kernels.SWITCH: "none"})
  assert not cpu_kernels.enabled({cpu_kernels.SWITCH: "NONE"})
  assert cpu_kernels.enabled({cpu_kernels.SWITCH: ""}) == (jax.default_backend() == "cpu")
