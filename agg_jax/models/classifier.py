"""Real/fake classifiers: a backbone plus the aggregation head (ours) or a logits head (baseline).

Both return `(logits, aux)`: the fake-score logits of shape (B,) (sigmoid gives the probability
of "fake", label 1) and a dict of auxiliary outputs (`primitives` for the aggregation head).

Mixed precision: `dtype` (config.model.dtype) is the computation dtype of the backbone and the
head. Parameters and batch-norm statistics stay float32 (Flax computes the statistics in float32
and casts only the normalised output), and the logits and primitives are float32, so the loss,
its gradients and the metrics are float32 whatever `dtype` is.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from agg_jax.config_validation import ConfigError
from agg_jax.models.head import AggregationHead


def resolve_windows(block_names: Sequence[str], block_stages: Sequence[int],
                    blocks: str | Sequence[int | str],
                    pool_window: int | Sequence[int]) -> dict[str, int]:
  """Block name -> pooling window for the blocks the head aggregates.

  Args:
    block_names, block_stages: every block of the backbone and its stage, in forward order.
    blocks: "all", or block indices / names to aggregate (also as text: "0,3,5" or "(0, 3, 5)",
      as a command-line override gives them).
    pool_window: one window for every block, or one per stage (the paper: 14 on the fused-MBConv
      stages, 7 on the MBConv stages).
  """
  if isinstance(pool_window, int):
    pool_window = [pool_window] * (max(block_stages) + 1)
  if len(pool_window) != max(block_stages) + 1:
    raise ConfigError(f"config.model.pool_window={pool_window!r} has {len(pool_window)} "
                      f"entries; the backbone has {max(block_stages) + 1} stages: give one per "
                      "stage or a single int")
  if isinstance(blocks, str) and blocks != "all":
    items = [b.strip() for b in blocks.strip("()[] ").split(",") if b.strip()]
    if not items:
      raise ConfigError(f"config.model.blocks={blocks!r}: must be 'all' or a list of block "
                        "indices")
    blocks = [int(b) if b.lstrip("-").isdigit() else b for b in items]
  if blocks == "all":
    chosen = list(block_names)
  else:
    chosen = []
    for block in blocks:
      name = block_names[block] if isinstance(block, int) and 0 <= block < len(block_names) \
          else block
      if name not in block_names:
        raise ConfigError(f"config.model.blocks: no block {block!r}; the backbone has "
                         f"{len(block_names)} blocks (0..{len(block_names) - 1})")
      chosen.append(name)
    chosen = [name for name in block_names if name in chosen]  # forward order, no duplicates
  stage_of = dict(zip(block_names, block_stages))
  return {name: int(pool_window[stage_of[name]]) for name in chosen}


class AggregatedClassifier(nn.Module):
  """The paper's model (Fig. 3): backbone blocks -> primitives -> linear score."""
  backbone: nn.Module
  windows: Mapping[str, int]
  hidden: Sequence[int] = (256, 256)
  num_primitives: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    _, endpoints = self.backbone(images, train=train)
    logits, primitives = AggregationHead(self.windows, self.hidden, self.num_primitives,
                                         self.dtype, name="head")(endpoints)
    return logits, {"primitives": primitives}


class LogitsClassifier(nn.Module):
  """The paper's baseline (section IV-B): a binary head on the backbone's 1000 ImageNet logits.

  The backbone's logits are float32 and so is the head: the dense layer 1000 -> 1 is negligible.
  """
  backbone: nn.Module

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    class_logits, _ = self.backbone(images, train=train)
    return nn.Dense(1, dtype=jnp.float32, name="head")(class_logits)[:, 0], {}


def count_params(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def param_counts(params: Mapping[str, Any]) -> dict[str, Any]:
  """Parameter counts of the backbone, the analysis part (head) and each projection."""
  head = params.get("head", {})
  projections = {name.removeprefix("projection_"): count_params(sub)
                 for name, sub in head.items() if name.startswith("projection_")}
  counts = {"backbone": count_params(params.get("backbone", {})), "head": count_params(head),
            "total": count_params(params)}
  if projections:
    counts["projections"] = projections
    counts["largest_projection"] = max(projections.values())
    counts["smallest_projection"] = min(projections.values())
  return counts
