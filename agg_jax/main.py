"""Entry point: `python -m agg_jax.main --config=configs/demo.py --workdir=runs/demo`.

Modes: "train" (train, select the checkpoint on validation, score every test set) and
"evaluate" (score every test set with the best checkpoint of an existing run). Config fields are
overridden on the command line, e.g. `--config.train.batch_size=8`; a wrong key or value stops
the run with a message before any compute. The resolved config is saved as WORKDIR/config.json.
"""

import os
import re
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from agg_jax import config_validation, fileio

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, results.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate"], "What to do.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() (multi-host). On TPU pods and SLURM the "
                  "coordinator and process ids are found automatically; elsewhere pass them.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --distributed).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --distributed).")
flags.DEFINE_integer("process_id", None, "This process's id (with --distributed).")
flags.DEFINE_string("compilation_cache", "~/.cache/agg_jax/xla",
                    "Persistent XLA compilation cache: a rerun (resume, evaluate) skips "
                    "compiling. Empty: off.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a one-line error naming the override that names no config key."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as e:
    text = str(e).encode().decode("unicode_escape").strip("'\"")
    key = re.match(r"'?([^'\n]+)", text).group(1)
    bad = [arg for arg in argv if arg.startswith("--config.") and
           re.search(rf"\.{re.escape(key)}(=|\.|$)", arg.split("=")[0] + "=")]
    hint = " ".join(line.strip() for line in text.splitlines()[1:])
    sys.exit(f"error: {bad[0] if bad else 'a --config override'}: the config has no key "
             f"{key!r}. {hint}".rstrip())


def initialize_distributed() -> None:
  """Joins the multi-host job; CPU devices exchange collectives over gloo (no effect on GPU/TPU)."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)


def save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    fileio.atomic_write_text(os.path.join(workdir, "config.json"),
                             config.to_json_best_effort(indent=2))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # library INFO lines (orbax) drown the progress bar
  if FLAGS.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(FLAGS.compilation_cache))
  if FLAGS.distributed:
    initialize_distributed()
  config = FLAGS.config
  try:
    config_validation.validate(config, jax.device_count())
  except config_validation.ConfigError as e:
    sys.exit(f"error: {e}")
  from agg_jax import evaluate, train, weights  # after validation: heavy imports for real runs
  logging.info("devices: %s", jax.devices())
  save_config(config, FLAGS.workdir)
  try:
    if FLAGS.mode == "train":
      train.train_and_evaluate(config, FLAGS.workdir)
    else:
      evaluate.evaluate_run(config, FLAGS.workdir)
  except (weights.WeightsError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
