"""Input data: sources that produce labelled splits, and the batch samplers.

`load(config.data)` returns a `Dataset` (train split of one forgery method, its validation split,
named test sets). Sources: "demo", the embedded default (demo.py).
"""

import ml_collections

from agg_jax.data import demo
from agg_jax.data.sampler import BalancedBatches, eval_batches
from agg_jax.data.split import FAKE, REAL, Dataset, Split

SOURCES = ("demo",)


def load(config: ml_collections.ConfigDict) -> Dataset:
  """Builds the dataset that `config.data` describes."""
  if config.source == "demo":
    return demo.build(config.train_set, config.image_size, config.train_per_class,
                      config.val_per_class, config.test_per_class, config.seed)
  raise ValueError(f"data.source={config.source!r} is unknown; use one of {SOURCES}")


__all__ = ["load", "Dataset", "Split", "BalancedBatches", "eval_batches", "REAL", "FAKE"]
