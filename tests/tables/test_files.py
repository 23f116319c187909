"""Tests of agg_jax.tables.files: a run's ap.csv and summary.md, and the --out folder."""

import csv
import json

import pytest

from agg_jax import metrics
from agg_jax import tables


def test_write_run_tables(two_runs):
  results = two_runs[0] / "results"
  tables.write_run_tables(results)
  saved = json.loads((results / "metrics.json").read_text())
  with (results / "ap.csv").open() as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["model", "train", "PGAN", "SGAN", "Glow", "mean", "std", "cov_inv"]
  assert len(rows) == 2 and rows[1][:2] == ["agg", "PGAN"]
  video_aps = [100 * saved["test_sets"][t]["video"]["ap"] for t in ("PGAN", "SGAN", "Glow")]
  summary = metrics.cov_summary(video_aps)
  assert [float(v) for v in rows[1][2:]] == pytest.approx(
      video_aps + [summary["mean"], summary["std"], summary["cov_inv"]], abs=1e-4
  )
  markdown = (results / "summary.md").read_text()
  assert "| video (default) |" in markdown and "| frame |" in markdown
  assert "includes the in-domain tests" in markdown and "| PGAN (frame) |" in markdown


def test_write_run_tables_marks_the_excluded_in_domain_test(two_runs):
  results = two_runs[0] / "results"
  tables.write_run_tables(results, exclude_in_domain=True)
  with (results / "ap.csv").open() as f:
    header, row = list(csv.reader(f))
  assert header == ["model", "train", "PGAN†", "SGAN", "Glow", "mean", "std", "cov_inv"]
  saved = json.loads((results / "metrics.json").read_text())
  summary = metrics.cov_summary(
      [100 * saved["test_sets"][t]["video"]["ap"] for t in ("SGAN", "Glow")]
  )
  assert row[5:] == [
      "" if summary[k] is None else f"{summary[k]:.4f}" for k in ("mean", "std", "cov_inv")
  ]
  markdown = (results / "summary.md").read_text().splitlines()
  assert "| Level | PGAN† | SGAN | Glow | n | mean | std | CoV^-1 |" in markdown
  assert any(line.startswith("† In-domain test (test set = training set)") for line in markdown)


def test_write_tables_writes_every_format(two_runs, tmp_path):
  records = tables.load_runs(two_runs)
  markdown = tables.write_tables(records, tmp_path / "out", exclude_in_domain=True)
  out = tmp_path / "out"
  assert (out / "tables.md").read_text() == markdown
  assert "| Model | PGAN→PGAN† | PGAN→SGAN |" in markdown
  assert "## " not in markdown and "**agg: AP (%)**" in markdown  # the training x test matrix
  assert r"PGAN$^\dagger$" in (out / "tables.tex").read_text()
  assert (out / "ap_table.csv").read_text().startswith("Model,PGAN→PGAN†,PGAN→SGAN,")
  assert (out / "summary.csv").read_text().splitlines()[1].startswith("agg,4,")
  assert tables.read_long_csv(out / "ap_long.csv") == [
      tables.ApRecord(r.model, r.train, r.test, r.ap, "video", f"{out / 'ap_long.csv'}:{i + 2}")
      for i, r in enumerate(records)
  ]


def test_csv_outputs_round_trip(tmp_path):
  records = [
      tables.ApRecord("A & B", "X", "X", 99.0),
      tables.ApRecord("A & B", "X", "Y", 60.0),
      tables.ApRecord("C_1", "X", "X", 95.0),
      tables.ApRecord("C_1", "X", "Y", 80.0),
  ]
  table_csv = tables.to_csv(tables.comparison_table(records)).splitlines()
  assert table_csv[0] == "Model,X,Y,n,mean,std,CoV^-1"
  assert table_csv[1] == "A & B,99.0000,60.0000,2,79.5000,19.5000,4.0769"
  path = tmp_path / "long.csv"
  path.write_text(tables.long_csv(records))
  assert tables.read_long_csv(path) == [
      tables.ApRecord(r.model, r.train, r.test, r.ap, source=f"{path}:{i + 2}")
      for i, r in enumerate(records)
  ]
