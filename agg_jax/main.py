"""Entry point: train a detector, or evaluate a trained one, in a run directory.

  python -m agg_jax.main --config=configs/demo.py --workdir=runs/demo     # train (or resume)
  python -m agg_jax.main --workdir=runs/demo --mode=evaluate              # rescore the test sets
  python -m agg_jax.main --workdir=runs/demo --mode=analyze               # importance, CAM, trimming
  python -m agg_jax.main --workdir=runs/demo --mode=export                # RUN/export: a detector

Modes: "train" trains, selects the checkpoint on the validation split and scores every test
set; rerunning the same command resumes an interrupted run (SIGTERM or Ctrl-C first saves a
checkpoint at the next step boundary and exits with status 75). "evaluate" scores every test set
with the best checkpoint of an existing run. "analyze" writes the paper's analyses of a trained
run to RUN/analysis/ (agg_jax/analysis: layer importance, Score-CAM, trimming, report.html).
"export" writes RUN/export/, the detector that `python -m agg_jax.predict` runs (export.py). A
run's saved `config.json` is the truth about it
(agg_jax/run.py): on an existing run --config may be left out, and a --config given must agree
with the saved one. Config fields are overridden on the command line, e.g.
`--config.train.batch_size=8`; a wrong key or value stops the command with one line before any
compute (the convention of agg_jax/cli.py).
"""

import os
import sys

if __name__ == "__main__":  # first of all: started again with XLA's large-block allocator
  from agg_jax import large_blocks
  large_blocks.start_preloaded()

import jax  # noqa: E402
import ml_collections  # noqa: E402
from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from agg_jax import cli, large_blocks, preemption, run  # noqa: E402

PROG = "agg_jax.main"
MODES = ("train", "evaluate", "analyze", "export")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py). Needed to start a run; on an existing run the "
    "saved config is used, and a config given must agree with it.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: config, checkpoints, logs, results.")
flags.DEFINE_enum("mode", "train", list(MODES), "What to do.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() (multi-host). On TPU pods and SLURM the "
                  "coordinator and process ids are found automatically; elsewhere pass them.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --distributed).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --distributed).")
flags.DEFINE_integer("process_id", None, "This process's id (with --distributed).")
flags.DEFINE_string("compilation_cache", "~/.cache/agg_jax/xla",
                    "Persistent XLA compilation cache: a rerun (resume, evaluate) skips "
                    "compiling. Empty: off.")
flags.DEFINE_list("platforms", ["cpu"], "--mode=export: the platforms the exported modules "
                  "run on, some of cpu, cuda, rocm, tpu (one artefact for all).")
flags.DEFINE_integer("trimmed", None, "--mode=export: also export the analysis's masked top-N "
                     "model to RUN/export/trimmed_N (needs --mode=analyze first).")
flags.mark_flags_as_required(["workdir"])


def config_imports_from_anywhere(argv: list[str]) -> None:
  """Config files import their siblings as `configs.<name>` (configs/demo.py imports
  configs/default.py): the folder above the config's folder goes on the import path, so a
  config loads from any working directory."""
  for arg in argv:
    if arg.startswith("--config="):
      config_dir = os.path.dirname(os.path.abspath(arg.split("=", 1)[1].split(":")[0]))
      sys.path.insert(0, os.path.dirname(config_dir))


def given_config() -> ml_collections.ConfigDict | None:
  """The --config given (overrides applied), None without one; UsageError when it cannot load."""
  config = FLAGS.config
  if config is not None and not isinstance(config, ml_collections.ConfigDict):
    error = getattr(config, "_error", "unreadable")  # config_flags' stand-in for a failed load
    cause = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
    raise cli.UsageError(f"--config={FLAGS['config'].config_filename}: cannot load it: {cause}")
  return config


def initialize_distributed() -> None:
  """Joins the multi-host job; CPU devices exchange collectives over gloo (no effect on GPU/TPU)."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: every option is a --flag")
  config = run.resolve_config(FLAGS.workdir, given_config(), FLAGS.mode)
  if FLAGS.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(FLAGS.compilation_cache))
  if FLAGS.distributed:
    initialize_distributed()
  run.check_config(config, jax.device_count())
  from agg_jax import evaluate, train, weights  # pylint: disable=import-outside-toplevel
  from agg_jax.models import cpu_kernels  # pylint: disable=import-outside-toplevel
  logging.info("devices: %s", jax.devices())
  logging.info("XLA's large blocks: %s", "agg_jax.large_blocks" if large_blocks.active()
               else "glibc's malloc")
  logging.info("matmuls over channels: %s", "MKL" if cpu_kernels.matmul_enabled() else "XLA's dot")
  try:
    if FLAGS.mode == "train":
      if jax.process_index() == 0 and not run.config_path(FLAGS.workdir).exists():
        run.save_config(FLAGS.workdir, config)
      try:
        train.train_and_evaluate(config, FLAGS.workdir)
      except preemption.Preempted as e:
        print(f"{PROG}: {e}", file=sys.stderr, flush=True)
        return cli.EXIT_PREEMPTED
    elif FLAGS.mode == "evaluate":
      evaluate.evaluate_run(config, FLAGS.workdir)
    elif FLAGS.mode == "analyze":
      from agg_jax.analysis import analyze  # pylint: disable=import-outside-toplevel
      analyze.analyze_run(config, FLAGS.workdir)
    else:
      from agg_jax import export  # pylint: disable=import-outside-toplevel
      export.export_run(config, FLAGS.workdir, FLAGS.platforms, FLAGS.trimmed)
  except weights.WeightsError as e:  # converted weights that turn out unreadable
    raise cli.UsageError(str(e)) from None
  return cli.EXIT_OK


if __name__ == "__main__":
  config_imports_from_anywhere(sys.argv)
  cli.run(main, PROG)
