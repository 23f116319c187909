"""The cells of a protocol grid and how one is run: train, score the test sets, then what the
report needs besides (unseen real photos at the validation threshold, the trimmed model).

A cell is one training run: a shortcut control, a head, a seed and the forgery method trained
on. Its run directory is `OUT/<control>/<head>/<method>/seed<seed>`, an ordinary run of
`agg_jax.main` (config.json, checkpoints, results/), and `Cell.command` is the `agg_jax.main`
command that trains it alone. A cell is done when its `results/cell.json` exists; a grid that
stops is run again with the same command and goes on with the first cell not done (the cell
that was training resumes from its last checkpoint).
"""

import dataclasses
import importlib.util
import json
import os
import time
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np

from agg_jax import fileio, run

CELL_JSON = "cell.json"
AMFD_JSON = "unseen_real.json"
TRIM_SIZE = 3  # the trimmed model of the grid: the top 3 projections (paper section V)


@dataclasses.dataclass(frozen=True)
class Cell:
  control: str  # a key of the config module's CONTROLS
  head: str  # "aggregation", "logits" or "trimmed" (the aggregation run, trimmed: no training)
  method: str
  seed: int

  @property
  def trained_head(self) -> str:
    return "aggregation" if self.head == "trimmed" else self.head

  def workdir(self, out: str) -> str:
    return os.path.join(out, self.control, self.trained_head, self.method, f"seed{self.seed}")

  def overrides(self, controls: Mapping[str, dict], settings: Mapping[str, object]) -> dict:
    """The config fields this cell sets over the config file's get_config(method)."""
    return {"seed": self.seed, "model.head": self.trained_head, **controls[self.control],
            **settings}

  def command(self, config_file: str, out: str, controls, settings, analysis=None) -> str:
    """The `agg_jax.main` command that trains this cell alone; with `analysis` (settings of
    config.analysis), the command that analyses it."""
    fields = {**self.overrides(controls, settings),
              **{f"analysis.{k}": v for k, v in (analysis or {}).items()}}
    flags = " ".join(f"--config.{key}={_flag_value(value)}" for key, value in fields.items())
    mode = " --mode=analyze" if analysis else ""
    return (f"python -m agg_jax.main --config={config_file}:{self.method} "
            f"--workdir={self.workdir(out)}{mode} {flags}")


def _flag_value(value) -> str:
  return str(value).replace(" ", "") if isinstance(value, tuple) else str(value)


def load_config_module(path: str):
  """The config file as a module (get_config, METHODS, CONTROLS, GRID)."""
  spec = importlib.util.spec_from_file_location("grid_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def cell_config(module, cell: Cell, controls, settings) -> ml_collections.ConfigDict:
  """The config file's get_config(method) with the cell's overrides; KeyError naming a field
  the config does not have."""
  config = module.get_config(cell.method)
  for key, value in cell.overrides(controls, settings).items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node.get(parent) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise KeyError(f"{key}: the config has no such field")
    node[leaf] = value
  return config


def is_done(workdir: str) -> bool:
  return (run.results_dir(workdir) / CELL_JSON).exists()


def run_cell(config: ml_collections.ConfigDict, workdir: str, *, unseen_real: str | None,
             analyze: bool, cam: str = "grad") -> dict:
  """Trains the cell in this process (as `agg_jax.main` would), scores `unseen_real` (a real
  source of the dataset kept out of training) at the validation threshold and, for the
  aggregation head, runs the analysis (importance, trimming to TRIM_SIZE, `cam`). Writes and
  returns results/cell.json."""
  from agg_jax import train  # pylint: disable=import-outside-toplevel
  seconds = {}
  start = time.perf_counter()
  run.check_config(config, jax.device_count())
  if not run.config_path(workdir).exists():
    run.save_config(workdir, config)
  results = train.train_and_evaluate(config, workdir)
  seconds["train_and_test"] = round(time.perf_counter() - start, 1)
  cell = {"ap": {name: 100 * m[m["level"]]["ap"] for name, m in results["test_sets"].items()}}
  if unseen_real:
    start = time.perf_counter()
    cell["unseen_real"] = score_unseen_real(config, workdir, unseen_real)
    seconds["unseen_real"] = round(time.perf_counter() - start, 1)
  if analyze:
    from agg_jax.analysis import analyze as analysis  # pylint: disable=import-outside-toplevel
    start = time.perf_counter()
    config = ml_collections.ConfigDict(config.to_dict())
    config.analysis.update(analysis_settings(cam))
    summary = analysis.analyze_run(config, workdir)
    cell["trimmed"] = trimmed_ap(workdir)
    cell["ranking"] = summary["ranking"]
    seconds["analysis"] = round(time.perf_counter() - start, 1)
  cell["seconds"] = seconds
  fileio.atomic_write_text(run.results_dir(workdir) / CELL_JSON, json.dumps(cell, indent=2))
  jax.clear_caches()  # the next cell compiles its own functions (from the persistent cache)
  return cell


def analysis_settings(cam: str) -> dict:
  """The analysis a grid cell gets: trimming to TRIM_SIZE, CAMs of kind `cam`."""
  return {"trim_sizes": (TRIM_SIZE,), "cam": cam}


def read_cell(workdir: str) -> dict:
  return json.loads((run.results_dir(workdir) / CELL_JSON).read_text())


def trimmed_ap(workdir: str) -> dict[str, float]:
  """AP (%, as trimming.csv holds it) per test set of the masked top-TRIM_SIZE model."""
  import csv  # pylint: disable=import-outside-toplevel
  from agg_jax.analysis import analyze  # pylint: disable=import-outside-toplevel
  with (analyze.analysis_dir(workdir) / "trimming.csv").open() as f:
    return {row["test"]: float(row["ap_trimmed"]) for row in csv.DictReader(f)
            if row["variant"] == "masked" and int(row["size"]) == TRIM_SIZE}


def score_unseen_real(config, workdir: str, source: str) -> dict:
  """The false-positive rate on every face of a real source that training never saw, at the
  threshold chosen on the validation split (Youden's J, as the export chooses it)."""
  from agg_jax import evaluate, export, sharding  # pylint: disable=import-outside-toplevel
  from agg_jax.data import tfds_source  # pylint: disable=import-outside-toplevel
  mesh = sharding.make_mesh(config.mesh)
  model, variables = run.restore_best(workdir, config, mesh)
  predict = evaluate.make_predict_fn(model, mesh)
  batch = config.train.eval_batch_size
  validation = tfds_source.load(config.data).validation
  threshold = export.choose_threshold(
      validation.labels, evaluate.score_split(predict, variables, validation, batch, mesh))
  faces = tfds_source.real_faces(config.data, source)
  scores = evaluate.score_split(predict, variables, faces, batch, mesh)
  return {"source": source, "faces": int(len(scores)), "threshold": threshold["value"],
          "false_positive_rate": float(np.mean(scores >= threshold["value"])),
          "mean_probability": float(np.mean(scores))}
