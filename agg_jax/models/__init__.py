"""Model registry: `create(name, head=..., **overrides)` and `list_models()`.

Backbones are registered by name (efficientnet.BACKBONES, xception.BACKBONES); a classifier is
a backbone plus a head: "aggregation" (the paper's model), "logits" (the baseline: a binary head
on the 1000 ImageNet logits) or None (the bare backbone, returning `(logits, endpoints)`).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from agg_jax.config_validation import require, require_fields
from agg_jax.models.classifier import (AggregatedClassifier, LogitsClassifier, count_params,
                                       param_counts, resolve_windows)
from agg_jax.models import efficientnet, layers, xception
from agg_jax.models.efficientnet import EfficientNet
from agg_jax.models.xception import Xception

BACKBONES = {**efficientnet.BACKBONES, **xception.BACKBONES}
HEADS = ("aggregation", "logits", None)


def list_models(with_params: bool = False) -> list[str] | dict[str, int]:
  """Names of every registered backbone, or name -> trainable parameter count (with the top)."""
  names = sorted(BACKBONES)
  return {name: backbone_param_count(name) for name in names} if with_params else names


def backbone_variable_shapes(name: str, size: int = 224, **overrides) -> dict[str, Any]:
  """Shapes of a backbone's variables (params, batch_stats), computed without allocating them."""
  model = create_backbone(name, **overrides)
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


def backbone_param_count(name: str) -> int:
  """Trainable parameters of a backbone with its ImageNet top (Keras' "trainable params")."""
  return count_params(backbone_variable_shapes(name)["params"])


def create_backbone(name: str, **overrides) -> nn.Module:
  require(name in BACKBONES, "model.name", name,
          f"unknown model; known: {', '.join(list_models())}")
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
    **backbone_overrides: fields of the backbone module (e.g. drop_path_rate; dtype, the
      computation dtype of backbone and head: see classifier.py on mixed precision).
  """
  require(head in HEADS, "model.head", head, f"use one of {HEADS}")
  if head == "aggregation":
    backbone_overrides.setdefault("include_top", False)  # the head reads blocks, not logits
  backbone = create_backbone(name, **backbone_overrides)
  if head is None:
    return backbone
  if head == "logits":
    return LogitsClassifier(backbone)
  names = backbone.block_names()
  windows = resolve_windows(names, backbone.block_stages(), blocks, pool_window)
  # The backbone runs only as deep as the deepest block the head reads (a trimmed model is
  # faster, not only smaller); with every block aggregated, that is the whole backbone.
  deepest = max(names.index(name) for name in windows) + 1
  if deepest < len(names):
    backbone = backbone.clone(num_blocks=deepest)
  return AggregatedClassifier(backbone, windows, tuple(hidden), num_primitives,
                              dtype=backbone.dtype)


MODEL_FIELDS = ("name", "head", "blocks", "pool_window", "hidden", "num_primitives", "dtype",
                "drop_path_rate", "init_from")
DTYPES = ("float32", "bfloat16")  # float16 would need loss scaling, which training lacks


def _whole_positive(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_list(value) -> bool:
  return isinstance(value, (list, tuple)) and len(value) > 0 and all(map(_whole_positive, value))


def check_config(config) -> None:
  """Raises ConfigError naming the first `config.model` field that cannot build a classifier
  (`weights.check_config` checks `init_from`)."""
  require_fields(config, "model", MODEL_FIELDS, "the model")
  require(config.head in ("aggregation", "logits"), "model.head", config.head,
          "use 'aggregation' (the paper's head) or 'logits' (the baseline)")
  require(config.dtype in DTYPES, "model.dtype", config.dtype, f"use one of {DTYPES}")
  require(_positive_list(config.hidden), "model.hidden", config.hidden,
          "must be a tuple of widths > 0, e.g. (256, 256)")
  require(_whole_positive(config.num_primitives), "model.num_primitives",
          config.num_primitives, "must be a whole number > 0")
  require(isinstance(config.drop_path_rate, (int, float)) and 0 <= config.drop_path_rate < 1,
          "model.drop_path_rate", config.drop_path_rate, "must be in [0, 1)")
  remat = config.get("remat", "none")
  require(remat in ("none", *layers.REMAT_POLICIES), "model.remat", remat,
          f"use 'none' or one of {sorted(layers.REMAT_POLICIES)}")
  require(remat == "none" or hasattr(create_backbone(config.name), "remat"), "model.remat", remat,
          f"{config.name} has no rematerialisation; use 'none'")
  require(_whole_positive(config.pool_window) or _positive_list(config.pool_window),
          "model.pool_window", config.pool_window,
          "must be a window > 0, or one per stage")
  from_config(config)  # the backbone name, the head, the blocks and windows it aggregates


def from_config(config) -> nn.Module:
  """The classifier that a `config.model` ConfigDict describes (configs/default.py)."""
  head_fields = {} if config.head != "aggregation" else dict(
      blocks=config.blocks, pool_window=config.pool_window, hidden=tuple(config.hidden),
      num_primitives=config.num_primitives)
  backbone_fields = {"dtype": jnp.dtype(config.dtype)}
  if hasattr(create_backbone(config.name), "drop_path_rate"):  # Xception has no stochastic depth
    backbone_fields["drop_path_rate"] = config.drop_path_rate
  if config.get("remat", "none") != "none":  # (older run configs have no remat)
    backbone_fields["remat"] = config.remat
  return create(config.name, head=config.head, **backbone_fields, **head_fields)


__all__ = ["create", "from_config", "check_config", "create_backbone", "list_models",
           "backbone_param_count", "backbone_variable_shapes", "count_params", "param_counts",
           "AggregatedClassifier", "LogitsClassifier", "EfficientNet", "Xception"]
