r"""Videos and photos -> aligned 256x256 faces and OUTPUT/manifest.jsonl (paper Sec. III-A, IV-A).

  python -m agg_jax.preprocess --input=PATH [--input=PATH ...] --output=DIR \
      [--frames=100] [--sampling=first|uniform] [--detector=hog|cnn] [--size=256] [--workers=N]
      [--beam [--beam_options="--runner=... ..."]]

Inputs are files or folders (searched recursively), videos and images mixed; paths after the
flags are inputs too. Aligned PNGs mirror the input tree under DIR; DIR/manifest.jsonl has one
record per frame or image (status ok, no_face or "error: <reason>"). A rerun with the same
options skips what the manifest already holds. ``--beam`` runs the same work as an Apache Beam
pipeline (``agg_jax.preprocess.beam``; Beam's local runner with --workers processes unless
--beam_options name another).

Exit status (``agg_jax.cli``): 0 when every file was processed (a photo without a face is
processed: its record says ``no_face``); 1 when a file could not be processed in this run (a
broken file: its error records say why, and the other files are done; ``--retry_errors`` redoes
it); 2 for a usage mistake (missing input, unwritable output, options
that differ from the manifest's), reported in one line ``agg_jax.preprocess: error: ...``
before anything is written (no output folder is made); 1 when the run could not finish (worker
processes that cannot run, a failed Beam pipeline); 130 on Ctrl-C. Finished sources are kept in
the manifest, and the same command resumes.
"""

import os

from absl import flags

from agg_jax import cli
from agg_jax.preprocess import beam, dlib_models, frames, images, runner
from agg_jax.preprocess.detect import DETECTORS
from agg_jax.preprocess.pipeline import Settings

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("input", [], "Image or video file, or folder (recursive); repeatable.")
flags.DEFINE_string("output", None, "Output folder for the PNGs and manifest.jsonl.")
flags.DEFINE_integer("frames", 100, "Frames taken from each video (paper: the first 100).")
flags.DEFINE_enum("sampling", "first", list(frames.SAMPLINGS),
                  "Which frames: the first N, or N spread uniformly over the video.")
flags.DEFINE_enum("detector", "hog", list(DETECTORS), "dlib face detector (cnn: slow on CPU).")
flags.DEFINE_integer("size", 256, "Side of the aligned output in pixels.")
flags.DEFINE_integer("workers", len(os.sched_getaffinity(0)), "Worker processes.")
flags.DEFINE_float("smooth", 1.0, "Temporal smoothing of the alignment in videos (0: off).")
flags.DEFINE_float("max_megapixels", images.MAX_PIXELS / 1e6,
                   "Images whose header claims more pixels are refused (decompression bombs).")
flags.DEFINE_bool("retry_errors", False, "Redo sources whose records hold errors.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("beam", False, "Run as an Apache Beam pipeline (pip install 'agg_jax[beam]').")
flags.DEFINE_string("beam_options", None,
                    "Beam pipeline options, e.g. \"--runner=FlinkRunner --parallelism=64\" "
                    "(default: Beam's local runner, --workers processes). Implies --beam.")
flags.mark_flag_as_required("output")


PROG = "agg_jax.preprocess"


def main(argv) -> int:
  inputs = list(FLAGS.input) + list(argv[1:])
  if not inputs:
    raise cli.UsageError("no input: give --input=PATH (a file or folder), once or more")
  for name, value, low in (("frames", FLAGS.frames, 1), ("size", FLAGS.size, 16),
                           ("workers", FLAGS.workers, 1)):
    if value < low:
      raise cli.UsageError(f"--{name}={value}: must be at least {low}")
  settings = Settings(size=FLAGS.size, frames=FLAGS.frames, sampling=FLAGS.sampling,
                      detector=FLAGS.detector, smooth=FLAGS.smooth,
                      max_pixels=int(FLAGS.max_megapixels * 1e6))
  try:
    if settings.detector == "cnn":
      dlib_models.find_model(dlib_models.CNN_DETECTOR)
    if FLAGS.beam or FLAGS.beam_options:
      summary = beam.run(inputs, FLAGS.output, settings, workers=FLAGS.workers,
                         retry_errors=FLAGS.retry_errors, options=FLAGS.beam_options,
                         progress=FLAGS.progress)
    else:
      summary = runner.run(inputs, FLAGS.output, settings, workers=FLAGS.workers,
                           retry_errors=FLAGS.retry_errors, progress=FLAGS.progress)
  except dlib_models.ModelNotFoundError as e:
    raise cli.UsageError(str(e)) from None
  except RuntimeError as e:  # Worker processes that cannot run at all, a failed pipeline.
    cli.fail(PROG, str(e), cli.EXIT_FAILED)
  runner.print_summary(summary)
  return cli.EXIT_FAILED if summary.errors else cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main, PROG)
