"""The "tfds" data source and the streaming pipeline, on a small prepared face dataset.

The dataset is written by a test builder with the features every face dataset has
(agg_jax.datasets.faces) and images whose content encodes (split, index), so every read can be
checked against what was written; no alignment is involved (the builders' own tests cover it).
"""

import json

import cv2
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from agg_jax import data, datasets, face_input
from agg_jax.config_validation import ConfigError
from agg_jax.data import tfds_source
from agg_jax.datasets import faces
from tests.helpers import run_module

SIDE = 64
# (split, examples, videos): the test splits hold videos of 3 frames.
SPLITS = {
    "train_real_yonsei": (12, 0), "train_real_amfd": (4, 0), "train_fake_gan": (10, 0),
    "train_fake_sd21": (6, 0), "validation_real_yonsei": (4, 0), "validation_fake_gan": (4, 0),
    "validation_fake_sd21": (2, 0), "test_real_yonsei": (6, 2), "test_fake_gan": (6, 2),
    "test_fake_sd21": (3, 1),
}


def face(split: str, index: int) -> np.ndarray:
  """An image that says which example it is: its split's number and its index in the pixels."""
  image = np.zeros((SIDE, SIDE, 3), np.uint8)
  image[..., 0] = list(SPLITS).index(split) * 10
  image[..., 1] = index
  image[:, : SIDE // 2, 2] = 255  # left half marked, to see flips
  return image


class FacesForTests(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  VERSION = tfds.core.Version("1.0.0")
  name = "test_faces"  # the folder it is prepared in

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=faces.features(),
                                 metadata=tfds.core.MetadataDict(alignment={"size": SIDE}))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    count, videos = SPLITS[split]
    _, label, group = faces.parse_split_name(split)
    for i in range(count):
      video = f"{split}/video{i % videos}.mp4" if videos else ""
      yield f"{split}/{i}", {
          "image": faces.encode_png(face(split, i)), "label": faces.LABELS.index(label),
          "method": "real" if label == "real" else group, "source": group, "video_id": video,
          "frame": i // videos if videos else -1, "compression": "", "quality": "",
          "padding": 0.0, "path": video or f"{split}/{i}.jpg"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tfds")
  FacesForTests(data_dir=str(folder)).download_and_prepare(file_format="array_record")
  return str(folder)


def make_config(data_dir, **overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({
      "source": "tfds", "data_dir": data_dir, "dataset": "test_faces", "train_set": "gan",
      "train_mix": (), "test_sets": ("gan", "sd21"), "real": ("yonsei",), "test_real": (),
      "image_size": SIDE, "workers": 0,
      "augment": {"flip": False, "blur_prob": 0.0, "jpeg_prob": 0.0}})
  config.update(overrides)
  return config


def decoded(images: np.ndarray) -> list[tuple[str, int]]:
  """(split, index) of each image made by `face`."""
  return [(list(SPLITS)[int(im[0, 0, 0]) // 10], int(im[0, 0, 1])) for im in images]


def test_splits_hold_the_reals_and_fakes_of_their_partition(data_dir):
  dataset = data.load(make_config(data_dir))
  train = dataset.train
  assert dataset.train_set == "gan" and len(train) == 12 + 10
  assert (train.labels == [0] * 12 + [1] * 10).all()
  assert (train.methods == ["real"] * 12 + ["gan"] * 10).all()
  read = decoded(train.images.read(np.arange(len(train))))  # a split's order: TFDS shuffles
  assert sorted(read[:12]) == [("train_real_yonsei", i) for i in range(12)]
  assert sorted(read[12:]) == [("train_fake_gan", i) for i in range(10)]
  assert len(dataset.validation) == 4 + 4
  assert list(dataset.test) == ["gan", "sd21"]


def test_reading_follows_the_indices_in_any_order(data_dir):
  images = data.load(make_config(data_dir)).train.images
  in_order = decoded(images.read(np.arange(len(images))))
  rows = np.array([21, 0, 13, 13, 5])
  assert decoded(images.read(rows)) == [in_order[r] for r in rows]
  with pytest.raises(IndexError):
    images.read(np.array([22]))


def test_images_are_resized_to_the_configured_size(data_dir):
  split = data.load(make_config(data_dir, image_size=32)).train
  assert split.image_shape == (32, 32, 3)
  image = split.images.read(np.array([0]))[0]
  assert image.shape == (32, 32, 3) and image[0, 0, 2] == 255 and image[0, -1, 2] == 0


def test_crop_reads_the_centre_of_each_face(data_dir):
  split = data.load(make_config(data_dir, crop=0.5)).train
  (name, index), = decoded(split.images.read(np.array([3])))
  np.testing.assert_array_equal(split.images.read(np.array([3]))[0],
                                cv2.resize(face(name, index)[16:48, 16:48], (SIDE, SIDE),
                                           interpolation=cv2.INTER_AREA))


def test_max_padding_leaves_out_faces_with_black_in_their_crop(data_dir):
  # The first real training face (split 0, index 0) is black on its right half, no other is.
  assert face_input.border_fraction(face("train_real_yonsei", 0)) == 0.5
  kept = data.load(make_config(data_dir, max_padding=0.4)).train
  assert len(kept) == 12 - 1 + 10
  assert ("train_real_yonsei", 0) not in decoded(kept.images.read(np.arange(len(kept))))
  assert len(data.load(make_config(data_dir, max_padding=0.5)).train) == 12 + 10
  # a central crop of it is still half black
  assert len(data.load(make_config(data_dir, max_padding=0.4, crop=0.5)).train) == 12 - 1 + 10


def test_real_faces_of_a_source_from_every_partition(data_dir):
  amfd = tfds_source.real_faces(make_config(data_dir), "amfd")
  assert len(amfd) == 4 and (amfd.labels == 0).all()
  assert sorted(decoded(amfd.images.read(np.arange(4)))) == [
      ("train_real_amfd", i) for i in range(4)]


def test_test_sets_read_ids_and_video_ids_only_when_used(data_dir):
  dataset = data.load(make_config(data_dir))
  assert dataset.test._made == {}  # pylint: disable=protected-access
  gan = dataset.test["gan"]
  assert list(dataset.test._made) == ["gan"]  # pylint: disable=protected-access
  # Reals of every source in the test partition (test_real=()), then the method's fakes.
  assert len(gan) == 6 + 6 and (gan.labels == [0] * 6 + [1] * 6).all()
  assert sorted(gan.ids[:6]) == sorted(f"test_real_yonsei/video{i % 2}.mp4#{i // 2}"
                                       for i in range(6))
  assert len(set(gan.ids)) == len(gan)
  assert sorted(set(gan.video_ids)) == sorted(
      f"test_{kind}/video{v}.mp4" for kind in ("real_yonsei", "fake_gan") for v in range(2))


def test_photos_have_no_video_ids(data_dir):
  config = make_config(data_dir, train_set="sd21", test_sets=("test_faces:gan",))
  dataset = data.load(config)
  assert dataset.train.video_ids is None and dataset.validation.video_ids is None
  assert dataset.train_set == "sd21"


def test_a_missing_dataset_names_the_build_command(data_dir, tmp_path):
  with pytest.raises(ConfigError) as error:
    data.check_config(make_config(str(tmp_path), dataset="face_folder/default"))
  message = str(error.value)
  assert "face_folder/default is not prepared in" in message
  assert "python -m agg_jax.datasets build face_folder --manual_dir=<folder> --config=default" \
      in message


@pytest.mark.parametrize("overrides, expected", [
    ({"train_set": "photoshop"}, "has no fake 'photoshop' in its train partition (it has: gan, "
                                 "sd21"),
    ({"real": ("ffhq",)}, "has no real 'ffhq' in its train partition (it has: amfd, yonsei"),
    ({"test_sets": ("gan", "gan=test_faces:sd21")}, "names gan more than once"),
    ({"test_sets": ()}, "data.test_sets=()"),
    ({"train_mix": (("gan", 0),)}, "data.train_mix"),
    ({"image_size": 40}, "data.image_size=40"),
    ({"workers": -1}, "data.workers=-1"),
    ({"crop": 0}, "data.crop=0"),
    ({"crop": 1.5}, "data.crop=1.5"),
    ({"max_padding": -0.1}, "data.max_padding=-0.1"),
])
def test_config_mistakes_name_the_field(data_dir, overrides, expected):
  with pytest.raises(ConfigError, match=None) as error:
    data.check_config(make_config(data_dir, **overrides))
  assert expected in str(error.value)


def test_set_names():
  parse = tfds_source.parse_set
  assert parse("NeuralTextures", "faceforensics/c23", "k") == tfds_source.SetSpec(
      "neuraltextures", "faceforensics/c23", "neuraltextures")
  assert parse("synthetic_faces/ffhq_sgan2:sgan2", "x", "k").name == "ffhq_sgan2"
  assert parse("faceforensics/c40:deepfakes", "x", "k").name == "c40_deepfakes"
  assert parse("df40=faceforensics/c40:deepfakes", "x", "k").name == "df40"


def test_mixed_methods_share_the_fake_half_by_weight(data_dir):
  config = make_config(data_dir, train_mix=(("gan", 3.0), ("sd21", 1.0)))
  dataset = data.load(config)
  assert dataset.train_set == "gan+sd21" and dataset.train_mix == {"gan": 3.0, "sd21": 1.0}
  batches = data.BalancedBatches(dataset.train, 16, seed=0, flip=False, mix=dataset.train_mix)
  for step in range(4):
    rows = batches.indices(step)
    methods = dataset.train.methods[rows]
    assert (dataset.train.labels[rows] == [0, 1] * 8).all()  # interleaved: every shard balanced
    assert (methods == "gan").sum() == 6 and (methods == "sd21").sum() == 2
  assert (batches.indices(3) == data.BalancedBatches(
      dataset.train, 16, seed=0, flip=False, mix=dataset.train_mix).indices(3)).all()


def test_allocation_gives_every_row():
  from agg_jax.data.sampler import allocate
  assert allocate(16, {"a": 1, "b": 1}) == {"a": 8, "b": 8}
  assert allocate(16, {"a": 1, "b": 1, "c": 1}) == {"a": 6, "b": 5, "c": 5}
  assert sum(allocate(7, {"a": 0.2, "b": 0.3, "c": 0.5}).values()) == 7


def test_augmented_rows_do_not_depend_on_the_process_count(data_dir):
  config = make_config(data_dir, augment={"flip": True, "blur_prob": 0.5, "jpeg_prob": 0.5})
  dataset = data.load(config)
  augment = data.augmentation(config)
  batches = data.BalancedBatches(dataset.train, 8, seed=1, flip=True,
                                 augment=augment.__class__(flip=False, blur_prob=0.5,
                                                           jpeg_prob=0.5))
  whole = batches.batch(5)["images"]
  halves = np.concatenate([batches.batch(5, p, 2)["images"] for p in range(2)])
  assert np.array_equal(whole, halves)
  plain = data.BalancedBatches(dataset.train, 8, seed=1, flip=False).batch(5)["images"]
  assert not np.array_equal(whole, plain)  # something was blurred, compressed or flipped


def test_each_process_reads_only_its_rows_of_every_batch(data_dir, monkeypatch):
  """Multi-host reading: with 2 processes, the records each one reads are its own rows of the
  global batch (process p the p-th half: no row read twice, none left out; an image may fill two
  rows where the sampler crosses an epoch), and the images equal a single-process read;
  evaluation batches likewise cover the test set once."""
  dataset = data.load(make_config(data_dir))
  read = []
  records = tfds_source.RecordImages.records
  monkeypatch.setattr(tfds_source.RecordImages, "records",
                      lambda self, indices: read.append(list(indices)) or records(self, indices))
  batches = data.BalancedBatches(dataset.train, 8, seed=0, flip=True)
  for step in range(4):
    read.clear()
    halves = [batches.batch(step, p, 2) for p in range(2)]
    assert [list(r) for r in read] == [list(h) for h in np.split(batches.indices(step), 2)]
    whole = batches.batch(step)
    for key in ("images", "labels"):
      assert np.array_equal(np.concatenate([h[key] for h in halves]), whole[key])

  test = dataset.test["gan"]
  read.clear()
  masks = [b["mask"] for p in range(2) for b in data.eval_batches(test, 4, p, 2)]
  rows = [row for indices, mask in zip(read, masks) for row, real in zip(indices, mask) if real]
  assert sorted(rows) == list(range(len(test)))  # each test image read by one process, once


def test_worker_processes_stream_the_same_batches(data_dir):
  dataset = data.load(make_config(data_dir))
  batches = data.BalancedBatches(dataset.train, 8, seed=0, flip=True)
  stream = data.train_stream(batches, 3, 9, workers=2)
  streamed = list(stream)
  stream.close()
  assert len(streamed) == 6
  for step, batch in zip(range(3, 9), streamed):
    expected = batches.batch(step)
    assert np.array_equal(batch["images"], expected["images"])
    assert np.array_equal(batch["labels"], expected["labels"])


def test_the_dataset_info_is_read_without_the_builder(data_dir):
  folder = datasets.prepared_dir(data_dir, "test_faces")
  info = json.loads((folder / "dataset_info.json").read_text())
  assert info["name"] == "test_faces"
  assert tfds_source.Prepared(data_dir, "test_faces").groups("test", "fake") == ["gan", "sd21"]


def test_a_run_on_a_prepared_dataset_reports_video_level_metrics(data_dir, tmp_path, xla_cache):
  """`python -m agg_jax.main` end to end on the prepared dataset (in-process batches: the worker
  stream is checked above); the test sets' video ids give video-level metrics beside the frame
  level."""
  config = tmp_path / "config.py"
  config.write_text(
      "from configs import demo\n"
      "def get_config():\n"
      "  config = demo.get_config()\n"
      f"  config.data.update({make_config(data_dir, image_size=32).to_dict()!r})\n"
      "  return config\n")
  tiny = ["--config.model.name=efficientnetv2_tiny", "--config.model.hidden=(16,)",
          "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
          "--config.train.warmup_steps=0", "--config.train.eval_every=2",
          "--config.train.checkpoint_every=2", "--config.train.num_steps=2"]
  workdir = tmp_path / "run"
  out = run_module("agg_jax.main", f"--config={config}", f"--workdir={workdir}",
                   f"--compilation_cache={xla_cache}", *tiny)
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((workdir / "results" / "metrics.json").read_text())
  assert metrics["train"] == "gan" and list(metrics["test_sets"]) == ["gan", "sd21"]
  gan = metrics["test_sets"]["gan"]
  assert gan["level"] == "video" and gan["frame"]["num_examples"] == 12
  assert gan["video"]["num_examples"] == 4  # two real and two fake videos of 3 frames
  assert metrics["test_sets"]["sd21"]["video"]["num_examples"] == 2 + 1
