"""Tests of `python -m agg_jax.tables`: all formats written; usage mistakes: one line, status 2."""

import json

import pytest

from agg_jax import cli
from agg_jax import tables
from tests.helpers import one_line_error, run_module

PROG = "agg_jax.tables"


def test_cli_on_two_runs_writes_every_format(two_runs, tmp_path):
  out = tmp_path / "tables"
  done = run_module(PROG, *two_runs, f"--out={out}", "--exclude-in-domain", timeout=120)
  assert done.returncode == 0, done.stderr
  assert "PGAN→SGAN" in done.stdout and "Evaluation level: video." in done.stdout
  written = sorted(p.name for p in out.iterdir())
  assert written == ["ap_long.csv", "ap_table.csv", "summary.csv", "tables.md", "tables.tex"]
  assert len(tables.read_long_csv(out / "ap_long.csv")) == 6


def test_cli_reports_bad_input_without_traceback(tmp_path):
  bad = tmp_path / "bad.csv"
  bad.write_text("model,train,test\nm,A,B\n")
  done = run_module(PROG, f"--csv={bad}", timeout=120)
  assert done.returncode == cli.EXIT_USAGE
  assert "bad.csv: missing column(s) ['ap']" in one_line_error(done, PROG)


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "no inputs: give run directories and/or --csv=FILE"),
        (("--csv={tmp}/nope.csv",), "{tmp}/nope.csv: no such CSV file"),
        (("{tmp}/run_x",), "{tmp}/run_x: not a run directory"),
        (("--level=bogus", "{tmp}/run_x"), "flag --level=bogus: value should be one of"),
        (("--from-scores", "{tmp}/torn"), "{tmp}/torn/results/scores/DF.npz: not a readable score"),
    ],
)
def test_usage_mistakes_are_one_line_and_status_2(tmp_path, args, message):
  torn = tmp_path / "torn" / "results" / "scores"
  torn.mkdir(parents=True)
  (torn / "DF.npz").write_bytes(b"PK\x03\x04torn")
  config = {"model": {"name": "m"}, "data": {"train_set": "DF"}}
  (tmp_path / "torn" / "config.json").write_text(json.dumps(config))
  done = run_module(PROG, *(arg.format(tmp=tmp_path) for arg in args), timeout=120)
  assert done.returncode == cli.EXIT_USAGE
  assert one_line_error(done, PROG).startswith(f"{PROG}: error: {message.format(tmp=tmp_path)}")
  assert done.stdout == ""
