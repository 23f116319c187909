"""CLI: prepare a face dataset (TFDS ArrayRecord files), with ``tfds build``'s flags.

  python -m agg_jax.datasets build NAME --manual_dir=DIR [--data_dir=DIR] [--config=CONFIG]
      [--beam_pipeline_options=OPTIONS] [--workers=N] [--overwrite]
  python -m agg_jax.datasets read NAME[/CONFIG] [--data_dir=DIR]
  python -m agg_jax.datasets list

NAME is a builder of ``datasets/`` or the path of a builder folder. ``--config`` names one of
the builder's configs, or is JSON that sets the fields of a config of one's own, which needs a
name of its own (``'{"name": "c23_10", "compression": "c23", "frames": 10}'``); it is
prepared in ``DATA_DIR/NAME/<its name>``.
``tfds build`` works too where TensorFlow is installed; this command needs none. It ends with
the examples per split, the skips and the build time. ``read`` reads every face of a prepared
dataset back as training does and reports each split's faces, labels, shape, mean padding and
read rate. Exit status: agg_jax/cli.py (1 if
anything was skipped).
"""

import json
import os
import time

from absl import flags

from agg_jax import cli
from agg_jax.datasets import DEFAULT_DATA_DIR, DatasetError, builder_class, list_builders

PROG = "agg_jax.datasets"
COMMANDS = ("build", "list")

FLAGS = flags.FLAGS
flags.DEFINE_string("manual_dir", None, "The folder holding the dataset's own files.")
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "Where prepared datasets are written.")
flags.DEFINE_string("config", None, "A builder config's name, or JSON of its fields.")
flags.DEFINE_string("beam_pipeline_options", None,
                    "Apache Beam options for builders that run on Beam, comma-separated "
                    "(default: the local runner with --workers processes).")
flags.DEFINE_integer("workers", len(os.sched_getaffinity(0)), "Processes that align faces.")
flags.DEFINE_bool("overwrite", False, "Rebuild a dataset that is already prepared.")
flags.DEFINE_integer("max_examples_per_split", None, "Debugging: stop each split early.")


def _config(builder_cls, given: str | None):
  names = [c.name for c in builder_cls.BUILDER_CONFIGS]
  if given is None:
    return None
  if not names:
    raise cli.UsageError(f"--config={given}: {builder_cls.name} has no configs")
  if given.startswith("{"):
    try:
      fields = json.loads(given)
      config = builder_cls.BUILDER_CONFIGS[0].__class__(**fields)
    except (ValueError, TypeError) as e:
      raise cli.UsageError(f"--config={given}: not a config of {builder_cls.name} ({e})") from None
    if config.name in names:
      raise cli.UsageError(f"--config={given}: a config of your own needs a name of its own "
                           f"(not {config.name!r}, one of {builder_cls.name}'s configs)")
    return config
  if given not in names:
    raise cli.UsageError(f"--config={given}: {builder_cls.name} has the configs "
                         f"{', '.join(names)}")
  return given


def _beam_options(workers: int):
  # pylint: disable-next=import-outside-toplevel
  from apache_beam.options.pipeline_options import PipelineOptions
  if FLAGS.beam_pipeline_options:
    return PipelineOptions(FLAGS.beam_pipeline_options.split(","))
  mode = "multi_processing" if workers > 1 else "in_memory"
  return PipelineOptions(["--runner=DirectRunner", f"--direct_num_workers={workers}",
                          f"--direct_running_mode={mode}"])


