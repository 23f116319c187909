"""Input-pipeline throughput against the train step's consumption, at the same batch size.

Reads a prepared face dataset (the "tfds" source: ArrayRecord files, PNG faces stored at
256x256) through the training stream exactly as training does (data.load, BalancedBatches with
flips and Wang et al.'s blur + JPEG augmentation, data.train_stream), and times, per image size:

  pipeline     images/s of data.train_stream with --workers grain worker processes (default 2)
  in-process   the same stream made in the training process (workers=0), the peer
  train step   images/s the project's jitted train step consumes (models.from_config,
               train.init_state, train.make_train_step on a 1-device mesh, a host batch moved
               to the device every step as in training; timed after compiling)
  train loop   the two together as train.py runs them: the worker stream feeding the step

and prints pipeline / train step: above 1, the pipeline is not the bottleneck. Where the step
runs on the CPU, the pipeline's workers and the step share the cores: the train loop column is
then the one to trust. Each stream is timed after a quarter of its timed batches (grain's
workers deliver their first batches in a burst); --parts picks the columns.

Without --data_dir/--dataset the script makes its own dataset in a temporary folder (removed
at the end): a TFDS builder defined here, with the project's features and split names, writes
--num_images 256x256 crops of scikit-image's sample photographs at random offsets and scales,
PNG-encoded as the project stores faces (about 110 KB each: photographic detail, neither
noise nor flat). --data_dir alone makes it there once and reuses it; --data_dir with --dataset
reads a dataset prepared by the project (e.g. face_folder/default from faces-mini).

  .venv/bin/python bench/bench_input_pipeline.py
  .venv/bin/python bench/bench_input_pipeline.py --image_size=128,256 --steps=200 \\
      --train_steps=20 --workers=2 --blur_prob=0.5 --jpeg_prob=0.5 --model=efficientnet_lite0
  .venv/bin/python bench/bench_input_pipeline.py --data_dir=~/tensorflow_datasets \\
      --dataset=face_folder/default
"""

import argparse
import math
import os
import shutil
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NAME = "bench_faces"  # the builder below; its configs are "photos" and "noise"
SIDE = 256  # stored side, as the aligner writes faces
GROUP = "bench"  # the real source and the fake method of every split
PHOTOS = ("astronaut", "coffee", "chelsea", "immunohistochemistry", "rocket")
SEED = 0

# ---------------------------------------------------------------------------------------------
# The benchmark dataset: a TFDS builder with the project's features and split names.


