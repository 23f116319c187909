"""The run directory's contract: what a run writes, where, and how it is read back.

A run directory (`--workdir`) holds:

  config.json            the resolved config: the truth about the run (`save_config`,
                         `load_config`); a later command on the run reads it from here
  metrics.jsonl, tensorboard/   training and validation metrics (train_log.py)
  checkpoints/<step>/    the latest train state, for resuming (checkpoint.py)
  best/<step>/           the variables with the best validation AP (`restore_best`)
  results/scores/<test_set>.npz   scores of every test set: the source of truth that metrics
                         and tables are computed from (`save_scores`, `load_scores`)
  results/metrics.json, ap.csv, summary.md   views of the scores (evaluate.py, tables/)
"""

import json
from pathlib import Path

import ml_collections
import numpy as np

from agg_jax import fileio

CONFIG = "config.json"
RESULTS = "results"
SCORES = "scores"
METRICS = "metrics.json"


class RunError(ValueError):
  """A run directory that is missing, incomplete or unreadable; the message names the file."""


# ----------------------------------------------------------------------------- config


def config_path(workdir) -> Path:
  return Path(workdir) / CONFIG


def save_config(workdir, config: ml_collections.ConfigDict) -> None:
  """Writes `workdir/config.json` (atomically) with the resolved config."""
  fileio.atomic_write_text(config_path(workdir), config.to_json_best_effort(indent=2) + "\n")


def read_config_json(workdir) -> dict:
  """The saved config of a run as plain JSON data; RunError names the file when it cannot."""
  path = config_path(workdir)
  if not path.is_file():
    raise RunError(f"{path}: no such file (is {workdir} a run directory?)")
  try:
    saved = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise RunError(f"{path}: not a readable config ({e})") from None
  if not isinstance(saved, dict):
    raise RunError(f"{path}: not a config (a JSON object was expected)")
  return saved


def load_config(workdir) -> ml_collections.ConfigDict:
  """The saved config of a run, locked (no new keys) like a config file given with --config."""
  config = ml_collections.ConfigDict(read_config_json(workdir))
  config.lock()
  return config


# ----------------------------------------------------------------------------- scores


def scores_path(workdir, test_set: str) -> Path:
  return Path(workdir) / RESULTS / SCORES / f"{test_set}.npz"


def save_scores(path, *, scores, labels, ids, video_ids=None, frame_indices=None) -> None:
  """Writes one test set's score file (atomically), readable by `load_scores`.

  scores: fake probabilities; labels: 1 fake, 0 real; ids (and video_ids) are stored as
  strings, so the file loads without pickle.
  """
  arrays = {
      "scores": np.asarray(scores),
      "labels": np.asarray(labels),
      "ids": np.asarray(ids).astype(str),
  }
  if video_ids is not None:
    arrays["video_ids"] = np.asarray(video_ids).astype(str)
  if frame_indices is not None:
    arrays["frame_indices"] = np.asarray(frame_indices)
  lengths = {key: len(value) for key, value in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"{path}: arrays differ in length: {lengths}")
  fileio.atomic_write(path, lambda f: np.savez(f, **arrays))


def load_scores(path) -> dict[str, np.ndarray]:
  """The arrays of one score file (scores, labels, ids, optional video_ids, frame_indices)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such score file")
  with np.load(path, allow_pickle=False) as saved:
    arrays = {key: saved[key] for key in saved.files}
  missing = [key for key in ("scores", "labels") if key not in arrays]
  if missing:
    raise ValueError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}")
  return arrays
