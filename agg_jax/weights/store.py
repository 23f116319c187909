"""Converted weights on disk: `DIR/variables.npz` (no pickle) and `DIR/model.json` (the name).

A directory written by `python -m agg_jax.weights convert` is what `model.init_from` names.
Both files are written under a temporary name and renamed, so a crash never leaves half a file.
"""

import json
import os
from typing import Any

import numpy as np

from agg_jax.fileio import atomic_write
from agg_jax.weights.assign import WeightsError, flatten, unflatten

VARIABLES, META = "variables.npz", "model.json"


def save(directory: str, model: str, variables: dict[str, Any], **meta: Any) -> None:
  """Writes `variables` (params, batch_stats) of backbone `model` into `directory`."""
  os.makedirs(directory, exist_ok=True)
  flat = {key: np.asarray(value) for key, value in flatten(variables).items()}
  atomic_write(os.path.join(directory, VARIABLES), lambda f: np.savez(f, **flat))
  text = json.dumps({"model": model, **meta}, indent=2, sort_keys=True).encode()
  atomic_write(os.path.join(directory, META), lambda f: f.write(text))


def _check_files(directory: str) -> None:
  for path in (os.path.join(directory, META), os.path.join(directory, VARIABLES)):
    if not os.path.isfile(path):
      raise WeightsError(f"{path} does not exist: {directory!r} is not a directory written by "
                         "`python -m agg_jax.weights convert`")


def saved_model(directory: str) -> str:
  """The backbone name a directory written by `save` holds weights of (reads no weights)."""
  _check_files(directory)
  try:
    with open(os.path.join(directory, META)) as f:
      return json.load(f)["model"]
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise WeightsError(f"{directory}: unreadable converted weights: {error}") from error


def load(directory: str) -> tuple[str, dict[str, Any]]:
  """(model name, variables) of a directory written by `save`."""
  model = saved_model(directory)
  try:
    with np.load(os.path.join(directory, VARIABLES), allow_pickle=False) as npz:
      flat = {key: npz[key] for key in npz.files}
  except (OSError, ValueError) as error:
    raise WeightsError(f"{directory}: unreadable converted weights: {error}") from error
  return model, unflatten(flat)
