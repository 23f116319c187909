"""Hand-written backward passes and fused layers (agg_jax/models/layers.py, head.py) against
the plain JAX/Flax operations they replace: parameters, values, gradients, state updates."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agg_jax.models import cpu_kernels, head, layers


@pytest.mark.parametrize("hw", [(11, 9), (10, 8)])  # odd and even: "same" pads differ at stride 2
@pytest.mark.parametrize("stride,padding,kernel", [(1, "same", 3), (2, "same", 3),
                                                   (2, "symmetric", 5), (1, "symmetric", 5)])
@pytest.mark.parametrize("cpu_kernels_switch", ["", "none"])  # the C++ kernel gradient, XLA's
def test_shifted_depthwise_gradients_match_grouped_convolution(stride, padding, kernel, hw,
                                                               cpu_kernels_switch, monkeypatch):
  monkeypatch.setenv(cpu_kernels.SWITCH, cpu_kernels_switch)
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, *hw, 6))
  w = jax.random.normal(keys[1], (kernel, kernel, 1, 6))
  out_shape = layers.depthwise_conv(x, w, stride, "xla", padding).shape
  cotangent = jax.random.normal(keys[2], out_shape)

  def grads(implementation):
    loss = lambda x, w: jnp.sum(layers.depthwise_conv(x, w, stride, implementation, padding)
                                * cotangent)
    return jax.grad(loss, argnums=(0, 1))(x, w)

  for shifted, grouped in zip(grads("shifted"), grads("xla")):
    np.testing.assert_allclose(shifted, grouped, rtol=1e-4, atol=1e-4)


def test_shifted_depthwise_backward_keeps_no_windows_of_the_input():
  """Through a chain of depthwise layers the jitted gradient needs no more temporary memory than
  XLA's grouped convolution: no layer keeps k*k shifted copies of its input for the backward
  pass (autodiff of the shifted form needed 4.5x as much here)."""
  x = jnp.ones((4, 32, 32, 64))
  w = jnp.ones((3, 3, 1, 64))

  def temporary_bytes(implementation):
    def loss(x, w):
      for _ in range(4):
        x = jnp.sin(layers.depthwise_conv(x, w, 1, implementation))
      return jnp.sum(x)
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temporary_bytes("shifted") <= temporary_bytes("xla")


def test_shifted_depthwise_inference_reads_only_the_padded_copy_of_its_activation():
  """Without gradients, on CPU, the activation before a depthwise layer is written once, padded,
  and every tap reads that copy: no other intermediate of the input's size is materialised (XLA
  otherwise reads the centre tap from the unpadded activation and keeps part of it as well)."""
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 32))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 32))
  layer = lambda x, kernel: layers.depthwise_conv(jax.nn.silu(x * 1.5 + 0.5), kernel)
  compiled = jax.jit(layer).lower(x, kernel).compile()
  fusion_shapes = [line.split("=")[1].split("{")[0].strip()
                   for line in compiled.as_text().split("ENTRY")[1].splitlines()
                   if " fusion(" in line]
  assert sorted(fusion_shapes) == ["f32[2,16,16,32]", "f32[2,18,18,32]"]  # the result, the copy
  np.testing.assert_allclose(
      compiled(x, kernel),
      layers.depthwise_conv(jax.nn.silu(x * 1.5 + 0.5), kernel, implementation="xla"),
      rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_shifted_depthwise_gradients_in_bfloat16_stay_bfloat16_and_close(stride):
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4), jnp.bfloat16)
  w = jax.random.normal(jax.random.key(2), (3, 3, 1, 4), jnp.bfloat16)
  loss = lambda x, w, impl: jnp.sum(layers.depthwise_conv(x, w, stride, impl).astype(jnp.float32))
  shifted = jax.grad(loss, argnums=(0, 1))(x, w, "shifted")
  grouped = jax.grad(loss, argnums=(0, 1))(x.astype(jnp.float32), w.astype(jnp.float32), "xla")
  for got, want in zip(shifted, grouped):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=0.1)


def _flax_bn_then(activation, train, x, variables, dtype=jnp.float32):
  """Flax's BatchNorm followed by the activation: the reference for layers.BatchNorm."""
  bn = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3, dtype=dtype)
  fn = layers.ACTIVATIONS[activation][0]
  if train:
    y, updates = bn.apply(variables, x, mutable=["batch_stats"])
    return fn(y), updates
  return fn(bn.apply(variables, x)), {}


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("use_bias", [False, True])
def test_pointwise_conv_is_flax_1x1_conv_in_parameters_values_and_gradients(dtype, tolerance,
                                                                            use_bias):
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 12))
  assert_same_module(layers.PointwiseConv(20, use_bias=use_bias, dtype=dtype),
                     nn.Conv(20, (1, 1), use_bias=use_bias, dtype=dtype), x, dtype, tolerance)


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("shape", [(16, 300), (2, 3, 40)])
def test_dense_is_flax_dense_in_parameters_values_and_gradients(dtype, tolerance, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  assert_same_module(layers.Dense(24, dtype=dtype), nn.Dense(24, dtype=dtype), x, dtype,
                     tolerance)


def assert_same_module(module, flax_module, x, dtype, tolerance):
  """The same parameters from the same seed, and the same values and gradients."""
  variables = module.init(jax.random.key(1), x)
  want_variables = flax_module.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, want_variables)
  for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(want_variables)):
    np.testing.assert_array_equal(got, want)
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # a bias that is not zero

  def value_and_grads(module):
    loss = lambda v, x: jnp.sum(jnp.sin(module.apply(v, x).astype(jnp.float32)))
    return jax.value_and_grad(loss, argnums=(0, 1))(variables, x)
  assert module.apply(variables, x).dtype == flax_module.apply(variables, x).dtype == dtype
  for got, want in zip(jax.tree.leaves(value_and_grads(module)),
                       jax.tree.leaves(value_and_grads(flax_module))):
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())


