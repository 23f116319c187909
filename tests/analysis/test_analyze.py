"""`--mode=analyze` as a user runs it on a trained run: every file, the AP it recomputes against
the run's own results, the trimmed models, and the report page opened in headless Chromium."""

import csv
import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from agg_jax import data, exported, run, sharding
from agg_jax.analysis import analyze, settings, trimming
from tests.analysis.page_check import check_page, requires_browser
from tests.helpers import TINY_RUN, one_line_error, run_module

FILES = ("importance.csv", "importance.png", "trimming.csv", "trimming_summary.csv",
         "trimming.json", "trimming_degradation.png", "trimming_experiments_masked.png",
         "trimming_experiments_refit.png", "cam_score.png", "cam_grad.png", "summary.json",
         "report.html")


def main(*args, workdir, cache):
  return run_module("agg_jax.main", f"--workdir={workdir}", f"--compilation_cache={cache}",
                    *args)


@pytest.fixture(scope="module")
def analyzed_run(tiny_run, tmp_path_factory, xla_cache):
  """A copy of the tiny run (conftest), then `--mode=analyze` on its directory alone."""
  workdir = tmp_path_factory.mktemp("analyzed") / "run"
  shutil.copytree(tiny_run, workdir)
  analyzed = main("--mode=analyze", workdir=workdir, cache=xla_cache)
  assert analyzed.returncode == 0, analyzed.stderr[-3000:]
  return workdir, analyzed


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_analyze_writes_every_file_and_recomputes_the_runs_ap(analyzed_run):
  workdir, out = analyzed_run
  folder = workdir / "analysis"
  assert [name for name in FILES if not (folder / name).is_file()] == []
  assert "analysis written to" in out.stdout
  assert "Score-CAM" in out.stderr  # progress of the long part
  summary = json.loads((folder / "summary.json").read_text())
  assert len(summary["ranking"]) == 7 and sorted(summary["ranking"]) == summary["blocks"]
  assert summary["images"]["validation"] == 16
  # The full model's AP from the primitives equals the AP evaluate wrote from its scores.
  metrics = json.loads((workdir / "results" / "metrics.json").read_text())
  rows = _rows(folder / "trimming.csv")
  for row in rows:
    if row["size"] == "7" and row["variant"] == "masked":
      assert float(row["ap_trimmed"]) == pytest.approx(float(row["ap_entire"]), abs=1e-3)
    expected = 100 * metrics["test_sets"][row["test"]]["frame"]["ap"]
    assert float(row["ap_entire"]) == pytest.approx(expected, abs=1e-3)
  assert {row["size"] for row in rows} == {"1", "3", "5", "7"}
  trimmed = json.loads((folder / "trimming.json").read_text())["trimmed"]
  one = next(t for t in trimmed if t["size"] == 1 and t["variant"] == "masked")
  assert one["blocks"] == [summary["blocks"].index(summary["ranking"][0])]
  speed = {(r["variant"], r["size"]): r for r in _rows(folder / "trimming_summary.csv")}
  assert int(speed[("masked", "1")]["backbone_blocks"]) <= 7
  assert float(speed[("masked", "7")]["analysis_fraction"]) == pytest.approx(1.0, abs=1e-3)


@requires_browser
def test_the_report_page_loads_every_image_without_errors(analyzed_run, tmp_path):
  workdir, _ = analyzed_run
  page = check_page(workdir / "analysis" / "report.html", tmp_path / "report.png")
  assert page["errors"] == [] and page["broken_images"] == []
  assert page["images"] == 6  # importance, two CAMs, three trimming figures
  assert any("Trimming" in heading for heading in page["headings"])
  assert page["screenshot"].stat().st_size > 50_000


