"""Videos: frame sampling as recorded, no frame lost, and no jitter, on a test video with known
motion made from faces-mini photos. Skipped where the shared data is absent."""

import cv2
import numpy as np
import pytest

from agg_jax.preprocess import align
from agg_jax.preprocess.detect import FaceDetector
from agg_jax.preprocess.images import read_image
from agg_jax.preprocess.landmarks import Landmarker
from agg_jax.preprocess.pipeline import Processor, Settings
from agg_jax.preprocess.sources import Source
from tests import synthetic_video
from tests.helpers import faces_mini, requires_faces_mini

PHOTOS = ("real/yonsei", "real/amfd", "fake/gan")
PER_PHOTO = 20

pytestmark = requires_faces_mini


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  """(path, photo -> frame matrices, each photo's landmarks)."""
  photos = [read_image(faces_mini(f)[3]) for f in PHOTOS]
  detector, landmarker = FaceDetector(), Landmarker()
  landmarks = [landmarker(p, detector.detect(p).box) for p in photos]
  path = tmp_path_factory.mktemp("video") / "moving.mp4"
  matrices = synthetic_video.make_video(photos, path, PER_PHOTO)
  return str(path), matrices, landmarks


def _run(video_path, out, **settings):
  return Processor(Settings(**settings), str(out))(Source(video_path, "clip", "video"))


def _true_points(records, matrices, landmarks):
  """The photos' landmarks carried through the known motion and each frame's alignment."""
  points = np.full((len(matrices), 68, 2), np.nan)
  for r in records:
    if r["status"] == "ok":
      truth = align.transform(matrices[r["frame"]], landmarks[r["frame"] // PER_PHOTO])
      points[r["frame"]] = align.transform(np.array(r["affine"]), truth)
  return points


def _step_rms(points):
  steps = np.linalg.norm(np.diff(points, axis=0), axis=-1)
  steps = steps[(np.arange(1, len(points)) % PER_PHOTO) != 0]  # Not across photo changes.
  return float(np.sqrt(np.nanmean(steps ** 2)))


def test_every_frame_aligned_without_jitter(video, tmp_path):
  path, matrices, landmarks = video
  n = len(matrices)
  records = _run(path, tmp_path, frames=100)  # The video is shorter than 100 frames.
  assert [r["frame"] for r in records] == list(range(n))
  assert all(r["status"] == "ok" for r in records), [r["status"] for r in records]
  assert all(r["frames_total"] == n and r["settings"]["frames"] == 100 for r in records)
  assert len({r["track"] for r in records}) == len(PHOTOS)  # One track per scene.
  for r in records[::7]:
    assert cv2.imread(str(tmp_path / r["output"])).shape == (256, 256, 3)
  assert records[5]["output"] == "clip/000005.png"
  points = _true_points(records, matrices, landmarks)
  eye_to_template = np.linalg.norm(points[:, 42:48].mean(1) - align.template(256), axis=1)
  assert np.sqrt(np.mean(eye_to_template ** 2)) < 2.0
  eye_step, all_step = _step_rms(points[:, 42:48].mean(1)), _step_rms(points)
  assert eye_step < 0.5 and all_step < 1.0, (eye_step, all_step)
  raw = _true_points(_run(path, tmp_path / "raw", frames=100, smooth=0.0), matrices, landmarks)
  assert _step_rms(raw) > 3 * all_step  # Smoothing is what removes the jitter.


def test_first_and_uniform_sampling_are_recorded(video, tmp_path):
  path, matrices, _ = video
  first = _run(path, tmp_path / "first", frames=5)
  assert [r["frame"] for r in first] == [0, 1, 2, 3, 4]
  uniform = _run(path, tmp_path / "uniform", frames=7, sampling="uniform")
  expected = np.round(np.linspace(0, len(matrices) - 1, 7)).astype(int).tolist()
  assert [r["frame"] for r in uniform] == expected
  assert all(r["status"] == "ok" for r in uniform)
  assert {r["settings"]["sampling"] for r in uniform} == {"uniform"}
  assert (tmp_path / "uniform" / f"clip/{expected[-1]:06d}.png").exists()
