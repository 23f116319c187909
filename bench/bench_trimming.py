"""Speed of the trimmed models against the full one: what cutting the backbone buys.

For an analysed run (`--mode=analyze` wrote RUN/analysis/trimming.json), builds the full model
and the masked trimmed model of each N from the run's best checkpoint, and times one jitted
forward pass over a batch (inference, float32) in alternating rounds, full then trimmed, after a
warm-up. Prints per N the blocks the backbone runs, the median milliseconds of both over the
rounds, and full / trimmed: the speed-up, measured against the full model in the same run.

  .venv/bin/python bench/bench_trimming.py --workdir=runs/faces_mini_gan --batch=32 --rounds=5
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from agg_jax import data, models, run, sharding  # pylint: disable=wrong-import-position
from agg_jax.analysis import analyze, trimming  # pylint: disable=wrong-import-position


def timed(forward, variables, images, repeats: int) -> float:
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(forward(variables, images))
  return (time.perf_counter() - start) / repeats


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="an analysed run directory")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3, help="forward passes per timing")
  args = parser.parse_args()
  saved = analyze.analysis_dir(args.workdir) / "trimming.json"
  if not saved.is_file():
    sys.exit(f"bench_trimming: {saved} is missing: run --mode=analyze on {args.workdir} first")
  config = run.load_config(args.workdir)
  model, variables = run.restore_best(args.workdir, config, sharding.make_mesh(config.mesh))
  variables = jax.tree.map(np.asarray, variables)
  images = jnp.asarray(np.random.default_rng(0).integers(
      0, 256, (args.batch, *data.image_shape(config.data)), np.uint8))
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  forward(variables, images).block_until_ready()
  blocks = json.loads(saved.read_text())["blocks"]
  print(f"{config.model.name}, batch {args.batch} at {images.shape[1]} px, "
        f"{len(blocks)} blocks; {jax.devices()[0].platform}")
  print(f"{'N':>4} {'blocks run':>10} {'full ms':>9} {'trimmed ms':>11} {'speed-up':>9}")
  for entry in json.loads(saved.read_text())["trimmed"]:
    if entry["variant"] != "masked":
      continue
    trimmed = trimming.Trimmed.from_json(entry)
    small = models.from_config(trimming.model_config(config.model, trimmed))
    small_variables = trimming.trimmed_variables(small, variables, trimmed, images)
    small_forward = jax.jit(lambda v, x, m=small: m.apply(v, x, train=False)[0])
    small_forward(small_variables, images).block_until_ready()
    full_ms, small_ms = [], []
    for _ in range(args.rounds):  # alternating, so both see the same machine
      full_ms.append(1000 * timed(forward, variables, images, args.repeats))
      small_ms.append(1000 * timed(small_forward, small_variables, images, args.repeats))
    full, small_median = statistics.median(full_ms), statistics.median(small_ms)
    print(f"{trimmed.size:>4} {max(trimmed.blocks) + 1:>10} {full:>9.1f} {small_median:>11.1f} "
          f"{full / small_median:>8.2f}x")


if __name__ == "__main__":
  main()
