"""agg_jax.large_blocks: the preloaded allocator for XLA's large aligned blocks, driven through
the C library's own functions in processes started with it (a preload acts from a process's
start), and the commands that start themselves again with it."""

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from agg_jax import cpu_defaults, large_blocks
from tests.helpers import REPO

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or
    large_blocks.library() is None, reason="the allocator needs glibc and a C compiler")

MIB = 1 << 20
# The C library's functions as XLA and torch call them, and the allocator's report.
PRELUDE = textwrap.dedent("""\
    import ctypes, json, os, sys, threading
    libc = ctypes.CDLL(None)
    libc.malloc.restype = libc.realloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
    libc.malloc_usable_size.restype = ctypes.c_size_t
    libc.aligned_alloc.restype = ctypes.c_void_p
    libc.aligned_alloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    MIB = 1 << 20

    def memalign(size, alignment=64):
      block = ctypes.c_void_p()
      assert libc.posix_memalign(ctypes.byref(block), alignment, size) == 0
      return block.value

    def peak_mib():  # this process's own peak (ru_maxrss would include its parent's at the fork)
      status = open("/proc/self/status").read().split("VmHWM:")[1]
      return int(status.split()[0]) // 1024

    def stats():
      out = (ctypes.c_size_t * 4)()
      libc.agg_jax_large_blocks_stats(out)
      return {"mapped": out[0] // MIB, "used": out[1] // MIB, "segments": out[2],
              "mappings": out[3]}
    """)


def run_preloaded(code: str, preload: bool = True, threshold: int = MIB) -> dict:
  """Runs PRELUDE + `code` (which prints one JSON line) in a new Python, the allocator preloaded
  with blocks of `threshold` bytes and more (or not preloaded); its JSON."""
  env = {**os.environ, "AGG_JAX_LARGE_BLOCK_BYTES": str(threshold)}
  if preload:
    env["LD_PRELOAD"] = str(large_blocks.library())
  done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_split_and_merged_in_place():
  out = run_preloaded("""
      a = memalign(16 * MIB)
      libc.free(a)
      b, c = memalign(4 * MIB), memalign(8 * MIB)  # best fit: both inside a's range
      split = stats()
      libc.free(b); libc.free(c)
      again = memalign(16 * MIB)  # the merged range holds it again
      print(json.dumps({"b": b - a, "c": c - a, "again": again - a, "split": split,
                        "merged": stats()}))
      """)
  assert (out["b"], out["c"], out["again"]) == (0, 4 * MIB, 0)
  assert out["split"] == {"mapped": 16, "used": 12, "segments": 3, "mappings": 1}
  assert out["merged"] == {"mapped": 16, "used": 16, "segments": 1, "mappings": 1}


def test_a_request_no_free_part_holds_hands_the_free_parts_back_first():
  out = run_preloaded("""
      kept, freed = memalign(8 * MIB), memalign(16 * MIB)
      libc.free(freed)
      memalign(32 * MIB)
      print(json.dumps(stats()))
      """)
  assert out == {"mapped": 40, "used": 40, "segments": 2, "mappings": 3}


def test_releasing_free_memory_unmaps_the_free_parts():
  out = run_preloaded("""
      from agg_jax import cpu_defaults
      kept, freed = memalign(8 * MIB), memalign(16 * MIB)
      libc.free(freed)
      before = stats()
      cpu_defaults.release_free_memory()
      print(json.dumps({"before": before, "after": stats()}))
      """)
  assert out["before"]["mapped"] == 24
  assert out["after"] == {"mapped": 8, "used": 8, "segments": 1, "mappings": 2}


