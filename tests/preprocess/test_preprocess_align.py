"""The alignment geometry, temporal smoothing and frame sampling, on exact synthetic inputs."""

import numpy as np
import pytest

from agg_jax.preprocess import align, smooth
from agg_jax.preprocess.frames import sample_indices
from agg_jax.preprocess.landmarks import LEFT_EYE, RIGHT_EYE, eye_centers, face_size


def fake_landmarks(left_eye, right_eye, spread=3.0):
  """68 points whose eye centres are exactly ``left_eye`` and ``right_eye``."""
  pts = np.zeros((68, 2))
  ring = spread * np.array([[-1, 0], [-0.5, -0.6], [0.5, -0.6], [1, 0], [0.5, 0.6], [-0.5, 0.6]])
  pts[LEFT_EYE] = np.asarray(left_eye) + ring
  pts[RIGHT_EYE] = np.asarray(right_eye) + ring
  return pts


@pytest.mark.parametrize("angle_deg", [-25.0, 0.0, 12.0])
@pytest.mark.parametrize("size", [256, 128])
def test_left_eye_lands_on_template_and_eye_line_is_level(angle_deg, size):
  a = np.deg2rad(angle_deg)
  right = np.array([300.0, 200.0])
  left = right + 80 * np.array([np.cos(a), np.sin(a)])  # Subject's left eye: image right.
  box = (250.0, 150.0, 450.0, 350.0)
  m = align.matrix(align.pose(box, fake_landmarks(left, right)), size)
  out_left, out_right = align.transform(m, [left, right])
  np.testing.assert_allclose(out_left, align.template(size), atol=1e-9)
  assert abs(out_left[1] - out_right[1]) < 1e-9  # Level eye line.
  assert out_right[0] < out_left[0]  # The subject's left eye stays on the image's right.
  # Scale: the 1.3 h tall margin-expanded box spans the output.
  np.testing.assert_allclose(np.sqrt(abs(np.linalg.det(m[:, :2]))), size / (1.3 * 200), rtol=1e-12)


def test_template_and_margins_are_the_documented_ones():
  np.testing.assert_allclose(align.template(256), [168.96, 87.04])
  assert align.extent((0, 0, 100, 100)) == pytest.approx(130.0)  # 15% top and bottom.
  assert align.extent((0, 0, 200, 100)) == pytest.approx(240.0)  # 10% left and right.


def test_eye_center_is_mean_of_six_points():
  pts = np.random.default_rng(0).uniform(0, 100, (68, 2))
  left, right = eye_centers(pts)
  np.testing.assert_allclose(left, pts[42:48].mean(0))
  np.testing.assert_allclose(right, pts[36:42].mean(0))
  assert face_size(pts * 2) == pytest.approx(2 * face_size(pts))


@pytest.mark.parametrize("face", [60, 400])  # Upscaled, and pre-shrunk by area averaging.
def test_patch_then_render_matches_direct_warp(face):
  import cv2  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  image = cv2.GaussianBlur(rng.uniform(0, 255, (700, 900, 3)).astype(np.float32), (0, 0), 6)
  image = image.clip(0, 255).astype(np.uint8)
  left, right = np.array([470.0, 330.0]), np.array([470.0 - face * 0.4, 322.0])
  box = (left[0] - face * 0.8, left[1] - face * 0.3, left[0] - face * 0.8 + face,
         left[1] - face * 0.3 + face)
  m = align.matrix(align.pose(box, fake_landmarks(left, right)), 256)
  direct = cv2.warpAffine(image, m, (256, 256), flags=cv2.INTER_LINEAR).astype(float)
  ours = align.warp(image, m, 256).astype(float)
  assert ours.shape == (256, 256, 3)
  assert np.abs(ours - direct).mean() < 1.5  # Same geometry (area pre-shrink differs a bit).
  patch, p = align.extract_patch(image, m, 256, margin=0.4)
  assert patch.size <= image.size


def test_local_linear_smoothing_follows_steady_motion_and_removes_noise():
  t = np.arange(60)
  truth = np.stack([100 + 3.0 * t, 50 - 1.5 * t, 0.01 * t, np.log(200 + 0 * t)], axis=1)
  sizes = np.log(200 / 3.6) + 0 * t
  ids = smooth.track_ids(truth, sizes)
  assert set(ids) == {0}
  np.testing.assert_allclose(smooth.smooth_poses(truth, sizes, ids), truth, atol=1e-9)  # No lag.
  noisy = truth + np.random.default_rng(2).normal(0, [1.0, 1.0, 0.01, 0.0], truth.shape)
  smoothed = smooth.smooth_poses(noisy, sizes, ids)
  assert np.std(np.diff(smoothed[:, 0])) < 0.5 * np.std(np.diff(noisy[:, 0]))
  np.testing.assert_array_equal(smooth.smooth_poses(noisy, sizes, ids, strength=0), noisy)


def test_extent_follows_landmarks_anchored_to_the_box():
  t = np.arange(20)
  log_sizes = np.log(50 * (1 + 0.01 * t))  # The face grows smoothly.
  box_extent = np.log(180.0) + np.where(t % 3 == 0, 0.15, 0.0)  # The box jumps.
  poses = np.stack([100 + 0 * t, 100 + 0 * t, 0 * t, box_extent], axis=1).astype(float)
  out = smooth.smooth_poses(poses, log_sizes, smooth.track_ids(poses, log_sizes))
  assert np.all(np.diff(out[:, 3]) > 0)  # Monotone like the landmarks, no jumps.
  assert np.median(out[:, 3] - log_sizes) == pytest.approx(np.median(box_extent - log_sizes),
                                                           abs=0.02)


def test_tracks_break_at_gaps_jumps_and_switches():
  poses = np.tile([100.0, 100.0, 0.0, np.log(200.0)], (30, 1))
  sizes = np.full(30, np.log(200 / 3.6))
  poses[5:12] = np.nan  # A gap longer than MAX_GAP.
  poses[20:, 0] += 150  # The eye jumps by 0.75 extents.
  switched = np.zeros(30, bool)
  switched[25] = True
  ids = smooth.track_ids(poses, sizes, switched)
  assert list(ids[:5]) == [0] * 5 and all(ids[5:12] == -1)
  assert ids[12] == 1 and ids[20] == 2 and ids[25] == 3


def test_frame_sampling():
  assert sample_indices(300, 100, "first") == list(range(100))
  assert sample_indices(40, 100, "first") == list(range(40))
  assert sample_indices(0, 5, "first") == list(range(5))  # Unknown length.
  uniform = sample_indices(300, 100, "uniform")
  assert len(uniform) == 100 and uniform[0] == 0 and uniform[-1] == 299
  assert np.ptp(np.diff(uniform)) <= 1
  assert sample_indices(50, 100, "uniform") == list(range(50))
  with pytest.raises(ValueError, match="sampling"):
    sample_indices(10, 5, "random")
