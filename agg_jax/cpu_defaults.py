"""Process defaults that make XLA:CPU fast, set when agg_jax is imported, before JAX starts.

Two settings, each measured on the paper's training step (EfficientNetV2-S with the aggregation
head, 256x256, batch 16, 2 cores; bench/bench_cpu_defaults.py measures them on your machine):

- **XLA flags.** XLA hands convolutions to YNNPACK on CPU, whose kernels run EfficientNet's
  convolutions 2-8x slower than XLA's own (Eigen) ones, weight gradients most (a 3x3
  convolution 48->192 at 16x64x64: 570 ms for the weight gradient through YNNPACK, 92 ms through
  Eigen). `xla_cpu_experimental_ynn_fusion_type=reduce` keeps YNNPACK for reductions only,
  where it is worth keeping: the step runs 2.4x as fast as with XLA's own reductions. XLA's
  memory-minimising scheduler (`xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED`)
  orders the step so that it needs 2.9 GB of temporary buffers instead of 3.6, at the same
  speed. A flag the user put in `XLA_FLAGS` is never overridden. These are CPU compiler flags:
  GPU and TPU compilations ignore them.
- **malloc.** XLA:CPU allocates a step's temporary buffer (gigabytes for a training step) on
  one of its threads, where glibc's malloc maps fresh pages for any large block and unmaps them
  when freed: every step then faults in every page again (1.1 million page faults per step,
  about a quarter of its time). One arena, no mmap and no trimming
  (`mallopt(M_ARENA_MAX, 1)`, `M_MMAP_MAX=0`, `M_TRIM_THRESHOLD=-1`) let the next step reuse
  the same pages; the cost is that freed memory stays with the process (its resident size stays
  at its peak) instead of going back to the system.

Programs that run once (the train state's initialisation) compile with XLA's fast-compile preset
on CPU (`run_once_compiler_options`).

Since freed memory is kept, what compiling used is handed back before the training step first
runs (`release_free_memory`, called by `train.init_state` and `train.compiled_train_step`):
otherwise the step's buffers come on top of it, 0.8 GB more at the peak.

Rematerialisation (`model.remat`) shrinks a step's buffers further, at the cost of recomputing;
bench/bench_cpu_defaults.py measures it and each default side by side (docs/architecture.md,
"Speed and memory on CPU").

`AGG_JAX_XLA_FLAGS=none` (the flags and the preset) or `AGG_JAX_MALLOC=system` in the
environment switches either off.
Both take effect only if agg_jax is imported before JAX creates its CPU backend (its first
computation or `jax.devices()`), as every agg_jax command does.
"""

import ctypes
import gc
import os
import platform

XLA_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "reduce",
             "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
MALLOPT = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim

XLA_SWITCH, MALLOC_SWITCH = "AGG_JAX_XLA_FLAGS", "AGG_JAX_MALLOC"


# For programs that run once, whose compile is most of their time: XLA's fast-compile preset.
# EfficientNetV2-S's train state (about 900 random initialisers) took 45.8-58.2 s to initialise
# against 49.4-66.5 s in four paired cold runs, running as fast, its values within a rounding of
# the default pipeline's (1 ulp in 28 of 907 arrays). Not for the training step: it compiled no
# faster there.
RUN_ONCE_COMPILER_OPTIONS = {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE"}


def _xla_defaults_on(environ) -> bool:
  return environ.get(XLA_SWITCH, "").lower() != "none"


def run_once_compiler_options(devices, environ=os.environ) -> dict:
  """`RUN_ONCE_COMPILER_OPTIONS` where every device is a CPU and the XLA defaults are on, else
  none (`jax.jit(..., compiler_options=...)`)."""
  if not _xla_defaults_on(environ):
    return {}
  return dict(RUN_ONCE_COMPILER_OPTIONS) if all(d.platform == "cpu" for d in devices) else {}


def merged_xla_flags(xla_flags: str, defaults: dict[str, str] = XLA_FLAGS) -> str:
  """`xla_flags` with each default flag that it does not set already appended."""
  given = {flag.lstrip("-").split("=", 1)[0] for flag in xla_flags.split()}
  extra = [f"--{name}={value}" for name, value in defaults.items() if name not in given]
  return " ".join([xla_flags.strip(), *extra]).strip()


def _glibc():
  """The process's C library if it is glibc (whose malloc these settings address), else None."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  return ctypes.CDLL(None)


def tune_malloc() -> bool:
  """Applies `MALLOPT` to glibc's malloc; False where the C library is not glibc."""
  libc = _glibc()
  return libc is not None and all(libc.mallopt(param, value) == 1 for param, value in MALLOPT)


def release_free_memory() -> bool:
  """Returns the free pages of glibc's heap to the system (`malloc_trim`); False where the C
  library is not glibc. Collects Python's reference cycles first: tracing a model leaves
  hundreds of megabytes in them (0.55 GB after initialising EfficientNetV2-S's train state)."""
  gc.collect()
  libc = _glibc()
  return libc is not None and bool(libc.malloc_trim(0))


def apply(environ=os.environ) -> None:
  """Sets both defaults in this process, each unless its switch turns it off."""
  if _xla_defaults_on(environ):
    environ["XLA_FLAGS"] = merged_xla_flags(environ.get("XLA_FLAGS", ""))
  if environ.get(MALLOC_SWITCH, "").lower() != "system":
    tune_malloc()