@pytest.mark.parametrize("activation", sorted(layers.ACTIVATIONS))
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("cpu_kernels_switch", ["", "none"])  # the C++ passes in training, XLA's
def test_batch_norm_matches_flax_batch_norm_and_activation(activation, train, cpu_kernels_switch,
                                                           monkeypatch):
  monkeypatch.setenv(cpu_kernels.SWITCH, cpu_kernels_switch)
  keys = jax.random.split(jax.random.key(3), 4)
  channels = 20  # a whole block of the C++ kernels' 16 channels and a part of one
  x = 3 * jax.random.normal(keys[0], (4, 5, 5, channels)) + 1
  ours = layers.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3,
                          activation=activation)
  variables = ours.init(jax.random.key(0), x)
  reference = nn.BatchNorm(use_running_average=True).init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, reference)
  variables = {"params": {"scale": 1 + jax.random.normal(keys[1], (channels,)),
                          "bias": jax.random.normal(keys[2], (channels,))},
               "batch_stats": {"mean": jnp.full((channels,), 0.5),
                               "var": jnp.full((channels,), 2.0)}}
  cotangent = jax.random.normal(keys[3], x.shape)

  def run(apply):
    def loss(params, x):
      y, updates = apply({**variables, "params": params}, x)
      return jnp.sum(y * cotangent), (y, updates)
    return jax.grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], x)

  (grad_params, grad_x), (y, updates) = run(
      lambda v, x: ours.apply(v, x, mutable=["batch_stats"]) if train else (ours.apply(v, x), {}))
  (ref_params, ref_x), (ref_y, ref_updates) = run(
      lambda v, x: _flax_bn_then(activation, train, x, v))
  np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grad_x, ref_x, rtol=1e-4, atol=1e-5)
  for name in ("scale", "bias"):
    np.testing.assert_allclose(grad_params[name], ref_params[name], rtol=1e-4, atol=1e-4)
  for name in ref_updates.get("batch_stats", {}):
    np.testing.assert_allclose(updates["batch_stats"][name], ref_updates["batch_stats"][name],
                               rtol=1e-6)
  assert bool(ref_updates) == train


