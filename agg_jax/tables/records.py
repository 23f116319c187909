"""The inputs of the tables as ApRecords: long-format CSV files and run directories.

- Run directory: `RUN/config.json` (model.name, data.train_set), `RUN/results/metrics.json`
  (`{"model", "train", "test_sets": {test: metrics.compute_metrics(...)}}`) and
  `RUN/results/scores/<test>.npz` (`run.save_scores`); `from_scores` recomputes the metrics
  from the score files.
- Long-format CSV: columns model,train,test,ap (AP in percent or in [0, 1]); other columns are
  ignored except `level`.

Every reader names the file (and line) of what it cannot read, in a ValueError or OSError.
"""

import csv
import dataclasses
import io
import json
import zipfile

from agg_jax import fileio, metrics, run

LONG_COLUMNS = ("model", "train", "test", "ap")
REFERENCE_COLUMNS = ("model", "mean", "std", "cov_inv")
LEVELS = ("video", "frame")  # in order of preference: video level is the default


@dataclasses.dataclass(frozen=True)
class ApRecord:
  """The AP (in percent) of one model trained on `train` and tested on `test`."""

  model: str
  train: str
  test: str
  ap: float
  level: str = ""  # "video" or "frame" when known
  source: str = ""  # the file (and line) it came from, for error messages


# ----------------------------------------------------------------------------- CSV files


def read_long_csv(path, *, ap_scale="auto"):
  """ApRecords from a CSV with columns model,train,test,ap.

  ap_scale: "percent", "fraction" (AP in [0, 1]) or "auto" (fraction when every AP <= 1).
  """
  rows = _read_csv(path, LONG_COLUMNS)
  values = [_parse_number(row["ap"], source, "ap") for source, row in rows]
  factor = 100.0 if _is_fraction_scale(values, ap_scale) else 1.0
  records = [
      ApRecord(
          *_names(row, source),
          ap=_checked_percent(value * factor, source),
          level=(row.get("level") or "").strip(),
          source=source,
      )
      for (source, row), value in zip(rows, values)
  ]
  return check_unique(records)


def read_reference(path):
  """{model: (mean, std, cov_inv)} of a CSV with columns model,mean,std,cov_inv."""
  return {
      row["model"].strip(): tuple(_parse_number(row[c], source, c) for c in REFERENCE_COLUMNS[1:])
      for source, row in _read_csv(path, REFERENCE_COLUMNS)
  }


def check_unique(records):
  """The records, after checking that no (model, train, test) appears twice."""
  seen = {}
  for record in records:
    key = (record.model, record.train, record.test)
    if key in seen:
      raise ValueError(
          f"model={key[0]!r} train={key[1]!r} test={key[2]!r} appears twice: "
          f"{seen[key]} and {record.source}"
      )
    seen[key] = record.source
  return records


# ----------------------------------------------------------------------------- run directories


def load_runs(paths, *, level="auto", from_scores=False, threshold=0.5, video_aggregation="mean"):
  """ApRecords (long format) of run directories, results directories or metrics.json files.

  level: "video", "frame" or "auto" (video when every test set of the run has video ids).
  from_scores: recompute the metrics from results/scores/*.npz instead of metrics.json.
  """
  records = []
  for path in paths:
    results_dir = find_results_dir(path)
    model, train = run_identity(results_dir)
    if from_scores:
      test_sets = metrics_from_scores(
          results_dir, threshold=threshold, video_aggregation=video_aggregation
      )
      source = str(results_dir / run.SCORES)
    else:
      test_sets = read_metrics_json(results_dir)["test_sets"]
      source = str(results_dir / run.METRICS)
    records += run_records(model, train, test_sets, level=level, source=source)
  return check_unique(records)


def find_results_dir(path):
  """The folder holding metrics.json or scores/: given a run, its results/ or metrics.json."""
  path = fileio.path(path)
  if path.is_file() and path.name == run.METRICS:
    return path.parent
  for candidate in (path / run.RESULTS, path):
    if (candidate / run.METRICS).is_file() or (candidate / run.SCORES).is_dir():
      return candidate
  raise FileNotFoundError(
      f"{path}: not a run directory (no results/metrics.json, "
      "results/scores/, metrics.json or scores/)"
  )


def run_identity(results_dir):
  """(model, train) of a run: from metrics.json, else from the run's config.json."""
  results_dir = fileio.path(results_dir)
  if (results_dir / run.METRICS).is_file():
    saved = read_metrics_json(results_dir)
    return saved["model"], saved["train"]
  config_path = run.config_path(results_dir.parent)
  try:
    config = run.read_config_json(results_dir.parent)
  except run.RunError as e:
    raise ValueError(str(e)) from None
  return (
      _lookup(config, ("model", "name"), config_path),
      _lookup(config, ("data", "train_set"), config_path),
  )