def build(name: str) -> int:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if FLAGS.manual_dir is None:
    raise cli.UsageError("build needs --manual_dir, the folder of the dataset's own files")
  if not os.path.isdir(FLAGS.manual_dir):
    raise cli.UsageError(f"--manual_dir={FLAGS.manual_dir}: no such folder")
  try:
    builder_cls = builder_class(name)
  except DatasetError as e:
    raise cli.UsageError(str(e)) from None
  def make_builder():
    try:
      return builder_cls(data_dir=os.path.expanduser(FLAGS.data_dir),
                         config=_config(builder_cls, FLAGS.config))
    except (ValueError, AssertionError, DatasetError) as e:  # TFDS's word on a config
      raise cli.UsageError(f"--config={FLAGS.config}: {e}") from None

  builder = make_builder()
  if builder.is_prepared():
    if not FLAGS.overwrite:
      print(f"{builder.info.full_name} is already prepared in {builder.data_dir} "
            "(--overwrite rebuilds it)")
      return cli.EXIT_OK
    builder.data_path.rmtree()  # as tfds build --overwrite: a builder of the old files
    builder = make_builder()  # cannot prepare new ones
  builder.workers = FLAGS.workers
  beam_options = None
  if getattr(builder_cls, "USES_BEAM", False):
    try:
      beam_options = _beam_options(FLAGS.workers)
    except ImportError as e:
      raise cli.UsageError(f"{builder_cls.name} runs on Apache Beam ({e}): "
                           "pip install 'agg_jax[beam]'") from None
  mode = tfds.download.GenerateMode
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.abspath(FLAGS.manual_dir), beam_options=beam_options,
      max_examples_per_split=FLAGS.max_examples_per_split,
      download_mode=mode.FORCE_REDOWNLOAD if FLAGS.overwrite else mode.REUSE_DATASET_IF_EXISTS)
  start = time.monotonic()
  try:
    builder.download_and_prepare(file_format="array_record", download_config=download_config)
  except DatasetError as e:
    raise cli.UsageError(str(e)) from None
  print(summary(builder, time.monotonic() - start))
  return cli.EXIT_FAILED if builder.info.metadata["skipped"]["count"] else cli.EXIT_OK


def summary(builder, seconds: float | None = None) -> str:
  """Examples per split, the skips (the first few listed), and the build time."""
  info = builder.info
  lines = [f"{info.full_name} in {builder.data_dir}" + (
      f": built in {seconds:.0f} s" if seconds is not None else "")]
  width = max(len(s) for s in info.splits)
  for split, split_info in sorted(info.splits.items()):
    lines.append(f"  {split:<{width}}  {split_info.num_examples:>8,} faces")
  skipped = info.metadata["skipped"]
  lines.append(f"  skipped: {skipped['count']:,}" + (
      f" ({', '.join(f'{n} {s}' for s, n in sorted(skipped['by_status'].items()))})"
      if skipped["count"] else ""))
  for split in skipped.get("empty_splits", []):
    lines.append(f"    split {split} left out: every photo and video of it was skipped")
  for skip in skipped["listed"][:10]:
    frame = f" frame {skip['frame']}" if skip["frame"] >= 0 else ""
    lines.append(f"    {skip['path']}{frame}: {skip['status']}")
  if skipped["count"] > 10:
    lines.append(f"    ... (all in {builder.data_dir}/metadata.json)")
  return "\n".join(lines)


def read_back(dataset: str) -> int:
  """Reads every face of a prepared dataset back (as training does) and reports per split."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from agg_jax.datasets import faces, prepared_dir  # pylint: disable=import-outside-toplevel
  name, _, config = dataset.partition("/")
  folder = prepared_dir(FLAGS.data_dir, name, config or None)
  if folder is None:
    raise cli.UsageError(f"{dataset} is not prepared in {FLAGS.data_dir}")
  builder = tfds.builder_from_directory(str(folder))
  print(summary(builder))
  print(f"  {'split':<{max(map(len, builder.info.splits))}}  faces  labels  shape        "
        "padding  read/s")
  for split in sorted(builder.info.splits):
    source = builder.as_data_source(split)
    start, labels, padding, shapes = time.monotonic(), set(), [], set()
    for i in range(len(source)):
      record = source[i]
      shapes.add(faces.decode_png(record["image"]).shape)
      labels.add(int(record["label"]))
      padding.append(float(record["padding"]))
    rate = len(source) / (time.monotonic() - start)
    print(f"  {split:<{max(map(len, builder.info.splits))}}  {len(source):>5}  "
          f"{','.join(map(str, sorted(labels))):>6}  {' '.join(f'{s}' for s in shapes):<11}  "
          f"{np.mean(padding):>7.3f}  {rate:>6.0f}")
  return cli.EXIT_OK


def main(argv: list[str]) -> int:
  args = argv[1:]
  if args == ["list"]:
    print("\n".join(list_builders()))
    return cli.EXIT_OK
  if len(args) == 2 and args[0] in ("build", "read"):
    return build(args[1]) if args[0] == "build" else read_back(args[1])
  raise cli.UsageError(f"give `build NAME`, `read NAME[/CONFIG]` or `list` (got "
                       f"{' '.join(args) or 'nothing'}); builders: {', '.join(list_builders())}")


if __name__ == "__main__":
  cli.run(main, PROG)
