"""Real faces from ../shared/data/faces-mini: faces found, alignment precision, odd formats of a
real face next to broken files, resuming. Skipped where the shared data is absent."""

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from agg_jax.preprocess import align, quality, runner
from agg_jax.preprocess.detect import FaceDetector
from agg_jax.preprocess.landmarks import Landmarker, eye_centers
from agg_jax.preprocess.manifest import read_records
from agg_jax.preprocess.pipeline import Processor, Settings
from agg_jax.preprocess.sources import Source
from tests.helpers import FACES_MINI, faces_mini, requires_faces_mini, run_module
from tests.preprocess.broken_files import BROKEN, check_broken_records, write_broken_files

FOLDERS = ("real/yonsei", "real/amfd", "fake/photoshop", "fake/gan", "fake/sd21")
PER_FOLDER = 10

pytestmark = requires_faces_mini


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
  """10 images per folder through the worker-process path; (records, out_dir)."""
  out = tmp_path_factory.mktemp("aligned")
  inputs = [f for folder in FOLDERS for f in faces_mini(folder, PER_FOLDER)]
  summary = runner.run(inputs, str(out), workers=2, progress=False)
  assert summary.sources == len(inputs) and summary.errors == 0
  return read_records(str(out)), out


def test_faces_found_in_every_folder(aligned):
  records, out = aligned
  for folder in FOLDERS:
    mine = [r for r in records if f"/{folder}/" in r["source"]]
    assert len(mine) == PER_FOLDER
    found = sum(r["status"] == "ok" for r in mine)
    assert found >= PER_FOLDER - 1, f"{folder}: face found in {found}/{PER_FOLDER}"
  for r in records:
    if r["status"] == "ok":
      png = cv2.imread(str(out / r["output"]))
      assert png.shape == (256, 256, 3)
      assert r["faces"] >= 1 and len(r["landmarks"]) == 68 and np.shape(r["affine"]) == (2, 3)
      assert r["output"].startswith(r["source"].split("/")[-3] + "/")  # Mirrors real/..., fake/...
      # The recorded matrix puts the recorded left eye on the template.
      eye = align.transform(np.array(r["affine"]), [r["eye"]])[0]
      np.testing.assert_allclose(eye, align.template(256), atol=0.05)


def test_left_eye_redetected_on_aligned_faces_sits_on_the_template(aligned):
  records, out = aligned
  detector, landmarker = FaceDetector(), Landmarker()
  deviations = []
  for r in records:
    if r["status"] == "ok":
      rgb = cv2.cvtColor(cv2.imread(str(out / r["output"])), cv2.COLOR_BGR2RGB)
      det = detector.detect(rgb)
      assert det is not None, f"no face found again in the aligned {r['output']}"
      deviations.append(eye_centers(landmarker(rgb, det.box))[0] - align.template(256))
  deviations = np.array(deviations)
  assert np.all(deviations.std(axis=0) < 2.0), deviations.std(axis=0)  # The goal.
  assert np.all(np.abs(deviations.mean(axis=0)) < 1.0), deviations.mean(axis=0)
  assert np.mean(np.linalg.norm(deviations, axis=1) < 4.0) >= 0.95


def test_plausible_fits_pass_and_broken_geometry_is_flagged(aligned):
  records, _ = aligned
  ok = [r for r in records if r["status"] == "ok"]
  assert all(isinstance(r["quality"], list) for r in ok)
  assert sum(bool(r["quality"]) for r in ok) <= 0.1 * len(ok)  # Most faces-mini fits are fine.
  r = next(r for r in ok if not r["quality"])
  landmarks, box = np.array(r["landmarks"]), np.array(r["box"])
  assert quality.assess(landmarks, box) == []

  def reasons(points, b=box, move=0.0):
    return " ".join(quality.assess(points, b, move))

  turned = landmarks.copy()  # The far eye of a turned head looks narrow.
  eye = turned[42:48]
  turned[42:48] = eye.mean(axis=0) + (eye - eye.mean(axis=0)) * [0.5, 1.0]
  assert "eye widths differ" in reasons(turned)
  bent = landmarks.copy()  # Nose bridge turned 60 degrees.
  cos, sin = np.cos(np.radians(60)), np.sin(np.radians(60))
  bent[27:31] = bent[27] + (bent[27:31] - bent[27]) @ np.array([[cos, sin], [-sin, cos]])
  assert "nose line" in reasons(bent)
  wide = box + [-box[2] + box[0], 0, box[2] - box[0], 0]  # Box 3x wider than the face.
  assert "eye distance" in reasons(landmarks, wide)
  assert "did not settle" in reasons(landmarks, move=3.0)


TURNED_FACE = FACES_MINI / "real" / "yonsei" / "yonsei_546ceaf5af26.jpg"


