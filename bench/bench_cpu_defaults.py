"""What agg_jax's CPU defaults (agg_jax/cpu_defaults.py) and the memory options buy, in the same
run: the detector's training step (backbone + aggregation head, AdamW) under each variant, each
in a process of its own (the settings act when a process starts), all alive at once and timed in
alternating rounds after a warm-up. Prints the median step, its ratio to the defaults, compile
time and each process's peak resident memory.

Variants (--variants):
  defaults       as every agg_jax command runs: the XLA flags, the malloc settings and the
                 allocator for XLA's large blocks (agg_jax/large_blocks.py)
  no_xla_flags   AGG_JAX_XLA_FLAGS=none (XLA's own convolution kernels and scheduler)
  system_malloc  AGG_JAX_MALLOC=system (glibc's malloc as it comes, no large-block allocator)
  no_large_blocks  AGG_JAX_MALLOC=no_large_blocks (glibc serves XLA's large blocks too)
  no_fill        AGG_JAX_MALLOC=no_fill (the malloc settings, the heap's holes left after
                 compiling unfilled)
  neither        both switched off: agg_jax before these defaults
  xla_scheduler  the defaults with XLA's own scheduler for the step instead of the
                 memory-minimising one (a scheduler named in XLA_FLAGS wins)
  no_ynn         the defaults with YNNPACK for nothing, reductions included (what keeping it
                 for reductions buys)
  xla_matmul     AGG_JAX_MATMUL=xla: 1x1 convolutions multiply through XLA's dot, not MKL
  remat_block    the defaults plus model.remat="block"

  python bench/bench_cpu_defaults.py
  python bench/bench_cpu_defaults.py --size=256 --batch=16 --variants=defaults,xla_scheduler
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

BENCH = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(BENCH))
XLA_SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT"
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="
VARIANTS = {  # (environment, model.remat)
    "defaults": ({}, "none"),
    "no_xla_flags": ({"AGG_JAX_XLA_FLAGS": "none"}, "none"),
    "system_malloc": ({"AGG_JAX_MALLOC": "system"}, "none"),
    "no_fill": ({"AGG_JAX_MALLOC": "no_fill"}, "none"),
    "no_large_blocks": ({"AGG_JAX_MALLOC": "no_large_blocks"}, "none"),
    "neither": ({"AGG_JAX_XLA_FLAGS": "none", "AGG_JAX_MALLOC": "system"}, "none"),
    "xla_scheduler": ({"XLA_FLAGS": XLA_SCHEDULER}, "none"),
    "no_ynn": ({"XLA_FLAGS": NO_YNN}, "none"),
    "xla_matmul": ({"AGG_JAX_MATMUL": "xla"}, "none"),
    "remat_block": ({}, "block"),
}

flags.DEFINE_string("model", "efficientnetv2_s", "Backbone name.")
flags.DEFINE_integer("size", 128, "Input side.")
flags.DEFINE_integer("batch", 16, "Batch size.")
flags.DEFINE_integer("steps", 3, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the median round is reported.")
flags.DEFINE_list("variants", ["defaults", "no_xla_flags", "system_malloc"],
                  f"Which of {list(VARIANTS)} to run.")
flags.DEFINE_string("worker", "", "Internal: run as the worker of this variant.")
FLAGS = flags.FLAGS


def worker():
  """Compiles the step, answers each "round" line on stdin with that round's seconds per step,
  and "end" with its peak resident memory."""
  # pylint: disable=import-outside-toplevel  (the parent never imports JAX)
  sys.path.insert(0, ROOT)
  from agg_jax import large_blocks  # first: its CPU defaults, then JAX
  large_blocks.start_preloaded()  # as agg_jax.main: started again with it, unless switched off
  import jax
  import bench_common
  from configs import default
  config = default.get_config()
  config.model.name, config.model.remat = FLAGS.model, VARIANTS[FLAGS.worker][1]
  state, step, batch = bench_common.synthetic_train_step(config, FLAGS.size, FLAGS.batch)

  def run(steps: int) -> float:
    nonlocal state
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps

  compile_s = run(1)
  run(FLAGS.steps)  # warm-up
  print(json.dumps({"compile_s": compile_s}), flush=True)
  for line in sys.stdin:
    if line.strip() == "end":
      break
    print(json.dumps({"step_s": run(FLAGS.steps)}), flush=True)
  print(json.dumps({"peak_gb": bench_common.peak_resident_gb()}), flush=True)


def start_worker(variant: str) -> subprocess.Popen:
  environ, _ = VARIANTS[variant]
  env = {k: v for k, v in os.environ.items() if k not in ("AGG_JAX_XLA_FLAGS", "AGG_JAX_MALLOC")}
  env.update(environ)
  argv = [sys.executable, BENCH, f"--worker={variant}",
          *[f"--{flag}={getattr(FLAGS, flag)}" for flag in ("model", "size", "batch", "steps")]]
  return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def answer(process: subprocess.Popen, variant: str) -> dict:
  line = process.stdout.readline()
  if not line:
    raise RuntimeError(f"variant {variant}: its process ended (exit status {process.wait()})")
  return json.loads(line)


def main(_):
  if FLAGS.worker:
    return worker()
  unknown = set(FLAGS.variants) - set(VARIANTS)
  if unknown:
    raise app.UsageError(f"--variants: unknown {sorted(unknown)}; use some of {list(VARIANTS)}")
  print(f"train step: {FLAGS.model} + aggregation head at {FLAGS.size}x{FLAGS.size}, batch "
        f"{FLAGS.batch}, float32, {os.cpu_count()} CPUs; median of {FLAGS.rounds} alternating "
        f"rounds of {FLAGS.steps} steps after a warm-up", flush=True)
  workers, compile_s = {}, {}
  for variant in FLAGS.variants:  # one compiles at a time
    workers[variant] = start_worker(variant)
    compile_s[variant] = answer(workers[variant], variant)["compile_s"]
  rounds = {variant: [] for variant in workers}
  for _ in range(FLAGS.rounds):
    for variant, process in workers.items():
      process.stdin.write("round\n")
      process.stdin.flush()
      rounds[variant].append(answer(process, variant)["step_s"])
  peak = {}
  for variant, process in workers.items():
    process.stdin.write("end\n")
    process.stdin.flush()
    peak[variant] = answer(process, variant)["peak_gb"]
    process.wait()
  step_s = {variant: sorted(times)[len(times) // 2] for variant, times in rounds.items()}
  first = FLAGS.variants[0]
  print(f"{'variant':14s} {'step s':>7s} {'images/s':>9s} {'vs ' + first:>13s} {'compile s':>10s}"
        f" {'peak GB':>8s}")
  for variant in workers:
    print(f"{variant:14s} {step_s[variant]:7.2f} {FLAGS.batch / step_s[variant]:9.2f} "
          f"{step_s[first] / step_s[variant]:12.2f}x {compile_s[variant]:10.1f} "
          f"{peak[variant]:8.2f}")


if __name__ == "__main__":
  app.run(main)
