"""Process defaults that make XLA:CPU fast, set when agg_jax is imported, before JAX starts.

Two settings, each measured on the paper's training step (EfficientNetV2-S with the aggregation
head, 256x256, batch 16, 2 cores; bench/bench_cpu_defaults.py measures them on your machine):

- **XLA flags.** XLA hands convolutions to YNNPACK on CPU, whose kernels run EfficientNet's
  convolutions 2-8x slower than XLA's own (Eigen) ones, weight gradients most (a 3x3
  convolution 48->192 at 16x64x64: 570 ms for the weight gradient through YNNPACK, 92 ms through
  Eigen). `xla_cpu_experimental_ynn_fusion_type=reduce` keeps YNNPACK for reductions only,
  where it is worth keeping: the step runs 2.4x as fast as with XLA's own reductions. A flag the
  user put in `XLA_FLAGS` is never overridden. A CPU compiler flag: GPU and TPU compilations
  ignore it.
- **malloc.** XLA:CPU allocates a step's temporary buffer (gigabytes for a training step) on
  one of its threads, where glibc's malloc maps fresh pages for any large block and unmaps them
  when freed: every step then faults in every page again (1.1 million page faults per step,
  about a quarter of its time). One arena, no mmap and no trimming
  (`mallopt(M_ARENA_MAX, 1)`, `M_MMAP_MAX=0`, `M_TRIM_THRESHOLD=-1`) let the next step reuse
  the same pages; the cost is that freed memory stays with the process (its resident size stays
  at its peak) instead of going back to the system.

Two kinds of program compile with options of their own on CPU (`jax.jit(...,
compiler_options=...)`), where the rest keep XLA's:

- the training step (`training_compiler_options`), with XLA's memory-minimising scheduler
  (`xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED`): it orders the step so that it
  needs 2.9 GB of temporary buffers instead of 3.6, at the same speed. Not for programs that
  only run forward: it schedules the aggregation head's poolings after the whole backbone, so
  every block output lives to the end (772 MB of temporary buffers for EfficientNetV2-S's
  detector at batch 64, against 504 with XLA's scheduler). A scheduler the user names in
  `XLA_FLAGS` wins;
- programs that run once (the train state's initialisation, `run_once_compiler_options`), with
  XLA's fast-compile preset.

Since freed memory is kept, what compiling used is handed back before the training step first
runs (`release_free_memory`, called by `train.init_state` and `train.compiled_train_step`):
otherwise the step's buffers come on top of it, 0.8 GB more at the peak.

Compiling also leaves the heap full of holes: tens of thousands of free blocks between the
compiler's surviving objects. The matrix multiplications XLA's Eigen hands to oneDNN allocate a
64-128 KiB workspace each time (41,500 times per training step), and glibc's best-fit search
walks those holes every time: 11 us per allocation instead of 0.4, 0.32-0.46 s of a 3.3 s
training step, none of it when the same program is loaded from the compilation cache. After
every compilation of a second or more, `fill_heap_holes` occupies the free blocks of 32 KiB to
1 MiB once and for all (their pages handed back, so they cost address space, not memory): the
training step runs 1.12x as fast (bench/README.md, "Filling the heap's holes after compiling").

Rematerialisation (`model.remat`) shrinks a step's buffers further, at the cost of recomputing;
bench/bench_cpu_defaults.py measures it and each default side by side (docs/architecture.md,
"Speed and memory on CPU").

`AGG_JAX_XLA_FLAGS=none` (the flags and both kinds of options) or `AGG_JAX_MALLOC=system` in the
environment switches either off (`system` also leaves out agg_jax.large_blocks' allocator, which
the training and scoring commands preload; `no_large_blocks` leaves out that alone);
`AGG_JAX_MALLOC=no_fill` keeps the malloc settings without filling holes.
Both take effect only if agg_jax is imported before JAX creates its CPU backend (its first
computation or `jax.devices()`), as every agg_jax command does.
"""

import ctypes
import gc
import mmap
import os
import platform

XLA_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "reduce"}

# glibc's mallopt parameters (malloc.h) and madvise's advice to drop pages (sys/mman.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
MADV_DONTNEED = 4
PAGE = mmap.PAGESIZE
MALLOPT = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim

