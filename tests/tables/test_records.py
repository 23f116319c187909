"""Tests of agg_jax.tables.records: long-format CSV files and run directories as ApRecords."""

import json

import numpy as np
import pytest

from agg_jax import run
from agg_jax import tables


def _write(path, text):
  path.write_text(text)
  return path


# ----------------------------------------------------------------------------- CSV input


def test_long_csv_in_fractions_is_converted_to_percent(tmp_path):
  path = _write(tmp_path / "a.csv", "model,train,test,ap,extra\nm,A,A,0.98,x\nm,A,B,0.5,y\n")
  records = tables.read_long_csv(path)
  assert [r.ap for r in records] == pytest.approx([98.0, 50.0])
  assert records[1].source == f"{path}:3"
  assert tables.read_long_csv(path, ap_scale="percent")[0].ap == pytest.approx(0.98)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model,train,ap\nm,A,90\n", r"a\.csv: missing column\(s\) \['test'\]"),
        ("model,train,test,ap\nm,A,A,90\nm,A,B,150\n", r"a\.csv:3: AP 150% is outside \[0, 100\]"),
        ("model,train,test,ap\nm,A,A,-0.5\n", r"a\.csv:2: AP -50% is outside"),
        ("model,train,test,ap\nm,A,A,high\n", r"a\.csv:2: column 'ap' is not a number: 'high'"),
        ("model,train,test,ap\nm,A,,90\n", r"a\.csv:2: empty model, train or test"),
        (
            "model,train,test,ap\nm,A,B,90\nm,A,B,91\n",
            r"test='B' appears twice: .*a\.csv:2 and .*a\.csv:3",
        ),
    ],
)
def test_bad_long_csv_names_file_and_line(tmp_path, text, message):
  with pytest.raises(ValueError, match=message):
    tables.read_long_csv(_write(tmp_path / "a.csv", text))


def test_unreadable_csv_is_named(tmp_path):
  path = tmp_path / "a.csv"
  path.write_bytes(b"model,train,test,ap\n\xff\xfe,A,B,90\n")
  with pytest.raises(ValueError, match=r"a\.csv: not a readable CSV file"):
    tables.read_long_csv(path)


def test_unknown_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.csv: no such CSV file"):
    tables.read_long_csv(tmp_path / "nope.csv")
  with pytest.raises(FileNotFoundError, match="run_x: not a run directory"):
    tables.load_runs([tmp_path / "run_x"])


# ----------------------------------------------------------------------------- run directories


def test_load_runs_from_metrics_and_from_scores_agree(two_runs):
  from_metrics = tables.load_runs(two_runs)
  from_scores = tables.load_runs(two_runs, from_scores=True)
  assert [(r.train, r.test, r.level) for r in from_metrics] == [
      (train, test, "video") for train in ("PGAN", "SGAN") for test in ("PGAN", "SGAN", "Glow")
  ]
  ap = {(r.train, r.test): r.ap for r in from_metrics}
  assert {(r.train, r.test): r.ap for r in from_scores} == pytest.approx(ap)
  frame = tables.load_runs(two_runs, level="frame")
  assert {r.level for r in frame} == {"frame"} and frame[0].ap != from_metrics[0].ap


def test_run_without_metrics_json_uses_config_and_scores(tmp_path, make_run):
  run_dir = make_run(
      tmp_path / "r",
      model="agg",
      train="FS",
      tests=["FS", "DF"],
      seed=3,
      videos=False,
      write_metrics=False,
  )
  records = tables.load_runs([run_dir], from_scores=True)
  assert [(r.model, r.train, r.test, r.level) for r in records] == [
      ("agg", "FS", "DF", "frame"),
      ("agg", "FS", "FS", "frame"),
  ]
  with pytest.raises(ValueError, match="no video-level metrics"):
    tables.load_runs([run_dir], from_scores=True, level="video")
  (run_dir / "config.json").write_text(json.dumps({"model": {"name": "agg"}, "data": {}}))
  with pytest.raises(ValueError, match=r"config\.json: missing key 'data\.train_set'"):
    tables.load_runs([run_dir], from_scores=True)


def test_score_files_round_trip_without_pickle(tmp_path):
  path = tmp_path / "DF.npz"
  run.save_scores(
      path,
      scores=[0.25, 0.5],
      labels=[0, 1],
      ids=["a/0", "b/0"],
      video_ids=np.array(["a", "b"], dtype=object),
      frame_indices=[0, 0],
  )
  saved = run.load_scores(path)
  assert saved["video_ids"].tolist() == ["a", "b"] and saved["scores"].tolist() == [0.25, 0.5]
  assert sorted(saved) == ["frame_indices", "ids", "labels", "scores", "video_ids"]
  with pytest.raises(ValueError, match=r"DF\.npz: arrays differ in length"):
    run.save_scores(path, scores=[0.1], labels=[0, 1], ids=["a", "b"])


def test_score_file_without_labels_is_named(tmp_path, make_run):
  run_dir = make_run(tmp_path / "r", model="agg", train="FS", tests=["FS"], seed=4)
  np.savez(run_dir / "results" / "scores" / "DF.npz", scores=np.zeros(3))
  with pytest.raises(ValueError, match=r"DF\.npz: missing array\(s\) \['labels'\]"):
    tables.load_runs([run_dir], from_scores=True)


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04torn"])
def test_unreadable_score_file_is_named(tmp_path, make_run, content):
  run_dir = make_run(tmp_path / "r", model="agg", train="FS", tests=["FS"], seed=4)
  (run_dir / "results" / "scores" / "DF.npz").write_bytes(content)
  with pytest.raises(ValueError, match=r"DF\.npz: not a readable score file"):
    tables.load_runs([run_dir], from_scores=True)


def test_one_class_test_set_is_named(tmp_path, make_run):
  run_dir = make_run(tmp_path / "r", model="agg", train="FS", tests=["FS"], seed=5)
  path = run_dir / "results" / "metrics.json"
  saved = json.loads(path.read_text())
  saved["test_sets"]["FS"]["video"]["ap"] = None
  path.write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r"metrics\.json \[FS\]: AP undefined"):
    tables.load_runs([run_dir])