def read_metrics_json(results_dir):
  path = fileio.path(results_dir) / run.METRICS
  saved = _read_json(path)
  for key in ("model", "train", "test_sets"):
    _lookup(saved, (key,), path)
  return saved


def metrics_from_scores(results_dir, *, threshold=0.5, video_aggregation="mean"):
  """{test: compute_metrics output} recomputed from results_dir/scores/<test>.npz."""
  score_files = sorted((fileio.path(results_dir) / run.SCORES).glob("*.npz"))
  if not score_files:
    raise FileNotFoundError(f"{fileio.path(results_dir) / run.SCORES}: no .npz score files")
  test_sets = {}
  for path in score_files:
    saved = _load_scores(path)
    try:
      test_sets[path.stem] = metrics.compute_metrics(
          saved["labels"],
          saved["scores"],
          video_ids=saved.get("video_ids"),
          threshold=threshold,
          video_aggregation=video_aggregation,
      )
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from e
  return test_sets


def run_records(model, train, test_sets, *, level="auto", source=""):
  """One ApRecord per test set of a run, at `level` ("auto": the run's default level)."""
  if level not in ("auto", *LEVELS):
    raise ValueError(f"level={level!r} is not one of auto, {', '.join(LEVELS)}")
  chosen = run_levels(test_sets, source)[0] if level == "auto" else level
  records = []
  for test, result in test_sets.items():
    where = f"{source} [{test}]"
    if chosen not in result:
      raise ValueError(f"{where}: no {chosen}-level metrics (test set without video ids?)")
    ap = result[chosen]["ap"]
    if ap is None:
      raise ValueError(f"{where}: AP undefined at {chosen} level (only one class present)")
    records.append(
        ApRecord(
            model, train, test, _checked_percent(100.0 * ap, where), level=chosen, source=where
        )
    )
  return records


def run_levels(test_sets, source=""):
  """The levels every test set has, the default (video when possible) first."""
  if not test_sets:
    raise ValueError(f"{source}: no test sets")
  levels = [lvl for lvl in LEVELS if all(lvl in result for result in test_sets.values())]
  if not levels:
    raise ValueError(f"{source}: test sets lack frame-level metrics")
  return levels


# ----------------------------------------------------------------------------- helpers


def _read_csv(path, columns):
  """[("file:line", row dict)] of a CSV that must have `columns` (others are ignored)."""
  path = fileio.path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such CSV file")
  try:
    with io.StringIO(path.read_text(), newline="") as f:
      reader = csv.DictReader(f)
      missing = [c for c in columns if c not in (reader.fieldnames or ())]
      if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; need {list(columns)}, found {reader.fieldnames}"
        )
      return [(f"{path}:{reader.line_num}", row) for row in reader]
  except (UnicodeDecodeError, csv.Error) as e:
    raise ValueError(f"{path}: not a readable CSV file ({e})") from None


def _load_scores(path):
  """run.load_scores, with the file named in every error (a torn or foreign .npz too)."""
  try:
    return run.load_scores(path)
  except (ValueError, EOFError, zipfile.BadZipFile) as e:
    if str(path) in str(e):
      raise
    raise ValueError(f"{path}: not a readable score file ({e})") from None


def _read_json(path):
  path = fileio.path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file")
  try:
    return json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e


def _lookup(tree, keys, path):
  node = tree
  for depth, key in enumerate(keys):
    if not isinstance(node, dict) or key not in node:
      raise ValueError(f"{path}: missing key {'.'.join(keys[:depth + 1])!r}")
    node = node[key]
  return node


def _names(row, source):
  names = tuple((row[c] or "").strip() for c in ("model", "train", "test"))
  if not all(names):
    raise ValueError(f"{source}: empty model, train or test name in {dict(row)}")
  return names


def _parse_number(text, source, column):
  try:
    return float(text)
  except (TypeError, ValueError):
    raise ValueError(f"{source}: column {column!r} is not a number: {text!r}") from None


def _is_fraction_scale(values, ap_scale):
  if ap_scale not in ("auto", "percent", "fraction"):
    raise ValueError(f"ap_scale={ap_scale!r} is not one of auto, percent, fraction")
  if ap_scale == "auto":
    return bool(values) and max(values) <= 1.0
  return ap_scale == "fraction"


def _checked_percent(value, source):
  if not 0.0 <= value <= 100.0:
    raise ValueError(f"{source}: AP {value:g}% is outside [0, 100]")
  return value
