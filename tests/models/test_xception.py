"""Xception and Xception++ (section IV, Tables I and II): sown blocks, both heads, listing."""

import jax
import jax.numpy as jnp
import ml_collections
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


def test_from_config_builds_xception_without_stochastic_depth():
  config = ml_collections.ConfigDict(dict(
      name="xception", head="aggregation", blocks="all", pool_window=7, hidden=(16,),
      num_primitives=10, dtype="float32", drop_path_rate=0.2))
  model = models.from_config(config)
  assert isinstance(model.backbone, models.Xception)


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