# Holes of at least this size are filled after a compilation: below the smallest workspace of
# oneDNN's matrix multiplications (64 KiB), large enough that a filler's first page (the one
# malloc writes) keeps at most an eighth of a hole resident.
SMALLEST_FILLED_HOLE = 32 << 10
# Holes of a mebibyte and more stay mostly open (fillers of a mebibyte and more are taken, to
# keep smaller ones from cutting them up, then freed): the few there are cost the search little,
# and without them the blocks a step allocates land above its gigabytes of temporary buffer,
# which then no longer merges back into the top of the heap for the next step to reuse (2.3 GB
# more at the peak).
LARGEST_FILLED_HOLE = 1 << 20
LARGEST_FILLER = 64 << 20
# JAX's event around each XLA compilation (or load from the compilation cache), and the
# compilations after which holes are filled.
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
FILL_AFTER_COMPILE_SECONDS = 1.0

XLA_SWITCH, MALLOC_SWITCH = "AGG_JAX_XLA_FLAGS", "AGG_JAX_MALLOC"


# For programs that run once, whose compile is most of their time: XLA's fast-compile preset.
# EfficientNetV2-S's train state (about 900 random initialisers) took 45.8-58.2 s to initialise
# against 49.4-66.5 s in four paired cold runs, running as fast, its values within a rounding of
# the default pipeline's (1 ulp in 28 of 907 arrays). Not for the training step: it compiled no
# faster there.
RUN_ONCE_COMPILER_OPTIONS = {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE"}


# For the training step: XLA's memory-minimising scheduler, 2.9 GB of temporary buffers for
# EfficientNetV2-S's step instead of 3.6 with XLA's own, at the same speed (bench/README.md,
# "The CPU defaults"). Forward programs keep XLA's scheduler, under which the aggregation head's
# poolings run as soon as each block output is made (bench/README.md, "Inference's scheduler").
SCHEDULER = "xla_cpu_scheduler_type"
TRAINING_COMPILER_OPTIONS = {SCHEDULER: "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def _xla_defaults_on(environ) -> bool:
  return environ.get(XLA_SWITCH, "").lower() != "none"


def _on_cpus(options: dict, devices, environ) -> dict:
  """`options` where every device is a CPU and the XLA defaults are on, else none."""
  if not _xla_defaults_on(environ) or not all(d.platform == "cpu" for d in devices):
    return {}
  return dict(options)


def run_once_compiler_options(devices, environ=os.environ) -> dict:
  """`RUN_ONCE_COMPILER_OPTIONS` where every device is a CPU and the XLA defaults are on, else
  none (`jax.jit(..., compiler_options=...)`)."""
  return _on_cpus(RUN_ONCE_COMPILER_OPTIONS, devices, environ)


def training_compiler_options(devices, environ=os.environ) -> dict:
  """`TRAINING_COMPILER_OPTIONS` where every device is a CPU, the XLA defaults are on and
  `XLA_FLAGS` names no scheduler (the user's choice), else none."""
  if SCHEDULER in _flag_values(environ.get("XLA_FLAGS", "")):
    return {}
  return _on_cpus(TRAINING_COMPILER_OPTIONS, devices, environ)


def _flag_values(xla_flags: str) -> dict[str, str]:
  """Flag name -> value (empty without one) of an `XLA_FLAGS` string."""
  pairs = (flag.lstrip("-").split("=", 1) for flag in xla_flags.split())
  return {pair[0]: pair[1] if len(pair) == 2 else "" for pair in pairs}


def merged_xla_flags(xla_flags: str, defaults: dict[str, str] = XLA_FLAGS) -> str:
  """`xla_flags` with each default flag that it does not set already appended."""
  given = _flag_values(xla_flags)
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
  """Returns the free pages of glibc's heap to the system (`malloc_trim`), and the free blocks
  of agg_jax.large_blocks' allocator where it is preloaded; False where the C library is not
  glibc. Collects Python's reference cycles first: tracing a model leaves
  hundreds of megabytes in them (0.55 GB after initialising EfficientNetV2-S's train state)."""
  gc.collect()
  libc = _glibc()
  if libc is None:
    return False
  from agg_jax import large_blocks  # noqa: PLC0415  (it imports this module)
  large_blocks.release_free()
  return bool(libc.malloc_trim(0))


class MallInfo2(ctypes.Structure):
  """glibc's `struct mallinfo2` (malloc.h): `arena` is the heap's size, `fordblks` what is free
  in it, `keepcost` the free top."""
  _fields_ = [(name, ctypes.c_size_t) for name in (
      "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
      "fordblks", "keepcost")]


def heap_info() -> MallInfo2 | None:
  """glibc's `mallinfo2()`; None where the C library is not glibc 2.33 or later."""
  libc = _glibc()
  if libc is None or not hasattr(libc, "mallinfo2"):
    return None
  libc.mallinfo2.restype = MallInfo2
  return libc.mallinfo2()


_filling_after_compiling = False


def fill_heap_holes() -> int:
  """Occupies, for good, the free blocks of `SMALLEST_FILLED_HOLE` up to `LARGEST_FILLED_HOLE`
  in glibc's heap, so that later allocations of those sizes come from the top of the heap instead
  of a best-fit search through them; returns the number of fillers kept.

  Fillers are taken largest first, halving from `LARGEST_FILLER`: glibc's best fit gives each
  the smallest hole that holds it, until a filler comes from the top of the heap (its address
  at or above where the top began). A filler's pages past its first go back to the system
  (`MADV_DONTNEED`), even those of a block freed by another thread meanwhile. Assumes one arena
  (`MALLOPT`); never fills more than was free outside the top. 0 where the C library is not
  glibc 2.33 or later (`mallinfo2`)."""
  libc = _glibc()
  if libc is None or heap_info() is None:
    return 0
  libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
  libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
  libc.malloc_trim(0)
  info = heap_info()
  top = libc.sbrk(0) - info.keepcost
  budget, size, kept = info.fordblks - info.keepcost, LARGEST_FILLER, 0
  large = []  # freed at the end; the others are never freed
  while size >= SMALLEST_FILLED_HOLE:
    while budget >= size:
      filler = libc.malloc(size)
      if not filler or filler >= top:
        libc.free(filler)
        break
      first_whole_page = -(-filler // PAGE) * PAGE
      libc.madvise(first_whole_page, (filler + size - first_whole_page) // PAGE * PAGE,
                   MADV_DONTNEED)
      if size >= LARGEST_FILLED_HOLE:
        large.append(filler)
      else:
        kept += 1
      budget -= size
    size //= 2
  for filler in large:
    libc.free(filler)
  libc.malloc_trim(0)  # the top, if a filler grew it
  return kept


def _fill_holes_after_compiling(event: str, seconds: float, **_) -> None:
  if event == COMPILE_EVENT and seconds >= FILL_AFTER_COMPILE_SECONDS:
    fill_heap_holes()


def _listen_to_compiles(jax_module) -> None:
  jax_module.monitoring.register_event_duration_secs_listener(_fill_holes_after_compiling)


def fill_holes_after_compiling() -> None:
  """Makes every compilation of `FILL_AFTER_COMPILE_SECONDS` or more end with `fill_heap_holes`
  (once per process, however often it is called). The listener is registered with JAX once JAX
  is imported (at once if it is already), so that importing agg_jax does not import JAX: the
  commands that start themselves again (agg_jax/large_blocks.py) do so in a tenth of a second."""
  global _filling_after_compiling
  if not _filling_after_compiling:
    import wrapt  # noqa: PLC0415  (only where holes are filled)
    wrapt.register_post_import_hook(_listen_to_compiles, "jax")
    _filling_after_compiling = True


def apply(environ=os.environ) -> None:
  """Sets both defaults in this process, each unless its switch turns it off."""
  if _xla_defaults_on(environ):
    environ["XLA_FLAGS"] = merged_xla_flags(environ.get("XLA_FLAGS", ""))
  malloc = environ.get(MALLOC_SWITCH, "").lower()
  if malloc != "system" and tune_malloc() and malloc != "no_fill":
    fill_holes_after_compiling()
