"""Model registry: `create(name, head=..., **overrides)` and `list_models()`.

Backbones are registered by name (efficientnet.BACKBONES); a classifier is a backbone plus a
head: "aggregation" (the paper's model), "logits" (the baseline: a binary head on the 1000
ImageNet logits) or None (the bare backbone, returning `(logits, endpoints)`).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from agg_jax.models.classifier import (AggregatedClassifier, LogitsClassifier, count_params,
                                       param_counts, resolve_windows)
from agg_jax.models.efficientnet import BACKBONES, EfficientNet

HEADS = ("aggregation", "logits", None)
_HEAD_FIELDS = ("blocks", "pool_window", "hidden", "num_primitives")


def list_models() -> list[str]:
  """Names of every registered backbone."""
  return sorted(BACKBONES)


def create_backbone(name: str, **overrides) -> nn.Module:
  if name not in BACKBONES:
    raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
  return BACKBONES[name](**overrides)


def create(name: str, head: str | None = "aggregation", *, blocks: str | Sequence[int] = "all",
           pool_window: int | Sequence[int] = 7, hidden: Sequence[int] = (256, 256),
           num_primitives: int = 10, **backbone_overrides: Any) -> nn.Module:
  """Builds a classifier (or a bare backbone with head=None).

  Args:
    name: a backbone of `list_models()`.
    head: "aggregation", "logits" or None.
    blocks, pool_window, hidden, num_primitives: the aggregation head (see head.py);
      `pool_window` is one int or one per stage.
    **backbone_overrides: fields of the backbone module (e.g. dtype, drop_path_rate).
  """
  if head not in HEADS:
    raise ValueError(f"unknown head {head!r}; use one of {HEADS}")
  if head == "aggregation":
    backbone_overrides.setdefault("include_top", False)  # the head reads blocks, not logits
  backbone = create_backbone(name, **backbone_overrides)
  if head is None:
    return backbone
  dtype = backbone_overrides.get("dtype", backbone.dtype)
  if head == "logits":
    return LogitsClassifier(backbone, dtype=dtype)
  windows = resolve_windows(backbone.block_names(), backbone.block_stages(), blocks, pool_window)
  return AggregatedClassifier(backbone, windows, tuple(hidden), num_primitives, dtype=dtype)


def from_config(config) -> nn.Module:
  """The classifier that a `config.model` ConfigDict describes (configs/default.py)."""
  head_fields = {} if config.head != "aggregation" else dict(
      blocks=config.blocks, pool_window=config.pool_window, hidden=tuple(config.hidden),
      num_primitives=config.num_primitives)
  return create(config.name, head=config.head, dtype=jnp.dtype(config.dtype),
                drop_path_rate=config.drop_path_rate, **head_fields)


__all__ = ["create", "from_config", "create_backbone", "list_models", "count_params", "param_counts",
           "AggregatedClassifier", "LogitsClassifier", "EfficientNet"]