def test_small_and_unaligned_blocks_stay_with_glibc_and_ours_answer_its_functions():
  out = run_preloaded("""
      small, page_aligned = memalign(1000), memalign(4096, 4096)
      after_small = stats()
      large = libc.aligned_alloc(64, 3 * MIB + 5)
      usable = libc.malloc_usable_size(large)
      ctypes.memset(large, 7, 3 * MIB + 5)
      moved = libc.realloc(large, 100)  # to glibc, the first bytes kept
      kept = list(ctypes.string_at(moved, 100))
      for block in (small, page_aligned, moved):
        libc.free(block)
      print(json.dumps({"after_small": after_small, "usable": usable, "kept": kept,
                        "end": stats()}))
      """)
  assert out["after_small"] == {"mapped": 0, "used": 0, "segments": 0, "mappings": 0}
  assert out["usable"] == 3 * MIB + 4096  # rounded up to whole pages
  assert out["kept"] == [7] * 100
  assert out["end"] == {"mapped": 3, "used": 0, "segments": 1, "mappings": 1}  # kept mapped


def test_threads_and_a_forked_child_allocate_and_free_concurrently():
  out = run_preloaded("""
      import random
      parents = [memalign(2 * MIB) for _ in range(4)]
      pid = os.fork()
      if pid == 0:  # the child frees its copies of the parent's blocks and takes new ones
        for block in parents:
          libc.free(block)
        os._exit(0 if stats()["used"] == 0 and memalign(3 * MIB) else 1)
      _, status = os.waitpid(pid, 0)

      def churn(seed):
        rng = random.Random(seed)
        held = []
        for _ in range(300):
          if held and rng.random() < 0.5:
            libc.free(held.pop(rng.randrange(len(held))))
          else:
            block = memalign(rng.randrange(1, 6) * MIB + rng.randrange(4096))
            ctypes.memset(block, seed, MIB)
            held.append(block)
        for block in held:
          libc.free(block)
      threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(8)]
      for thread in threads: thread.start()
      for thread in threads: thread.join()
      for block in parents:
        libc.free(block)
      print(json.dumps({"child": status, "end": stats()}))
      """)
  assert out["child"] == 0
  assert out["end"]["used"] == 0


# The pattern that grows glibc 2.36's heap (large_blocks.py), under agg_jax's malloc settings
# (cpu_defaults.MALLOPT): an aligned block the size of a step's buffer, small allocations while
# it is held (a tenth of them kept), then freed; again.
GROWTH = """
    for param, value in MALLOPT:
      libc.mallopt(param, value)
    kept = []
    for round in range(8):
      block = memalign(64 * MIB)
      ctypes.memset(block, 1, 64 * MIB)
      for i in range(200):
        small = libc.malloc(100 + i)
        (kept.append if i % 10 == 0 else libc.free)(small)
      libc.free(block)
    print(json.dumps({"peak": peak_mib()}))
    """.replace("MALLOPT", repr(cpu_defaults.MALLOPT))


def test_a_repeated_large_block_keeps_the_peak_flat():
  baseline = run_preloaded('print(json.dumps({"peak": peak_mib()}))')["peak"]
  grown = run_preloaded(GROWTH)["peak"] - baseline
  assert grown < 64 * 1.25, grown  # one block's worth, where glibc 2.36 alone grows 8x (8 rounds)


def _active_after_starting(environ: dict) -> tuple[dict, str]:
  code = ("import json; from agg_jax import large_blocks; large_blocks.start_preloaded(); "
          "print(json.dumps({'active': large_blocks.active()}))")
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "AGG_JAX_MALLOC")}
  done = subprocess.run([sys.executable, "-c", code], env={**env, **environ}, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_command_starts_itself_again_with_the_allocator_unless_switched_off():
  started, _ = _active_after_starting({})
  assert started["active"]
  for switch in large_blocks.SWITCH_OFF:
    assert not _active_after_starting({"AGG_JAX_MALLOC": switch})[0]["active"]


def test_without_a_compiler_a_warning_says_so_and_the_command_goes_on(tmp_path):
  out, stderr = _active_after_starting({"CC": "no-such-compiler",
                                        "XDG_CACHE_HOME": str(tmp_path)})
  assert not out["active"]
  assert "no C compiler (no-such-compiler)" in stderr


def test_a_start_that_did_not_load_it_warns_instead_of_starting_again(tmp_path):
  out, stderr = _active_after_starting({large_blocks.STARTED_AGAIN: "1"})
  assert not out["active"]
  assert "the allocator is not loaded" in stderr
