"""Overlays converted backbone weights onto freshly initialised model variables (init_from).

The classifiers nest the backbone under `params/backbone` and `batch_stats/backbone`; a bare
backbone has its variables at the top. The aggregation classifier's backbone has no ImageNet top
(head conv, head BN, classifier): those loaded weights are skipped and reported, not an error.
"""

from typing import Any

import jax.numpy as jnp
import numpy as np
from absl import logging

from agg_jax.weights.assign import WeightsError, flatten, unflatten
from agg_jax.weights.store import load, saved_model

IMAGENET_TOP = ("head_conv", "head_bn", "classifier")


def restore_into(variables: dict[str, Any], loaded: dict[str, Any], *,
                 skip_head: bool = True) -> dict[str, Any]:
  """`variables` with every backbone variable replaced by its value in `loaded`.

  Args:
    variables: the model's variables from `model.init` (a classifier or a bare backbone).
    loaded: the backbone variables of `agg_jax.weights.load(dir)[1]`.
    skip_head: skip loaded ImageNet-top weights the model has no place for (reported in the
      log); if False they are an error.

  Raises:
    WeightsError naming the first key that is missing on either side or has another shape.
  """
  target = flatten(variables)
  nested = any(key.startswith("params/backbone/") for key in target)
  prefix = "backbone/" if nested else ""
  out, skipped, restored = dict(target), [], set()
  for key, value in flatten(loaded).items():
    collection, rest = key.split("/", 1)
    dest = f"{collection}/{prefix}{rest}"
    if dest not in target:
      if skip_head and rest.split("/")[0] in IMAGENET_TOP:
        skipped.append(key)
        continue
      raise WeightsError(f"init_from: the weights have {key} but the model has no {dest} "
                         "(weights of another backbone?)")
    if tuple(np.shape(value)) != tuple(target[dest].shape):
      raise WeightsError(f"init_from: {key} has shape {tuple(np.shape(value))}, the model's "
                         f"{dest} has {tuple(target[dest].shape)} (weights of another backbone?)")
    out[dest] = jnp.asarray(value, dtype=target[dest].dtype)
    restored.add(dest)
  backbone = [key for key in target if key.split("/", 1)[0] in ("params", "batch_stats")
              and (not nested or key.split("/")[1] == "backbone")]
  missing = [key for key in backbone if key not in restored]
  if missing:
    raise WeightsError(f"init_from: {len(missing)} backbone variable(s) not in the weights, "
                       f"first {missing[0]} (weights of another backbone?)")
  logging.info("init_from: restored %d backbone variables; skipped %d ImageNet-top ones (%s)",
               len(restored), len(skipped), ", ".join(skipped) or "none")
  return unflatten(out)


def check_backbone(directory: str, model: str) -> None:
  """Raises WeightsError unless the converted-weights directory holds weights of `model`.

  The name check matters: e.g. efficientnetv2_s and tv_efficientnetv2_s share every shape but
  not the padding their weights were trained with.
  """
  name = saved_model(directory)
  if name != model:
    raise WeightsError(f"model.init_from={directory} holds weights of {name!r}, but "
                       f"model.name is {model!r}")


def load_checked(directory: str, model: str) -> dict[str, Any]:
  """The variables of a converted-weights directory, which must be for backbone `model`."""
  check_backbone(directory, model)
  return load(directory)[1]


def init_from(variables: dict[str, Any], directory: str, model: str, *,
              skip_head: bool = True) -> dict[str, Any]:
  """`restore_into` from a converted-weights directory for backbone `model` (`load_checked`)."""
  return restore_into(variables, load_checked(directory, model), skip_head=skip_head)
