"""Fills a model's variables from a foreign checkpoint by an explicit key mapping, loudly.

An importer reads its file into `{source key: array}` and lists `Pair`s (source key -> our
variable path, with a layout transform). `assign` checks every shape, and fails naming the first
bad key when a source key is missing, a file key is left over (unexpected), or one of our
variables gets no value: a truncated or mismatched file never loads silently.
"""

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flax import traverse_util


class WeightsError(ValueError):
  """A weight file that does not fit the model (missing, unexpected or misshapen keys)."""


@dataclasses.dataclass(frozen=True)
class Pair:
  """One source array -> one of our variables (`collection/module/.../name`)."""
  source: str
  target: str
  transform: Callable[[np.ndarray], np.ndarray] = lambda a: a
  label: str = ""  # a readable name for the source key in messages (e.g. the Keras layer)


def flatten(variables: Mapping[str, Any]) -> dict[str, Any]:
  """{"params": {"a": {"kernel": x}}} -> {"params/a/kernel": x}."""
  return traverse_util.flatten_dict(dict(variables), sep="/")


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.unflatten_dict(dict(flat), sep="/")


def _describe(pair: Pair) -> str:
  return f"{pair.source} ({pair.label})" if pair.label and pair.label != pair.source \
      else pair.source


def assign(source: Mapping[str, np.ndarray], pairs: Iterable[Pair],
           target_shapes: Mapping[str, tuple[int, ...]], *, what: str,
           ignored: Callable[[str], bool] = lambda key: False) -> dict[str, np.ndarray]:
  """Our flat variables, filled from `source` by `pairs`.

  Args:
    source: the file's arrays by key.
    pairs: the mapping, in the model's forward order (so "first" means first in the network).
    target_shapes: our flat variable paths -> shapes (every one must be filled).
    what: the file, for messages.
    ignored: source keys that carry nothing we need (e.g. `num_batches_tracked`).

  Raises:
    WeightsError naming the first bad key.
  """
  out: dict[str, np.ndarray] = {}
  missing, used = [], set()
  for pair in pairs:
    if pair.source not in source:
      missing.append(pair)
      continue
    used.add(pair.source)
    if pair.target not in target_shapes:
      raise WeightsError(f"{what}: {_describe(pair)} maps to {pair.target}, which the model "
                         "does not have (wrong --model for this file?)")
    value = np.asarray(pair.transform(np.asarray(source[pair.source])), dtype=np.float32)
    expected = tuple(target_shapes[pair.target])
    if value.shape != expected:
      raise WeightsError(f"{what}: {_describe(pair)} has shape "
                         f"{tuple(np.shape(source[pair.source]))} -> {value.shape}, but "
                         f"{pair.target} needs {expected} (wrong --model for this file?)")
    out[pair.target] = value
  unexpected = [key for key in source if key not in used and not ignored(key)]
  unfilled = [path for path in target_shapes if path not in out]
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing key(s), first {_describe(missing[0])} for "
                    f"{missing[0].target}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]}")
  if unfilled and not missing:
    problems.append(f"{len(unfilled)} model variable(s) without a source, first {unfilled[0]}")
  if problems:
    raise WeightsError(f"{what} does not fit the model: " + "; ".join(problems) +
                       " (truncated file, or wrong --model?)")
  return out
