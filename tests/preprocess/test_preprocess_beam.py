"""The Apache Beam pipeline (``preprocess.beam``): same outputs as a local run, resumable, and
the manifest parts its workers write."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agg_jax.preprocess import beam, pipeline, runner
from agg_jax.preprocess.manifest import MANIFEST, PARTS, Manifest, append_part, read_records
from agg_jax.preprocess.pipeline import Settings
from tests.helpers import faces_mini, requires_faces_mini, run_module
from tests.preprocess.broken_files import BROKEN, check_broken_records, write_broken_files


def _noise_images(folder: Path, n: int) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(n):
    pixels = np.random.default_rng(i).uniform(0, 255, (90, 120, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(folder / f"noise_{i}.png")


def _by_source(records: list[dict]) -> dict:
  return {(r["source"], r["frame"]): r for r in records}


def test_beam_run_writes_the_records_of_a_local_run(tmp_path):
  write_broken_files(tmp_path / "in")
  _noise_images(tmp_path / "in" / "good", 2)
  local = runner.run([str(tmp_path / "in")], str(tmp_path / "local"), workers=1, progress=False)
  piped = beam.run([str(tmp_path / "in")], str(tmp_path / "beam"), workers=1)
  records = read_records(str(tmp_path / "beam"))
  check_broken_records(records)
  assert _by_source(records) == _by_source(read_records(str(tmp_path / "local")))
  assert (piped.sources, piped.ok, piped.no_face, piped.errors) == (
      local.sources, local.ok, local.no_face, local.errors)
  assert piped.errors >= len(BROKEN)
  assert not os.listdir(tmp_path / "beam" / PARTS)  # Folded into the manifest.
  assert (tmp_path / "beam" / beam.LOG).exists()
  again = beam.run([str(tmp_path / "in")], str(tmp_path / "beam"), workers=1)
  assert again.skipped_done == again.sources and again.frames == 0


def test_the_progress_bar_follows_the_workers_parts(tmp_path, capfd):
  _noise_images(tmp_path / "in", 3)
  beam.run([str(tmp_path / "in")], str(tmp_path / "out"), workers=1)
  err = capfd.readouterr().err
  assert "aligning: 100%" in err and "files 3/3, ok 0, no face 3, errors 0" in err
  assert "apache_beam" not in err  # Beam's own logging went to beam.log.


def test_a_pipeline_that_dies_keeps_what_it_finished(tmp_path, monkeypatch):
  _noise_images(tmp_path / "in", 6)
  calls = []
  process = pipeline.Processor.__call__

  def dies_on_the_last(self, source):
    calls.append(source.path)
    if len(calls) == 6:
      raise RuntimeError("simulated worker crash")
    return process(self, source)

  monkeypatch.setattr(pipeline.Processor, "__call__", dies_on_the_last)
  out = tmp_path / "out"
  with pytest.raises(RuntimeError, match="the Beam pipeline failed.*simulated worker crash"):
    beam.run([str(tmp_path / "in")], str(out), workers=1)
  monkeypatch.setattr(pipeline.Processor, "__call__", process)
  resumed = beam.run([str(tmp_path / "in")], str(out), workers=1)
  assert resumed.skipped_done == 5 and resumed.frames == resumed.no_face == 1
  assert sorted(r["source"] for r in read_records(str(out))) == sorted(
      str(p) for p in (tmp_path / "in").iterdir())


def test_beam_options_choose_the_runner(tmp_path):
  """The DirectRunner named explicitly (offline, it falls back from Prism to the FnApiRunner)."""
  _noise_images(tmp_path / "in", 2)
  summary = beam.run([str(tmp_path / "in")], str(tmp_path / "out"),
                     options="--runner=DirectRunner --direct_num_workers=1", progress=False)
  assert summary.no_face == 2 and len(read_records(str(tmp_path / "out"))) == 2


def test_manifest_folds_in_parts_last_write_wins(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  settings = Settings().key()
  old = {"source": "/a.png", "frame": None, "status": "no_face", "settings": settings}
  (out / MANIFEST).write_text(json.dumps(old) + "\n")
  new = dict(old, status="ok", output="a.png")
  other = dict(old, source="/b.png")
  append_part(str(out / PARTS / "w1.jsonl"), "/a.png", [dict(old, status="error: x")])
  append_part(str(out / PARTS / "w1.jsonl"), "/b.png", [other])
  append_part(str(out / PARTS / "w2.jsonl"), "/a.png", [new])  # A retried bundle, later file.
  with open(out / PARTS / "w2.jsonl", "a", encoding="utf-8") as f:
    f.write('{"source": "/c.png", "rec')  # A worker killed mid-write.
  manifest = Manifest(str(out))
  assert manifest.dropped_lines == 1
  assert dict(manifest.by_source) == {"/a.png": [new], "/b.png": [other]}
  assert read_records(str(out)) == [new, other]
  assert not list((out / PARTS).iterdir())


def test_missing_beam_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "apache_beam", None)  # Makes the import fail.
  with pytest.raises(runner.UsageProblem, match=r"pip install 'agg_jax\[beam\]'"):
    beam.import_beam()


@requires_faces_mini
def test_cli_beam_with_worker_processes_aligns_like_a_local_run(tmp_path):
  """--beam --workers=2: the FnApiRunner in multi-processing mode, through the command line."""
  faces = [f for folder in ("real/yonsei", "fake/gan", "fake/sd21") for f in faces_mini(folder, 2)]
  inputs = [f"--input={f}" for f in faces]
  result = run_module("agg_jax.preprocess", "--noprogress", *inputs,
                      f"--output={tmp_path / 'beam'}", "--beam", "--workers=2", timeout=300)
  assert result.returncode == 0, result.stderr
  assert "6 files found, 0 already done" in result.stderr
  assert "6 ok, 0 no face, 0 errors" in result.stderr
  assert "apache_beam" not in result.stderr  # Beam's logging went to beam.log.
  local = runner.run([str(f) for f in faces], str(tmp_path / "local"), workers=1, progress=False)
  assert local.ok == 6
  piped = _by_source(read_records(str(tmp_path / "beam")))
  assert piped == _by_source(read_records(str(tmp_path / "local")))
  for r in piped.values():
    assert ((tmp_path / "beam" / r["output"]).read_bytes()
            == (tmp_path / "local" / r["output"]).read_bytes())
