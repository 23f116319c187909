"""Entry point: `python -m agg_jax.main --config=configs/demo.py --workdir=runs/demo`.

Modes: "train" (train, select the checkpoint on validation, score every test set) and
"evaluate" (score every test set with the best checkpoint of an existing run). Config fields are
overridden on the command line, e.g. `--config.train.batch_size=8`; a wrong key or value stops
the run with a message before any compute. The resolved config is saved as WORKDIR/config.json.
"""

import json
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from agg_jax import config_validation

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, results.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate"], "What to do.")
flags.mark_flags_as_required(["config", "workdir"])


def save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # library INFO lines (orbax) drown the progress bar
  config = FLAGS.config
  try:
    config_validation.validate(config, jax.device_count())
  except config_validation.ConfigError as e:
    sys.exit(f"error: {e}")
  from agg_jax import evaluate, train  # after validation: heavy imports only for real runs
  logging.info("devices: %s", jax.devices())
  save_config(config, FLAGS.workdir)
  if FLAGS.mode == "train":
    train.train_and_evaluate(config, FLAGS.workdir)
  else:
    evaluate.evaluate_run(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