@pytest.mark.skipif(not TURNED_FACE.exists(), reason=f"{TURNED_FACE} absent")
def test_refinement_puts_a_turned_face_eye_on_the_template(tmp_path):
  """yonsei_546ceaf5af26: a laughing 3/4 view cut by the border, whose single refinement pass
  left the left eye 8 px (fresh detection) and 19 px (face region) off the template on the
  aligned face; the averaged passes put it within a few px by both measures."""
  (record,) = Processor(Settings(), str(tmp_path))(Source(str(TURNED_FACE), "face", "image"))
  assert record["status"] == "ok"
  rgb = cv2.cvtColor(cv2.imread(str(tmp_path / record["output"])), cv2.COLOR_BGR2RGB)
  half = 256 / 1.3 / 2
  for box in (FaceDetector().detect(rgb).box, (128 - half, 128 - half, 128 + half, 128 + half)):
    left, _ = eye_centers(Landmarker()(rgb, box))
    assert np.linalg.norm(left - align.template(256)) < 5.0, box


def _formats_of(photo: str, folder: Path) -> list[str]:
  """The same real face as grayscale, RGBA, 16-bit (grey and RGB), CMYK, palette, and a JPEG
  named .mp4."""
  rgb = np.asarray(Image.open(photo).convert("RGB"))
  im = Image.fromarray(rgb)
  im.convert("L").save(folder / "grey.png")
  rgba = im.convert("RGBA")
  rgba.putalpha(200)
  rgba.save(folder / "rgba.png")
  grey16 = (np.asarray(im.convert("L")).astype(np.uint16) * 257)
  Image.fromarray(grey16).save(folder / "grey16.png")
  assert Image.open(folder / "grey16.png").mode.startswith("I")
  cv2.imwrite(str(folder / "rgb16.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16)
              * 257)
  im.convert("CMYK").save(folder / "cmyk.jpg")
  im.convert("P").save(folder / "palette.gif")
  buf = io.BytesIO()
  im.save(buf, "JPEG")
  (folder / "photo_named.mp4").write_bytes(buf.getvalue())
  return ["grey.png", "rgba.png", "grey16.png", "rgb16.png", "cmyk.jpg", "palette.gif",
          "photo_named.mp4"]


def test_folder_of_broken_files_next_to_good_ones(tmp_path):
  """Every kind of bad input beside real faces in odd formats: the faces are aligned, the bad
  files get error records, and the exit status (1) says that not every file was processed."""
  folder = tmp_path / "in"
  write_broken_files(folder)
  good = _formats_of(faces_mini("fake/gan", 1)[0], folder)
  out = tmp_path / "out"
  result = run_module("agg_jax.preprocess", f"--input={folder}", f"--output={out}", "--workers=1",
                      "--noprogress", timeout=300)
  assert result.returncode == 1, result.stderr
  records = read_records(str(out))
  check_broken_records(records)
  for name in good:
    (record,) = [r for r in records if os.path.basename(r["source"]) == name]
    assert record["status"] == "ok", (name, record["status"])
    assert cv2.imread(str(out / record["output"])).shape == (256, 256, 3)
  assert "extension .mp4 says video but the content is image" in next(
      r["warning"] for r in records if r["source"].endswith("photo_named.mp4"))
  assert f"{len(BROKEN) + 1 + len(good)} files found" in result.stderr
  assert "errors" in result.stderr and "error: " in result.stderr


def test_rerun_skips_done_and_redoes_a_lost_png(tmp_path):
  inputs = faces_mini("real/amfd", 3)
  out = tmp_path / "out"
  first = runner.run(inputs, str(out), workers=1, progress=False)
  assert first.ok == 3
  records = read_records(str(out))
  os.unlink(out / records[1]["output"])
  again = runner.run(inputs, str(out), workers=1, progress=False)
  assert again.skipped_done == 2 and again.ok == 1
  assert (out / records[1]["output"]).exists()
  assert sorted(r["source"] for r in read_records(str(out))) == sorted(map(os.path.abspath, inputs))


def test_cnn_detector_frames_faces_like_hog(tmp_path):
  """--detector=cnn: CNN boxes are mapped to HOG units, so the crop's scale barely changes."""
  photo = faces_mini("real/amfd", 1, start=5)
  hog = runner.run(photo, str(tmp_path / "hog"), workers=1, progress=False)
  cnn = runner.run(photo, str(tmp_path / "cnn"), Settings(detector="cnn"), workers=1,
                   progress=False)
  assert hog.ok == cnn.ok == 1
  (h,), (c,) = read_records(str(tmp_path / "hog")), read_records(str(tmp_path / "cnn"))
  assert h["detector"] == "hog" and c["detector"] == "cnn"
  scale_h, scale_c = (np.sqrt(abs(np.linalg.det(np.array(r["affine"])[:, :2]))) for r in (h, c))
  assert scale_c == pytest.approx(scale_h, rel=0.15)
  eye = align.transform(np.array(c["affine"]), [h["eye"]])[0]
  assert np.linalg.norm(eye - align.template(256)) < 3.0