def split_counts(count: int) -> dict[str, int]:
  """Split name -> images: half real, half fake; 5% of each class to validation and to test."""
  from agg_jax.datasets import faces  # pylint: disable=import-outside-toplevel
  per_class = max(count // 2, 3)
  held = max(1, per_class // 20)
  sizes = {"train": per_class - 2 * held, "validation": held, "test": held}
  return {faces.split_name(partition, label, GROUP): size
          for partition, size in sizes.items() for label in ("real", "fake")}


_PHOTOS: list[np.ndarray] = []


def photo_png(index: int) -> bytes:
  """A 256x256 crop of a sample photograph (random photo, scale and offset), as the project's
  PNG (agg_jax.datasets.faces.encode_png)."""
  from agg_jax.datasets import faces  # pylint: disable=import-outside-toplevel
  if not _PHOTOS:
    import skimage.data  # pylint: disable=import-outside-toplevel
    _PHOTOS.extend(getattr(skimage.data, name)() for name in PHOTOS)
  rng = np.random.default_rng((SEED, index))
  photo = _PHOTOS[int(rng.integers(len(_PHOTOS)))]
  height, width = photo.shape[:2]
  side = int(rng.integers(min(height, width) // 3, min(height, width) + 1))
  top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
  crop = cv2.resize(photo[top:top + side, left:left + side], (SIDE, SIDE),
                    interpolation=cv2.INTER_AREA if side >= SIDE else cv2.INTER_CUBIC)
  return faces.encode_png(crop)


def noise_png(index: int) -> bytes:
  """Uniform noise, 256x256 RGB, PNG at compression level 1: incompressible (about 197 KB)."""
  noise = np.random.default_rng((SEED, index)).integers(0, 256, (SIDE, SIDE, 3), np.uint8)
  ok, png = cv2.imencode(".png", noise, [cv2.IMWRITE_PNG_COMPRESSION, 1])
  if not ok:
    raise RuntimeError("PNG encoding failed")
  return png.tobytes()


IMAGES = {"photos": photo_png, "noise": noise_png}


def builder_class():
  """The TFDS builder of the benchmark datasets (defined on first use: TFDS imported late)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from agg_jax.datasets import faces  # pylint: disable=import-outside-toplevel

  class BenchFaces(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Face-sized PNGs for the input-pipeline benchmarks: sample-photo crops or noise."""
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in IMAGES]

    def __init__(self, *, count: int = 0, pool=None, **kwargs):
      self.count, self.pool = count, pool
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, description=self.__doc__, features=faces.features(),
          disable_shuffling=True,  # written as generated (no shuffle buffer, no temporary files)
          metadata=tfds.core.MetadataDict(alignment={"size": SIDE}))

    def _split_generators(self, dl_manager):
      del dl_manager
      generators, start = {}, 0
      for split, size in split_counts(self.count).items():
        generators[split] = self._generate_examples(split, start, size)
        start += size
      return generators

    def _generate_examples(self, split: str, start: int, size: int):
      _, label, group = faces.parse_split_name(split)
      make, indices = IMAGES[self.builder_config.name], range(start, start + size)
      pngs = self.pool.imap(make, indices, chunksize=16) if self.pool else map(make, indices)
      for index, png in zip(indices, pngs):
        yield index, {
            "image": png, "label": faces.LABELS.index(label),
            "method": "real" if label == "real" else group, "source": group, "video_id": "",
            "frame": -1, "compression": "", "quality": "", "padding": 0.0,
            "path": f"{split}/{index:08d}.png"}

  return BenchFaces


def build(data_dir: str, config: str, count: int, workers: int) -> None:
  """Prepares NAME/config with `count` images in `data_dir` (encoded in `workers` processes).

  A split over 1 GB spills to temporary files without TensorFlow (agg_jax.datasets.tfds_compat).
  """
  import multiprocessing  # pylint: disable=import-outside-toplevel

  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from agg_jax.datasets import tfds_compat  # pylint: disable=import-outside-toplevel
  tfds.disable_progress_bar()
  tfds_compat.install()
  pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
  try:
    builder = builder_class()(data_dir=data_dir, config=config, count=count, pool=pool)
    builder.download_and_prepare(file_format="array_record")
  finally:
    if pool is not None:
      pool.terminate()


def ensure_dataset(data_dir: str, config: str, count: int, workers: int) -> str:
  """"NAME/config", prepared in `data_dir` (built in a child process when missing, so that its
  memory is not the benchmark's)."""
  from agg_jax.datasets import prepared_dir  # pylint: disable=import-outside-toplevel
  if prepared_dir(data_dir, NAME, config) is None:
    import multiprocessing  # pylint: disable=import-outside-toplevel
    print(f"writing {count:,} {config} images to {data_dir}/{NAME}/{config} ...", flush=True)
    start = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(
        target=build, args=(data_dir, config, count, workers))
    process.start()
    process.join()
    if process.exitcode:
      raise SystemExit(f"building {NAME}/{config} failed (exit code {process.exitcode})")
    print(f"  written in {time.perf_counter() - start:.0f} s", flush=True)
  return f"{NAME}/{config}"


def data_config(data_dir: str, dataset: str, image_size: int):
  """The config.data of the "tfds" source that trains on `dataset`'s first fake method (all its
  real sources) and tests on its first test method."""
  import ml_collections  # pylint: disable=import-outside-toplevel

  from agg_jax.data import tfds_source  # pylint: disable=import-outside-toplevel
  prepared = tfds_source.Prepared(data_dir, dataset)
  train, test = prepared.groups("train", "fake"), prepared.groups("test", "fake")
  if not train or not test:
    raise SystemExit(f"{dataset} in {data_dir}: needs fake faces in its train and test "
                     f"partitions (its splits: {', '.join(prepared.sizes)})")
  return ml_collections.ConfigDict({
      "source": "tfds", "data_dir": data_dir, "dataset": dataset, "train_set": train[0],
      "train_mix": (), "test_sets": (test[0],), "real": (), "test_real": (),
      "image_size": image_size})


def describe(data_dir: str, dataset: str) -> str:
  """Images, mean stored PNG size and the folder of a prepared dataset."""
  from agg_jax.data import tfds_source  # pylint: disable=import-outside-toplevel
  prepared = tfds_source.Prepared(data_dir, dataset)
  count = sum(prepared.sizes.values())
  size = sum(os.path.getsize(os.path.join(prepared.folder, f))
             for f in os.listdir(prepared.folder) if ".array_record-" in f)
  return (f"{dataset}: {count:,} faces stored at {prepared.image_side}x{prepared.image_side}, "
          f"{size / count / 1e3:.0f} KB each on disk, in {prepared.folder}")


# ---------------------------------------------------------------------------------------------
# Measurements.


def training_batches(data_dir: str, dataset: str, args, image_size: int):
  """BalancedBatches of the training split, augmented as train.py sets them up."""
  import dataclasses  # pylint: disable=import-outside-toplevel

  from agg_jax import data  # pylint: disable=import-outside-toplevel
  from agg_jax.data import augment  # pylint: disable=import-outside-toplevel
  loaded = data.load(data_config(data_dir, dataset, image_size))
  augmentation = augment.Augment(flip=True, blur_prob=args.blur_prob, jpeg_prob=args.jpeg_prob)
  return data.BalancedBatches(loaded.train, args.batch_size, SEED, flip=augmentation.flip,
                              mix=loaded.train_mix,
                              augment=dataclasses.replace(augmentation, flip=False))


def warm_up(steps: int, workers: int) -> int:
  """Batches taken before the clock starts: a quarter of the timed ones, at least one per worker.

  Grain's workers start in seconds, then read ahead with many threads each (grain's default
  ReadOptions) and deliver in bursts: the first batches arrive together, with all that was made
  while the stream started, and would inflate a short measurement.
  """
  return max(workers, 1, steps // 4)


def time_stream(batches, steps: int, workers: int) -> tuple[float, float]:
  """(start-up seconds to the first batch, images/s) of `steps` batches of data.train_stream,
  timed after `warm_up` batches."""
  from agg_jax import data  # pylint: disable=import-outside-toplevel
  warm = warm_up(steps, workers)
  start = time.perf_counter()
  stream = data.train_stream(batches, 0, warm + steps, workers=workers)
  images = 0
  try:
    for i, batch in enumerate(stream):
      if i == 0:
        startup = time.perf_counter() - start
      if i == warm:
        first = time.perf_counter()
      if i >= warm:
        images += len(batch["labels"])
  finally:
    getattr(stream, "close", lambda: None)()
  return startup, images / (time.perf_counter() - first)


class TrainStep:
  """The project's jitted train step for `model` at `image_size` on a 1-device mesh."""

  def __init__(self, model_name: str, image_size: int, batch_size: int):
    import jax  # pylint: disable=import-outside-toplevel

    from agg_jax import models, sharding, train  # pylint: disable=import-outside-toplevel
    from configs import faces_mini  # pylint: disable=import-outside-toplevel
    config = faces_mini.get_config()
    config.model.name = model_name
    config.model.init_from = ""  # random weights: the same step
    self.jax, self.sharding = jax, sharding
    self.mesh = sharding.make_mesh((("data", 1),), jax.devices()[:1])
    model = models.from_config(config.model)
    self.state, shardings = train.init_state(model, train.create_optimizer(config), config,
                                             self.mesh, (image_size, image_size, 3))
    self.step = train.make_train_step(self.mesh, shardings)
    rng = np.random.default_rng(SEED)
    self.host = {"images": rng.integers(0, 256, (batch_size, image_size, image_size, 3),
                                        np.uint8),
                 "labels": np.tile(np.float32([0, 1]), batch_size // 2)}
    start = time.perf_counter()
    self(self.host)
    self.jax.block_until_ready(self.state)
    self.compile_s = time.perf_counter() - start

  def __call__(self, local: dict):
    self.state, metrics = self.step(self.state, self.sharding.global_batch(local, self.mesh))
    return metrics

  def time(self, steps: int) -> float:
    """Images/s of `steps` steps, each on a host batch moved to the device as in training."""
    self(self.host)  # a second warm-up step
    self.jax.block_until_ready(self.state)
    start = time.perf_counter()
    for _ in range(steps):
      metrics = self(self.host)
    self.jax.block_until_ready(metrics)
    return steps * len(self.host["labels"]) / (time.perf_counter() - start)

  def time_loop(self, batches, steps: int, workers: int) -> float:
    """Images/s of the train loop: the stream (`workers` processes) feeding the step."""
    from agg_jax import data  # pylint: disable=import-outside-toplevel
    warm = warm_up(steps, workers)
    stream = data.train_stream(batches, 0, warm + steps, workers=workers)
    images = 0
    try:
      for i, local in enumerate(stream):
        if i == warm:
          self.jax.block_until_ready(self.state)
          start = time.perf_counter()
        metrics = self(local)
        images += len(local["labels"]) if i >= warm else 0
      self.jax.block_until_ready(metrics)
    finally:
      getattr(stream, "close", lambda: None)()
    return images / (time.perf_counter() - start)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--steps", type=int, default=200,
                      help="pipeline batches timed (after a quarter as many)")
  parser.add_argument("--train_steps", type=int, default=20,
                      help="train steps and train-loop steps timed (after a quarter as many)")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--image_size", default="128,256",
                      help="sides the faces are read at (and trained at), comma-separated")
  parser.add_argument("--workers", type=int, default=2, help="grain worker processes")
  parser.add_argument("--blur_prob", type=float, default=0.5)
  parser.add_argument("--jpeg_prob", type=float, default=0.5)
  parser.add_argument("--model", default="efficientnet_lite0",
                      help="backbone of the train step (aggregation head, configs/faces_mini)")
  parser.add_argument("--data_dir", default="",
                      help="prepared datasets' folder (default: a temporary one, removed; "
                           "~/tensorflow_datasets with --dataset)")
  parser.add_argument("--dataset", default="",
                      help="a prepared dataset in --data_dir, 'builder/config' (default: "
                           f"{NAME}/photos, made there when missing)")
  parser.add_argument("--num_images", type=int, default=1000,
                      help=f"images of the {NAME}/photos dataset the script makes")
  parser.add_argument("--parts", default="pipeline,in_process,step,loop",
                      help="what to time: pipeline, in_process, step, loop")
  args = parser.parse_args(argv)
  args.image_size = [int(s) for s in args.image_size.split(",")]
  args.parts = set(args.parts.split(","))
  unknown = args.parts - {"pipeline", "in_process", "step", "loop"}
  if unknown:
    parser.error(f"--parts: unknown {', '.join(sorted(unknown))}")
  if args.batch_size % 2:
    parser.error("--batch_size must be even (class-balanced batches)")
  return args


def fmt(value: float | None, width: int = 10, digits: int = 1) -> str:
  return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def main(args: argparse.Namespace) -> None:
  temporary = None
  if args.data_dir or args.dataset:
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir or "~/tensorflow_datasets"))
  else:
    data_dir = temporary = tempfile.mkdtemp(prefix="bench_input_pipeline_", dir="/tmp")
  try:
    dataset = args.dataset or ensure_dataset(data_dir, "photos", args.num_images, 2)
    run(data_dir, dataset, args)
  finally:
    if temporary:
      shutil.rmtree(temporary, ignore_errors=True)


def run(data_dir: str, dataset: str, args: argparse.Namespace) -> None:
  print(describe(data_dir, dataset))
  cores = len(os.sched_getaffinity(0))
  platform = None
  rows = {}
  for size in args.image_size:
    row = rows[size] = {}
    batches = training_batches(data_dir, dataset, args, size)
    if "pipeline" in args.parts:
      startup, row["pipeline"] = time_stream(batches, args.steps, args.workers)
      print(f"  {size}: pipeline, {args.workers} workers: {row['pipeline']:.1f} images/s "
            f"(start-up {startup:.1f} s)", flush=True)
    if "in_process" in args.parts:
      _, row["in_process"] = time_stream(batches, args.steps, 0)
      print(f"  {size}: in-process pipeline: {row['in_process']:.1f} images/s", flush=True)
    if args.parts & {"step", "loop"}:
      step = TrainStep(args.model, size, args.batch_size)
      platform = step.jax.devices()[0].device_kind
      if "step" in args.parts:
        row["step"] = step.time(args.train_steps)
        print(f"  {size}: train step: {row['step']:.1f} images/s (compile "
              f"{step.compile_s:.1f} s)", flush=True)
      if "loop" in args.parts:
        row["loop"] = step.time_loop(batches, args.train_steps, args.workers)
        print(f"  {size}: train loop: {row['loop']:.1f} images/s", flush=True)
      del step

  print()
  print(f"input pipeline vs train step ({args.model} + aggregation head), batch "
        f"{args.batch_size}, flips, blur p={args.blur_prob:g}, JPEG p={args.jpeg_prob:g}; "
        f"{cores} CPU cores" + (f", train step on {platform}" if platform else ""))
  print("images/s:")
  print(f"{'size':>5} {'pipeline':>10} {'in-process':>10} {'train step':>10} {'train loop':>10}"
        f" {'pipe/step':>9} {'in-proc/step':>12}")
  print(f"{'':5} {f'{args.workers} workers':>10} {'0 workers':>10}")
  for size, row in rows.items():
    ratios = [row[peer] / row["step"] if peer in row and "step" in row else None
              for peer in ("pipeline", "in_process")]
    print(f"{size:>5} {fmt(row.get('pipeline'))} {fmt(row.get('in_process'))} "
          f"{fmt(row.get('step'))} {fmt(row.get('loop'))} {fmt(ratios[0], 9, 2)} "
          f"{fmt(ratios[1], 12, 2)}")
  for size, row in rows.items():
    if "pipeline" not in row or "step" not in row:
      continue
    ratio = row["pipeline"] / row["step"]
    if ratio > 1:
      verdict = (f"the pipeline is not the bottleneck: {args.workers} workers make {ratio:.2f}x "
                 "what the step consumes")
    else:
      per_worker = row["pipeline"] / max(args.workers, 1)
      need = math.ceil(row["step"] / per_worker) if per_worker else 0
      verdict = (f"the pipeline IS the bottleneck: {args.workers} workers make {ratio:.2f}x what "
                 f"the step consumes (about {need} workers would keep up)")
    print(f"  {size}x{size}: {verdict}")


if __name__ == "__main__":
  main(parse_args())