def test_analysis_settings_can_change_on_a_saved_run(analyzed_run):
  # They are execution fields: a --config with other analysis settings agrees with the run.
  workdir, _ = analyzed_run
  given = run.load_config(workdir)
  with given.unlocked():
    given.analysis.update({"cam": "grad", "trim_sizes": (2,), "rank_by": "separation"})
  resolved = settings.of(run.resolve_config(workdir, given, "analyze"))
  assert (resolved.cam, resolved.trim_sizes, resolved.rank_by) == ("grad", (2,), "separation")
  assert settings.of(run.load_config(workdir)).cam == "score"  # the saved config is unchanged


def test_analyze_mistakes_are_one_line(analyzed_run, tmp_path, xla_cache):
  out = main("--mode=analyze", workdir=tmp_path / "none", cache=xla_cache)
  assert "no run there" in one_line_error(out, "agg_jax.main")
  assert not (tmp_path / "none").exists()
  workdir, _ = analyzed_run
  out = main("--mode=analyze", *TINY_RUN, "--config.analysis.cam=lime",
             workdir=workdir, cache=xla_cache)
  assert "config.analysis.cam='lime': use one of" in one_line_error(out, "agg_jax.main")


def test_ap_deg_pools_the_experiments_of_several_runs(analyzed_run, tmp_path):
  workdir, _ = analyzed_run
  shutil.copytree(workdir, tmp_path / "second")
  out = run_module("agg_jax.analysis", workdir, tmp_path / "second", f"--out={tmp_path / 'all'}")
  assert out.returncode == 0, out.stderr[-3000:]
  single = {(r["variant"], r["size"]): r for r in _rows(workdir / "analysis" /
                                                        "trimming_summary.csv")}
  pooled = _rows(tmp_path / "all" / "trimming_summary.csv")
  assert len(pooled) == len(single)
  for row in pooled:  # the same experiments twice: the same mean
    assert row["experiments"] == "6"
    assert float(row["ap_deg"]) == pytest.approx(
        float(single[(row["variant"], row["size"])]["ap_deg"]), abs=1e-3)
  assert "| masked | 1 | 6 |" in out.stdout
  assert (tmp_path / "all" / "trimming_degradation.png").is_file()
  missing = run_module("agg_jax.analysis", workdir, tmp_path / "nothing")
  assert "no trimming table" in one_line_error(missing, "agg_jax.analysis")


def test_a_run_without_the_aggregation_head_is_refused_before_any_work(tmp_path):
  config = ml_collections.ConfigDict({"model": {"head": "logits"}})
  with pytest.raises(run.RunError, match="model.head='logits'; the analyses read the "
                     "aggregation head's primitives"):
    analyze.analyze_run(config, tmp_path)
  assert list(tmp_path.iterdir()) == []


def test_the_trimmed_export_scores_as_the_analysis_trimmed_model(analyzed_run, tmp_path,
                                                                 xla_cache):
  workdir = tmp_path / "run"
  shutil.copytree(analyzed_run[0], workdir)
  out = main("--mode=export", "--trimmed=1", workdir=workdir, cache=xla_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  detector = exported.load(workdir / "export" / "trimmed_1")
  saved = json.loads((workdir / "analysis" / "trimming.json").read_text())
  entry = next(t for t in saved["trimmed"] if t["size"] == 1 and t["variant"] == "masked")
  assert detector.info["blocks"] == [saved["ranking"][0]] == detector.cam_layers
  config = run.load_config(workdir)
  split = data.load(config.data).test["splice"]
  images = split.images.read(np.arange(len(split)))
  model, variables = run.restore_best(workdir, config, sharding.make_mesh(config.mesh))
  _, aux = jax.jit(model.apply)(variables, images)
  expected = jax.nn.sigmoid(trimming.Trimmed.from_json(entry).logits(np.asarray(
      aux["primitives"])))
  np.testing.assert_allclose(detector.probabilities(images), expected, atol=1e-5)
  out = main("--mode=export", "--trimmed=2", workdir=workdir, cache=xla_cache)
  assert "--trimmed=2: the analysis has no top-2 model (it has [1, 3, 5, 7])" in \
      one_line_error(out, "agg_jax.main")
