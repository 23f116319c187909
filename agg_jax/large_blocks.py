"""An allocator for XLA:CPU's large aligned blocks, preloaded into the training and scoring
commands (`agg_jax.main`, `agg_jax.predict`), which start themselves again with it.

XLA:CPU allocates each program's temporary buffer (gigabytes for a training step, hundreds of
megabytes for a validation batch) with `posix_memalign(64, size)`. glibc 2.36's memalign gives
the few bytes it trims off a block to its small-block caches, where other allocations take them:
a freed block is then a few bytes short of the next request of its size, so each new size grows
the heap, and (under cpu_defaults' malloc settings) what it grew by stays resident. Training with
validations between steps peaked at 1.10-1.59x the steps' own peak (bench/README.md, "Memory of
a run with validations"); glibc's fix (bug 30723) is in 2.39.

`large_blocks.c` serves `posix_memalign`, `aligned_alloc` and `memalign` of 64 MiB and more from
mappings that stay mapped, reused by best fit and merged with free neighbours, so a validation
batch takes part of the step's free block and gives it back; a request no free part holds first
hands the free parts back to the system. Everything else stays with glibc. It is built with the
system's C compiler (`cc`, or `$CC`) into `~/.cache/agg_jax/large_blocks` on first use; without
a compiler, or where the C library is not glibc, a warning says so and glibc serves every block.
`AGG_JAX_MALLOC=system` (glibc's malloc as it comes) or `no_large_blocks` leaves it out.

A preload must be in place before the process starts, so `start_preloaded` starts the command
again (`os.execve`, the same process id, arguments and environment plus `LD_PRELOAD`) before its
other imports; child processes inherit it. That costs a second interpreter start, 0.08 s (a
command's usage error: 1.22 s against 1.14 without it), since importing agg_jax imports no JAX.
"""

import ctypes
import logging
import os
import pathlib
import platform
import sys

from agg_jax import cpu_defaults, native_build

SOURCE = pathlib.Path(__file__).with_suffix(".c")
COMPILE_FLAGS = ["-O2", "-shared", "-fPIC", "-pthread", "-Wall"]
SWITCH_OFF = ("system", "no_large_blocks")  # the values of AGG_JAX_MALLOC that leave it out
STARTED_AGAIN = "AGG_JAX_LARGE_BLOCKS_STARTED"  # set in the environment of the new start


class Stats(ctypes.Structure):
  """What the preloaded library reports (`agg_jax_large_blocks_stats`)."""
  _fields_ = [("mapped", ctypes.c_size_t), ("used", ctypes.c_size_t),
              ("segments", ctypes.c_size_t), ("mappings", ctypes.c_size_t)]


def wanted(environ=os.environ) -> bool:
  """Whether this process should run with the allocator: Linux with glibc, not switched off."""
  return (environ.get(cpu_defaults.MALLOC_SWITCH, "").lower() not in SWITCH_OFF
          and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def library() -> pathlib.Path | None:
  """The built library (built now if it is not cached); None, after a warning, where it
  cannot be built."""
  return native_build.built_or_warn(
      "agg_jax.large_blocks", SOURCE, COMPILE_FLAGS, "CC",
      without="glibc serves XLA's large blocks (a run's memory can grow at validations)")


def _preloaded():
  """The preloaded library's functions, through the process's global symbols; None without it."""
  process = ctypes.CDLL(None)
  if not hasattr(process, "agg_jax_large_blocks_stats"):
    return None
  return process


def active() -> bool:
  """Whether this process runs with the allocator."""
  return _preloaded() is not None


def stats() -> Stats | None:
  """Bytes mapped and in use, segments, and mappings made so far by the allocator; None where it
  is not preloaded."""
  process = _preloaded()
  if process is None:
    return None
  out = Stats()
  process.agg_jax_large_blocks_stats(ctypes.byref(out))
  return out


def release_free() -> bool:
  """Hands the allocator's free parts back to the system; False where it is not preloaded."""
  process = _preloaded()
  if process is not None:
    process.agg_jax_large_blocks_release()
  return process is not None


def preloaded_environ(environ=os.environ) -> dict | None:
  """`environ` with the library first in `LD_PRELOAD`; None where it is not wanted or cannot
  be built."""
  if not wanted(environ):
    return None
  path = library()
  if path is None:
    return None
  preload = " ".join(p for p in [str(path), environ.get("LD_PRELOAD", "")] if p)
  return {**environ, "LD_PRELOAD": preload, STARTED_AGAIN: "1"}


def start_preloaded() -> None:
  """Starts this command again with the allocator preloaded (never returns then); returns where
  it is running already, is not wanted, cannot be built, or a start with it did not load it (a
  warning says so). Call it first thing in a command's `__main__` block."""
  if active() or not wanted():
    return
  if os.environ.get(STARTED_AGAIN):
    logging.warning("agg_jax.large_blocks: started again with LD_PRELOAD=%s, but the allocator "
                    "is not loaded; glibc serves XLA's large blocks",
                    os.environ.get("LD_PRELOAD"))
    return
  environ = preloaded_environ()
  if environ is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
