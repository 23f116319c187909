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
  analysis/              importance, CAMs, trimming and report.html (agg_jax/analysis)
  export/                the exported detector (export.py)

The directory may be a local folder or a location on object storage (`gs://bucket/run`): every
read and write goes through `fileio.path`.
"""

import json
import ml_collections
import numpy as np
from etils import epath

from agg_jax import fileio
from agg_jax.cli import UsageError

CONFIG = "config.json"
RESULTS = "results"
SCORES = "scores"  # in RESULTS
METRICS = "metrics.json"  # in RESULTS
AP_CSV = "ap.csv"  # in RESULTS
SUMMARY = "summary.md"  # in RESULTS


# Fields that say how a run is executed, not what it computes: a command on a saved run may
# give other values (another machine, another device count).
EXECUTION_FIELDS = ("mesh", "sharding_rules", "train.eval_batch_size", "data.workers",
                    "analysis")
SHOWN_DIFFERENCES = 5


class RunError(UsageError):
  """A run directory that is missing, incomplete or unreadable; the message names the file."""


def check_config(config: ml_collections.ConfigDict, device_count: int) -> None:
  """Every field a run reads, checked by the module that reads it, before any compute."""
  # pylint: disable=import-outside-toplevel
  from agg_jax import data, models, sharding, train, weights
  from agg_jax.analysis import settings
  models.check_config(config.model)
  weights.check_config(config.model)
  data.check_config(config.data)
  sharding.check_config(config, device_count)
  train.check_config(config, device_count)
  settings.check_config(config)


def check_workdir(workdir) -> None:
  """A work directory must be a folder, or not exist yet."""
  path = fileio.path(workdir)
  if path.exists() and not path.is_dir():
    raise RunError(f"--workdir={workdir}: is a file, not a run directory")


# ----------------------------------------------------------------------------- config


def config_path(workdir) -> epath.Path:
  return fileio.path(workdir) / CONFIG


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


def _flat(tree, prefix: str = "") -> dict:
  """{"train.batch_size": 32, ...} of nested JSON data."""
  if isinstance(tree, dict):
    return {k: v for key, value in tree.items()
            for k, v in _flat(value, f"{prefix}{key}.").items()}
  return {prefix[:-1]: tree}


def _json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def config_differences(saved: dict, given: dict) -> dict[str, tuple]:
  """Dotted key -> (saved value, given value) where two configs (JSON data) differ; a key that
  only one of them has is given as "(absent)" in the other."""
  saved, given = _flat(saved), _flat(given)
  return {key: (saved.get(key, "(absent)"), given.get(key, "(absent)"))
          for key in sorted(saved.keys() | given.keys()) if saved.get(key) != given.get(key)}


def resolve_config(workdir, given: ml_collections.ConfigDict | None,
                   mode: str) -> ml_collections.ConfigDict:
  """The config a command on `workdir` runs with: the run's saved config where there is one.

  A given config (--config) must then agree with the saved one, but for EXECUTION_FIELDS,
  whose given values are used. Training a new run needs a given config; evaluating needs a saved
  run. Raises RunError saying which fields differ, or what is missing.
  """
  check_workdir(workdir)
  if not config_path(workdir).exists():
    if mode != "train":
      raise RunError(f"--workdir={workdir}: no run there ({config_path(workdir)} is missing); "
                     "train one first")
    if given is None:
      raise RunError(f"--workdir={workdir} holds no run yet: give --config=FILE to start one")
    return given
  saved = load_config(workdir)
  if given is None:
    return saved
  differences = {key: values for key, values in
                 config_differences(_json(saved), _json(given)).items()
                 if not any(key == f or key.startswith(f + ".") for f in EXECUTION_FIELDS)}
  if differences:
    listed = "; ".join(f"{key}: saved {old!r}, given {new!r}"
                       for key, (old, new) in list(differences.items())[:SHOWN_DIFFERENCES])
    if len(differences) > SHOWN_DIFFERENCES:
      listed += f"; and {len(differences) - SHOWN_DIFFERENCES} more"
    raise RunError(f"--config disagrees with the run's saved {config_path(workdir)} in "
                   f"{len(differences)} field(s): {listed}. Leave --config out to use the saved "
                   "config, or give another --workdir for a new run")
  with saved.unlocked():
    for field in EXECUTION_FIELDS:
      section, _, key = field.rpartition(".")
      source = given[section] if section else given
      if key in source:
        (saved[section] if section else saved)[key] = source[key]
  return saved


# ----------------------------------------------------------------------------- variables


def restore_best(workdir, config: ml_collections.ConfigDict, mesh):
  """(model, variables) of the run's best checkpoint, replicated over `mesh`.

  Built from the config alone (the input shape comes from the data source's config, no data is
  read); RunError when the run has no best checkpoint yet.
  """
  # The model stack is imported here, not at the top: readers of score files and configs
  # (the tables command) need no JAX.
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from agg_jax import checkpoint, data, models, sharding  # pylint: disable=import-outside-toplevel
  model = models.from_config(config.model)
  images = jnp.zeros((1, *data.image_shape(config.data)), jnp.uint8)
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
  replicated = sharding.replicated(mesh)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)
  try:
    variables = checkpoint.restore_best(workdir, abstract)
  except FileNotFoundError as e:
    raise RunError(str(e)) from None
  return model, variables


# ----------------------------------------------------------------------------- scores


def results_dir(workdir) -> epath.Path:
  return fileio.path(workdir) / RESULTS


def scores_path(workdir, test_set: str) -> epath.Path:
  return results_dir(workdir) / SCORES / f"{test_set}.npz"


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
  path = fileio.path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such score file")
  with path.open("rb") as f, np.load(f, allow_pickle=False) as saved:
    arrays = {key: saved[key] for key in saved.files}
  missing = [key for key in ("scores", "labels") if key not in arrays]
  if missing:
    raise ValueError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}")
  return arrays
