"""Input data: data sources registered by name, the splits they return, and the batch samplers.

A data source is one module that reads its own `config.data` fields. It defines

  check(data)        raises config_validation.ConfigError naming the first unusable field
  image_shape(data)  (height, width, 3) of its images, known without reading any
  load(data)         a `Dataset`: the training split of one forgery method, its validation split
                     and named test sets; each `Split` reads its images through an `Images`
                     reader (`split.images.read(indices)`), never as one array

`config.data.source` names a registered source (`SOURCES`) or the import path of a module of
one's own (`my_project.my_source`). Sources are imported only when named, so a missing optional
dependency fails only the source that needs it.
"""

import importlib
from types import ModuleType

import ml_collections

from agg_jax.config_validation import ConfigError, require, require_fields
from agg_jax.data import augment
from agg_jax.data.sampler import BalancedBatches, check_batch_size, eval_batches, train_stream
from agg_jax.data.split import FAKE, REAL, ArrayImages, Dataset, Images, Split

SOURCES = {"demo": "agg_jax.data.demo", "tfds": "agg_jax.data.tfds_source"}
SOURCE_API = ("check", "image_shape", "load")


def source(name: str) -> ModuleType:
  """The module of the data source `name` (registered, or a module path with a dot)."""
  module = SOURCES.get(name, name if isinstance(name, str) and "." in name else None)
  if module is None:
    raise ConfigError(f"config.data.source={name!r}: unknown; registered sources: "
                      f"{', '.join(SOURCES)}, or the import path of a module of your own")
  try:
    found = importlib.import_module(module)
  except ImportError as e:
    raise ConfigError(f"config.data.source={name!r}: cannot import {module} ({e})") from None
  missing = [f for f in SOURCE_API if not callable(getattr(found, f, None))]
  if missing:
    raise ConfigError(f"config.data.source={name!r}: {module} does not define "
                      f"{', '.join(missing)} (a data source defines {', '.join(SOURCE_API)})")
  return found


def check_config(data: ml_collections.ConfigDict) -> None:
  """Checks `config.data`: the source named, the fields that source reads, then the pipeline's
  own fields (workers, augment)."""
  require_fields(data, "data", ("source",), "every data source")
  source(data.source).check(data)
  count = data.get("workers", 0)
  require(isinstance(count, int) and count >= 0, "data.workers", count,
          "must be a whole number >= 0 (0: batches are made in the training process)")
  augment.check_config(data)


def workers(data: ml_collections.ConfigDict) -> int:
  """Processes that read, decode and augment training batches (`data.workers`, default 0)."""
  return int(data.get("workers", 0))


def augmentation(data: ml_collections.ConfigDict) -> augment.Augment:
  """The training augmentation of `data.augment` (flip only when absent)."""
  return augment.from_config(data)


def image_shape(data: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(height, width, 3) of the images `config.data` gives, without reading any."""
  return tuple(source(data.source).image_shape(data))


def load(data: ml_collections.ConfigDict) -> Dataset:
  """The dataset `config.data` describes."""
  return source(data.source).load(data)


__all__ = ["SOURCES", "source", "check_config", "workers", "augmentation", "image_shape", "load",
           "Dataset", "Split", "Images", "ArrayImages", "BalancedBatches", "check_batch_size",
           "eval_batches", "train_stream", "REAL", "FAKE"]
