"""Xception and Xception++ (section IV, Tables I and II): sown blocks, both heads, listing."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from agg_jax import models
from agg_jax.models.__main__ import block_shapes

# keras.applications.Xception at 299x299: block1 ... block14 outputs (height, channels).
KERAS_BLOCKS_AT_299 = [(147, 64), (74, 128), (37, 256), (19, 728)] + [(19, 728)] * 8 + \
    [(10, 1024), (10, 2048)]


def test_xception_sows_14_blocks_with_keras_shapes():
  shapes = block_shapes("xception", 299)
  assert list(shapes) == [f"block{i:02d}" for i in range(14)]
  assert list(shapes.values()) == [(1, h, h, c) for h, c in KERAS_BLOCKS_AT_299]
  assert models.create_backbone("xception").block_stages() == [0] * 4 + [1] * 8 + [2] * 2


def test_xception_parameter_count_matches_keras():
  # keras.applications.Xception: 22,910,480 parameters, 54,528 of them batch-norm statistics.
  shapes = models.backbone_variable_shapes("xception", size=96)
  assert models.count_params(shapes["params"]) == 22_855_952
  assert models.count_params(shapes["batch_stats"]) == 54_528


def test_xception_plus_plus_aggregates_every_block():
  model = models.create("xception", head="aggregation", pool_window=(14, 7, 7))
  x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.uint8)
  variables = jax.eval_shape(model.init, jax.random.key(1), x)
  logits, aux = jax.eval_shape(model.apply, variables, x)
  assert logits.shape == (2,)
  assert aux["primitives"].shape == (2, 14, 10)
  assert "classifier" not in variables["params"]["backbone"]  # no ImageNet top under the head
  head = variables["params"]["head"]
  assert sorted(head) == ["aggregate"] + [f"projection_block{i:02d}" for i in range(14)]


@pytest.mark.parametrize("name", ["xception", "efficientnet_lite0", "mobilenetv2"])
def test_logits_baseline_head_works_with_any_backbone(name):
  model = models.create(name, head="logits")
  x = jax.ShapeDtypeStruct((2, 96, 96, 3), jnp.uint8)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  logits, _ = jax.eval_shape(model.apply, variables, x)
  assert logits.shape == (2,)
  assert variables["params"]["head"]["kernel"].shape == (1000, 1)


def _variables(model, images, seed=0):
  """Variables without `model.init`, whose compilation takes half a minute on a busy CPU.

  Kernels ~ N(0, 1 / fan_in), batch-norm scale and variance 1, biases and means 0.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if path[-1].key == "kernel":
      return rng.normal(0.0, np.prod(leaf.shape[:-1]) ** -0.5, leaf.shape).astype(np.float32)
    return np.full(leaf.shape, 1.0 if path[-1].key in ("scale", "var") else 0.0, np.float32)

  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _training_forward(model):
  """Logits of a training step's forward pass, called as agg_jax.train calls it."""

  def forward(variables, images, dropout_rng):
    (logits, _), _ = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": dropout_rng})
    return logits

  jitted = jax.jit(forward)
  return lambda variables, images, seed: np.asarray(jitted(variables, images,
                                                           jax.random.key(seed)))


def test_from_config_training_output_depends_on_the_dropout_rng_only_with_stochastic_depth():
  # The same config (drop_path_rate=0.2) for both: Xception has no stochastic depth, so its
  # training-mode output ignores the dropout rng; EfficientNet drops residual branches with it.
  fields = dict(head="aggregation", blocks="all", pool_window=7, hidden=(16,),
                num_primitives=10, dtype="float32", drop_path_rate=0.2)
  images = jax.random.randint(jax.random.key(0), (4, 32, 32, 3), 0, 256).astype(jnp.uint8)

  xception = models.from_config(ml_collections.ConfigDict(dict(name="xception", **fields)))
  variables = _variables(xception, images)
  forward = _training_forward(xception)
  first = forward(variables, images, 1)
  assert np.isfinite(first).all() and first.std() > 0
  np.testing.assert_array_equal(forward(variables, images, 2), first)
  # Training mode is in effect (batch statistics), so the comparison above is not of eval mode.
  assert not np.allclose(np.asarray(jax.jit(xception.apply)(variables, images)[0]), first)

  efficientnet = models.from_config(
      ml_collections.ConfigDict(dict(name="efficientnetv2_tiny", **fields)))
  variables = _variables(efficientnet, images)
  forward = _training_forward(efficientnet)
  first = forward(variables, images, 1)
  assert np.isfinite(first).all() and first.std() > 0
  np.testing.assert_array_equal(forward(variables, images, 1), first)
  assert not np.allclose(forward(variables, images, 2), first)


def test_list_models_gives_every_backbone_with_its_parameter_count():
  counts = models.list_models(with_params=True)
  assert list(counts) == models.list_models()
  assert {"efficientnetv2_s", "efficientnetv2_b0", "efficientnet_b0", "efficientnet_lite0",
          "mobilenetv2", "xception"} <= set(counts)
  # Published counts: Keras (V2-S, B0), the Lite0 README, torchvision (MobileNetV2).
  assert counts["efficientnetv2_s"] == 21_458_488
  assert counts["efficientnet_b0"] == 5_288_548
  assert counts["efficientnet_lite0"] == 4_652_008
  assert counts["mobilenetv2"] == 3_504_872