def test_batch_norm_with_an_activation_the_cpu_kernels_lack_uses_xlas_form(monkeypatch):
  """An activation added to layers.ACTIVATIONS without a C++ derivative still trains."""
  monkeypatch.setitem(layers.ACTIVATIONS, "tanh", (jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2))
  assert "tanh" not in cpu_kernels.ACTIVATIONS
  x = 3 * jax.random.normal(jax.random.key(6), (4, 5, 5, 20)) + 1
  ours = layers.BatchNorm(use_running_average=False, epsilon=1e-3, activation="tanh")
  variables = ours.init(jax.random.key(0), x)
  loss = lambda apply: jax.grad(lambda x: jnp.sum(jnp.sin(apply(variables, x)[0])))(x)
  grad_x = loss(lambda v, x: ours.apply(v, x, mutable=["batch_stats"]))
  ref_x = loss(lambda v, x: _flax_bn_then("tanh", True, x, v))
  np.testing.assert_allclose(grad_x, ref_x, rtol=1e-4, atol=1e-5)


def test_batch_norm_in_bfloat16_matches_flax_within_rounding():
  x = jax.random.normal(jax.random.key(4), (4, 6, 6, 8)).astype(jnp.bfloat16)
  ours = layers.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3,
                          activation="silu", dtype=jnp.bfloat16)
  variables = ours.init(jax.random.key(0), x)
  y, _ = ours.apply(variables, x, mutable=["batch_stats"])
  ref, _ = _flax_bn_then("silu", True, x, variables, jnp.bfloat16)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(np.float32), ref.astype(np.float32), atol=2e-2)


@pytest.mark.parametrize("shape,window", [((2, 8, 8, 3), (4, 4)), ((2, 9, 7, 3), (2, 3))])
def test_average_pool_matches_flax_avg_pool_values_and_gradients(shape, window):
  x = jax.random.normal(jax.random.key(5), shape)
  reference = lambda x: nn.avg_pool(x, window, window, "VALID")
  np.testing.assert_allclose(head.average_pool(x, window), reference(x), rtol=1e-6, atol=1e-6)
  cotangent = jax.random.normal(jax.random.key(6), reference(x).shape)
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * cotangent))(x)
  np.testing.assert_allclose(grad(lambda x: head.average_pool(x, window)), grad(reference),
                             rtol=1e-6, atol=1e-6)


def test_average_pool_sums_bfloat16_in_float32():
  x = jax.random.normal(jax.random.key(7), (2, 14, 14, 3)).astype(jnp.bfloat16)
  pooled = head.average_pool(x, (7, 7))
  assert pooled.dtype == jnp.bfloat16
  reference = nn.avg_pool(x.astype(jnp.float32), (7, 7), (7, 7), "VALID").astype(jnp.bfloat16)
  np.testing.assert_array_equal(pooled.astype(np.float32), reference.astype(np.float32))


class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(4, (3, 3), use_bias=False)(x)
    return layers.BatchNorm(use_running_average=not train, activation="silu")(x)


@pytest.mark.parametrize("remat", ["conv", "block"])
def test_remat_block_keeps_parameters_values_and_gradients(remat):
  x = jax.random.normal(jax.random.key(7), (2, 6, 6, 3))
  plain, rematted = _Tiny(), layers.remat_block(_Tiny, remat)()
  variables = plain.init(jax.random.key(0), x, True)
  assert jax.tree.map(jnp.shape, rematted.init(jax.random.key(0), x, True)) == \
      jax.tree.map(jnp.shape, variables)

  def loss(params, model):
    y, _ = model.apply({**variables, "params": params}, x, True, mutable=["batch_stats"])
    return jnp.sum(y ** 2)
  np.testing.assert_allclose(loss(variables["params"], rematted), loss(variables["params"], plain),
                             rtol=1e-6)
  for a, b in zip(jax.tree.leaves(jax.grad(loss)(variables["params"], rematted)),
                  jax.tree.leaves(jax.grad(loss)(variables["params"], plain))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_remat_is_named():
  with pytest.raises(ValueError, match="unknown remat 'all'"):
    layers.remat_block(_Tiny, "all")
