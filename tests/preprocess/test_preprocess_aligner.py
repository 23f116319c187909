"""The in-memory alignment (``aligner.Aligner``): the faces and fields the file pipeline writes,
without files; faceless pictures, broken frames and bad files as statuses. The faces-mini tests
are skipped where the shared data is absent."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from agg_jax.preprocess import AlignedFace, Aligner, Settings
from agg_jax.preprocess.aligner import EYES_OUTSIDE
from agg_jax.preprocess.frames import Frame, VideoInfo, read_frames
from agg_jax.preprocess.images import read_image
from agg_jax.preprocess.pipeline import Processor, make_record
from agg_jax.preprocess.sources import Source
from tests import synthetic_video
from tests.helpers import faces_mini, requires_faces_mini
from tests.preprocess.broken_files import BROKEN, noise, write_broken_files

NO_FIELDS = {"faces": 0, "box": None, "landmarks": None, "affine": None, "eye": None,
             "detector": None, "search": None}


@pytest.fixture(scope="module")
def aligner():
  return Aligner(Settings())


def _png(path) -> np.ndarray:
  return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


def test_a_faceless_picture_is_no_face_and_arrays_are_checked(aligner):
  face = aligner.image(noise())
  assert isinstance(face, AlignedFace) and face.status == "no_face" and not face.ok
  assert face.face is None and face.frame is None and face.eye is None
  assert face.fields() == {**NO_FIELDS, "image_size": [160, 120]}
  for bad in (noise()[..., 0], noise().astype(np.float32), noise()[..., :2]):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
      aligner.image(bad)


def test_broken_frames_and_faceless_frames_get_their_status(aligner):
  reason = "frame cannot be decoded: the video stops at frame 1"
  frames = [Frame(0, noise(seed=1)), Frame(1, None, reason), noise(seed=2)]  # Bare: index 2.
  faces = aligner.video(frames)
  assert [f.frame for f in faces] == [0, 1, 2]
  assert [f.status for f in faces] == ["no_face", f"error: {reason}", "no_face"]
  assert all(f.face is None for f in faces)
  assert faces[0].fields() == {**NO_FIELDS, "image_size": [160, 120]}
  assert faces[1].fields() == NO_FIELDS  # Nothing decoded, nothing known.
  info = VideoInfo(frame_count=30, fps=25.0, width=160, height=120)
  with_info = aligner.video(frames, info)
  assert all(f.fields() == {**NO_FIELDS, "image_size": [160, 120], "frames_total": 30}
             for f in with_info)
  assert aligner.video([]) == []


def test_files_are_read_with_the_pipeline_guards_and_nothing_is_written(aligner, tmp_path,
                                                                        monkeypatch):
  write_broken_files(tmp_path / "in")
  before = sorted(os.listdir(tmp_path / "in"))
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")
  for name, expected in BROKEN.items():
    (face,) = aligner.file(tmp_path / "in" / name)
    assert expected in face.status and face.face is None, (name, face.status)
  truncated = aligner.file(tmp_path / "in" / "truncated.avi")
  assert [f.frame for f in truncated] == list(range(30))
  assert truncated[0].status == "no_face"
  assert truncated[-1].status.startswith("error: frame cannot be decoded")
  assert all(f.frames_total == 30 and f.image_size == (160, 120) for f in truncated)
  (missing,) = aligner.file(tmp_path / "in" / "absent.jpg", "image")
  assert missing.status.startswith("error: unexpected FileNotFoundError")
  assert sorted(os.listdir(tmp_path / "in")) == before and not os.listdir(tmp_path / "cwd")


def _photos(folder, aligner) -> list[str]:
  """A face from each faces-mini folder, and one cut by the border through its left eye."""
  paths = [faces_mini(f, 1, start=2)[0] for f in
           ("real/yonsei", "real/amfd", "fake/photoshop", "fake/gan", "fake/sd21")]
  rgb = read_image(faces_mini("real/amfd", 1)[0])
  eye = aligner.image(rgb).eye
  Image.fromarray(rgb[:, :int(eye[0]) - 20]).save(folder / "cut.png")
  return paths + [str(folder / "cut.png")]


@requires_faces_mini
def test_photos_in_memory_equal_the_pipeline_pngs_and_records(aligner, tmp_path):
  settings, out = Settings(), tmp_path / "out"
  processor = Processor(settings, str(out))
  statuses, photos = [], _photos(tmp_path, aligner)
  for k, path in enumerate(photos):
    source = Source(path, f"face_{k}", "image")
    (record,) = processor(source)
    face = aligner.image(read_image(path))
    statuses.append(face.status)
    assert make_record(source, settings, face, record["output"]) == record, path
    assert {key: record[key] for key in face.fields()} == face.fields()
    (from_file,) = aligner.file(path)
    assert from_file.fields() == face.fields()
    if face.ok:
      assert face.face.dtype == np.uint8 and face.face.shape == (256, 256, 3)
      np.testing.assert_array_equal(face.face, _png(out / record["output"]), err_msg=path)
      np.testing.assert_array_equal(from_file.face, face.face)
      assert face.frame is None and face.track is None and isinstance(face.quality, list)
      np.testing.assert_allclose(face.eye, face.landmarks[42:48].mean(0))
    else:
      assert face.face is None and record["output"] is None
  assert statuses == ["ok"] * 5 + ["no_face"]
  cut = face  # The face cut by the border: found, measured, not aligned.
  assert cut.note == EYES_OUTSIDE and cut.landmarks.shape == (68, 2) and cut.affine is None
  small = Aligner(Settings(size=128)).image(read_image(photos[0]))
  assert small.ok and small.face.shape == (128, 128, 3)


def two_faces() -> np.ndarray:
  """A faces-mini Yonsei face (440 px high) beside a smaller GAN face (280 px) on grey."""
  a = read_image(faces_mini("real/yonsei", 1)[0])
  b = read_image(faces_mini("fake/gan", 1)[0])
  a = cv2.resize(a, (a.shape[1] * 440 // a.shape[0], 440), interpolation=cv2.INTER_AREA)
  b = cv2.resize(b, (b.shape[1] * 280 // b.shape[0], 280), interpolation=cv2.INTER_AREA)
  canvas = np.full((520, a.shape[1] + b.shape[1] + 120, 3), 128, np.uint8)
  canvas[40:40 + a.shape[0], 40:40 + a.shape[1]] = a
  canvas[120:120 + b.shape[0], a.shape[1] + 80:a.shape[1] + 80 + b.shape[1]] = b
  return canvas


@requires_faces_mini
def test_every_face_of_a_photo_is_aligned_largest_first(aligner):
  rgb = two_faces()
  faces = aligner.faces(rgb)
  assert [f.status for f in faces] == ["ok", "ok"] and [f.faces for f in faces] == [2, 2]
  width = [f.box[2] - f.box[0] for f in faces]
  assert width[0] > 1.4 * width[1] and faces[0].box[2] < faces[1].box[0]  # big left, small right
  largest = aligner.image(rgb)
  assert faces[0].fields() == largest.fields()
  np.testing.assert_array_equal(faces[0].face, largest.face)
  assert not np.array_equal(faces[1].face, largest.face) and faces[1].face.shape == (256, 256, 3)
  (alone,) = aligner.faces(read_image(faces_mini("real/yonsei", 1)[0]))
  assert alone.ok and alone.faces == 1
  assert [f.fields() for f in aligner.faces(noise())] == [{**NO_FIELDS, "image_size": [160, 120]}]


@requires_faces_mini
def test_a_face_whose_png_cannot_be_written_is_an_error_record(tmp_path, monkeypatch):
  def full_disk(self, relative, rgb):
    raise OSError("No space left on device")

  monkeypatch.setattr(Processor, "_write", full_disk)
  path = faces_mini("real/yonsei", 1, start=2)[0]
  (record,) = Processor(Settings(), str(tmp_path))(Source(path, "face", "image"))
  assert record["status"] == "error: OSError: No space left on device"
  assert record["output"] is None and record["box"] is None and record["image_size"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  """A 16-frame test video of two faces-mini photos."""
  photos = [read_image(faces_mini(f)[3]) for f in ("real/yonsei", "fake/gan")]
  path = tmp_path_factory.mktemp("video") / "moving.mp4"
  synthetic_video.make_video(photos, path, frames_per_photo=8)
  return str(path)


@requires_faces_mini
def test_video_frames_in_memory_equal_the_pipeline_pngs_and_records(aligner, video, tmp_path):
  settings, out = Settings(), tmp_path / "out"
  source = Source(video, "clip", "video")
  records = Processor(settings, str(out))(source)
  info, frames = read_frames(video, settings.frames, settings.sampling)
  faces = aligner.video(frames, info)
  assert [f.status for f in faces] == ["ok"] * 16 and [f.frame for f in faces] == list(range(16))
  assert len({f.track for f in faces}) == 2  # One track per photo.
  for face, record in zip(faces, records):
    assert make_record(source, settings, face, record["output"]) == record
    np.testing.assert_array_equal(face.face, _png(out / record["output"]))
  from_file = aligner.file(video)
  assert [f.fields() for f in from_file] == [f.fields() for f in faces]
  decoded = [frame.rgb for frame in read_frames(video, 100, "first")[1]]
  bare = aligner.video(decoded)  # Bare arrays: the same faces; no header, so no frames_total.
  for face, other in zip(faces, bare):
    np.testing.assert_array_equal(other.face, face.face)
    assert other.fields() == {k: v for k, v in face.fields().items() if k != "frames_total"}
  broken = [Frame(i, None, "corrupt frame") if i == 5 else Frame(i, rgb)
            for i, rgb in enumerate(decoded)]
  statuses = [f.status for f in aligner.video(broken)]
  assert statuses == ["ok"] * 5 + ["error: corrupt frame"] + ["ok"] * 10
