r"""The paper's protocol as a grid of runs, and its report (one command, resumable).

  python -m agg_jax.grid --config=configs/faces_mini.py --out=runs/faces_mini_grid \
      --report=docs/results/faces_mini.md --manual_dir=../shared/data/faces-mini

For every shortcut control (the config file's CONTROLS), head (aggregation, logits; "trimmed"
is the aggregation run trimmed to its top 3 projections), training method (METHODS) and seed:
train on real vs that method, test on every method (cells.py). First each control's shortcut
audit (agg_jax.analysis.shortcuts), last the page: AP matrices and their spread over seeds, the
paired bootstrap of aggregation vs the plain head, unseen real photos, the importance chart and
CAMs of one aggregation run, the commands and the wall time (report.py). The config file's GRID
holds the settings every cell shares (the training budget); --set overrides them.
"""

import os
import sys

from absl import flags

from agg_jax import cli

PROG = "agg_jax.grid"
HEADS = ("aggregation", "logits", "trimmed")

flags.DEFINE_string("config", None, "Config file with get_config(method), METHODS, CONTROLS "
                    "and GRID (configs/faces_mini.py).")
flags.DEFINE_string("out", None, "Folder of the grid's runs (one run directory per cell).")
flags.DEFINE_string("report", None, "Markdown page to write (its figures go to a folder of "
                    "the same name without .md).")
flags.DEFINE_list("controls", None, "Shortcut controls (keys of CONTROLS); default: all.")
flags.DEFINE_list("heads", list(HEADS), f"Models: some of {', '.join(HEADS)}.")
flags.DEFINE_list("methods", None, "Training methods; default: the config's METHODS.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every cell.")
flags.DEFINE_multi_string("set", [], "KEY=VALUE over the config's GRID settings, e.g. "
                          "--set=train.num_steps=100 (a Python literal).")
flags.DEFINE_string("manual_dir", None, "The dataset's source folder (the build's "
                    "--manual_dir): source image size and JPEG quality cues need it.")
flags.DEFINE_string("unseen_real", "amfd", "A real source kept out of training, scored at the "
                    "validation threshold (empty: none).")
flags.DEFINE_integer("replicates", 1000, "Bootstrap replicates.")
flags.DEFINE_string("compilation_cache", "~/.cache/agg_jax/xla", "Persistent XLA cache.")
flags.mark_flags_as_required(["config", "out", "report"])


def parse_settings(module, given: list[str]) -> dict:
  import ast  # pylint: disable=import-outside-toplevel
  settings = dict(getattr(module, "GRID", {}))
  for entry in given:
    key, sep, value = entry.partition("=")
    if not sep or not key:
      raise cli.UsageError(f"--set={entry}: expected KEY=VALUE, e.g. train.num_steps=100")
    try:
      settings[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      settings[key] = value
  return settings


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: every option is a --flag")
  f = flags.FLAGS
  if not os.path.isfile(f.config):
    raise cli.UsageError(f"--config={f.config}: no such file")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(f.config))))
  import jax  # pylint: disable=import-outside-toplevel
  from agg_jax.grid import cells as cells_lib  # pylint: disable=import-outside-toplevel
  from agg_jax.grid import plan  # pylint: disable=import-outside-toplevel
  module = cells_lib.load_config_module(f.config)
  for name in ("get_config", "METHODS", "CONTROLS"):
    if not hasattr(module, name):
      raise cli.UsageError(f"--config={f.config}: defines no {name} (a grid config defines "
                           "get_config(method), METHODS, CONTROLS and GRID)")
  controls = {k: v for k, v in module.CONTROLS.items() if f.controls is None or k in f.controls}
  unknown = sorted(set(f.controls or []) - set(module.CONTROLS))
  if unknown:
    raise cli.UsageError(f"--controls: unknown {unknown}; {f.config} has "
                         f"{', '.join(module.CONTROLS)}")
  if set(f.heads) - set(HEADS) or not f.heads:
    raise cli.UsageError(f"--heads={','.join(f.heads)}: use some of {', '.join(HEADS)}")
  methods = list(f.methods or module.METHODS)
  if set(methods) - set(module.METHODS):
    raise cli.UsageError(f"--methods: unknown {sorted(set(methods) - set(module.METHODS))}; "
                         f"{f.config} has {', '.join(module.METHODS)}")
  try:
    seeds = [int(s) for s in f.seeds]
  except ValueError:
    raise cli.UsageError(f"--seeds={','.join(f.seeds)}: whole numbers") from None
  if f.manual_dir and not os.path.isdir(f.manual_dir):
    raise cli.UsageError(f"--manual_dir={f.manual_dir}: no such folder")
  if f.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(f.compilation_cache))
  grid = plan.Grid(config_file=f.config, module=module, out=f.out, controls=controls,
                   heads=list(f.heads), methods=methods, seeds=seeds,
                   settings=parse_settings(module, f.set), manual_dir=f.manual_dir,
                   unseen_real=f.unseen_real or None, replicates=f.replicates,
                   grid_command=" ".join(["python -m agg_jax.grid", *sys.argv[1:]]))
  for control in controls:
    try:
      grid.config(grid.cells(control)[0])
    except KeyError as e:
      raise cli.UsageError(f"{f.config}: {e.args[0]} (from --set or the config's CONTROLS/GRID)"
                           ) from None
  page = grid.run_all(f.report)
  print(f"{PROG}: report written to {page}", flush=True)
  return cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main, PROG)
