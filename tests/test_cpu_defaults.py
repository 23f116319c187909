"""agg_jax.cpu_defaults: XLA:CPU flags and malloc settings applied when agg_jax is imported."""

import json
import os
import platform
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agg_jax import cpu_defaults, evaluate, models, sharding, train
from configs import demo
from tests.helpers import REPO, temp_bytes_and_under_the_minimising_scheduler

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


YNN = "--xla_cpu_experimental_ynn_fusion_type=reduce"
DEFAULTS = YNN


def test_defaults_are_appended_and_a_users_flag_wins():
  flag = "xla_cpu_experimental_ynn_fusion_type"
  assert cpu_defaults.merged_xla_flags("") == DEFAULTS
  assert cpu_defaults.merged_xla_flags("--xla_foo=1") == f"--xla_foo=1 {DEFAULTS}"
  assert cpu_defaults.merged_xla_flags(f"--{flag}=default") == f"--{flag}=default"
  assert cpu_defaults.merged_xla_flags(f"  {flag}=none ") == f"{flag}=none"
  own = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT"
  assert cpu_defaults.merged_xla_flags(own) == f"{own} {YNN}"


@pytest.mark.parametrize("environ, flags", [
    ({}, DEFAULTS),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
     f"--xla_force_host_platform_device_count=2 {DEFAULTS}"),
    ({"AGG_JAX_XLA_FLAGS": "none", "XLA_FLAGS": "--a=1"}, "--a=1"),
    ({"AGG_JAX_XLA_FLAGS": "None"}, None),
])
def test_apply_sets_the_flags_unless_switched_off(environ, flags):
  environ = dict(environ, AGG_JAX_MALLOC="system")
  cpu_defaults.apply(environ)
  assert environ.get("XLA_FLAGS") == flags


@pytest.mark.skipif(not GLIBC, reason="malloc tuning needs glibc")
def test_malloc_settings_and_trim_reach_glibc():
  assert cpu_defaults.tune_malloc()
  assert isinstance(cpu_defaults.release_free_memory(), bool)


def _jax_in_a_fresh_process(**environ) -> str:
  """XLA_FLAGS as agg_jax leaves them in a new process, after JAX has computed on the CPU with
  them (XLA aborts on a flag it does not know)."""
  code = ("import os, agg_jax, jax, jax.numpy as jnp; "
          "assert float(jax.jit(lambda x: jnp.sum(x * x))(jnp.arange(4.0))) == 14.0; "
          "print(os.environ.get('XLA_FLAGS', ''))")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "AGG_JAX_XLA_FLAGS")}
  done = subprocess.run([sys.executable, "-c", code], env={**env, **environ}, check=True,
                        capture_output=True, text=True)
  return done.stdout.strip()


def test_importing_agg_jax_imports_no_jax_and_listens_to_compiles_once_jax_is_imported():
  code = ("import sys, agg_jax; print('jax' in sys.modules); "
          "from agg_jax import cpu_defaults; filled = []; "
          "cpu_defaults.fill_heap_holes = lambda: filled.append(1); "
          "cpu_defaults.FILL_AFTER_COMPILE_SECONDS = 0.0; "
          "import jax; jax.jit(lambda x: x * 3.0)(1.0); print(len(filled))")
  env = {k: v for k, v in os.environ.items() if k != "AGG_JAX_MALLOC"}
  done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        cwd=REPO, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split() == ["False", "1"]  # no JAX at first; then its compile reached us


def test_importing_agg_jax_configures_a_cpu_backend_that_accepts_the_flags():
  assert _jax_in_a_fresh_process() == DEFAULTS
  assert _jax_in_a_fresh_process(AGG_JAX_XLA_FLAGS="none") == ""


def test_the_train_step_compiles_with_the_minimising_scheduler_into_smaller_buffers():
  """The train step's own compiler options (cpu_defaults.training_compiler_options) make its
  buffers smaller than under XLA's scheduler, which this process's XLA_FLAGS leave in place
  (test_importing_agg_jax_...)."""
  config = demo.get_config()
  config.model.name = "efficientnetv2_tiny"
  mesh = sharding.make_mesh(config.mesh)
  state, shardings = train.init_state(models.from_config(config.model),
                                      train.create_optimizer(config), config, mesh, (32, 32, 3))
  batch = sharding.global_batch({"images": np.zeros((8, 32, 32, 3), np.uint8),
                                 "labels": np.zeros(8, np.float32)}, mesh)
  lowered = train.make_train_step(mesh, shardings).lower(state, batch)

  def temp_bytes(options=None) -> int:
    return lowered.compile(options).memory_analysis().temp_size_in_bytes

  ours, xlas = temp_bytes(), temp_bytes({cpu_defaults.SCHEDULER: "CPU_SCHEDULER_TYPE_DEFAULT"})
  assert ours < 0.85 * xlas, (ours, xlas)


def test_run_once_compiler_options_are_for_cpus_and_switch_off_with_the_flags():
  cpus = jax.devices("cpu")
  assert cpu_defaults.run_once_compiler_options(cpus, {}) == cpu_defaults.RUN_ONCE_COMPILER_OPTIONS
  assert cpu_defaults.run_once_compiler_options(cpus, {"AGG_JAX_XLA_FLAGS": "none"}) == {}
  assert cpu_defaults.run_once_compiler_options([types.SimpleNamespace(platform="gpu")], {}) == {}


def test_training_compiler_options_are_for_cpus_and_yield_to_the_users_scheduler():
  cpus, options = jax.devices("cpu"), cpu_defaults.TRAINING_COMPILER_OPTIONS
  assert cpu_defaults.training_compiler_options(cpus, {}) == options
  assert cpu_defaults.training_compiler_options(cpus, {"XLA_FLAGS": DEFAULTS}) == options
  assert cpu_defaults.training_compiler_options(cpus, {"AGG_JAX_XLA_FLAGS": "none"}) == {}
  assert cpu_defaults.training_compiler_options([types.SimpleNamespace(platform="gpu")], {}) == {}
  users = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED"
  assert cpu_defaults.training_compiler_options(cpus, {"XLA_FLAGS": f"{users} {YNN}"}) == {}


def test_predictions_compile_with_xlas_scheduler_into_smaller_buffers():
  """Under the training step's memory-minimising scheduler the head's poolings would come after
  the whole backbone, which holds every block output to the end; predictions keep XLA's."""
  config = demo.get_config()
  config.model.name = "efficientnetv2_tiny"
  model, mesh = models.from_config(config.model), sharding.make_mesh(config.mesh)
  images = jnp.zeros((8, 32, 32, 3), jnp.uint8)
  variables = model.init(jax.random.key(0), images[:1], train=False)

  lowered = evaluate.make_predict_fn(model, mesh).lower(variables, images)
  ours, minimising = temp_bytes_and_under_the_minimising_scheduler(lowered)
  assert ours < 0.85 * minimising, (ours, minimising)


def test_fast_compiled_initialisation_is_xlas_within_a_rounding():
  model = models.create("efficientnetv2_tiny")
  init = lambda options: jax.jit(
      lambda rng: model.init(rng, jnp.zeros((1, 32, 32, 3), jnp.uint8), train=False),
      compiler_options=options)(jax.random.key(0))
  fast, default = init(cpu_defaults.RUN_ONCE_COMPILER_OPTIONS), init({})
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(default)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_the_train_state_is_initialised_with_the_run_once_options(monkeypatch):
  """The options reach XLA: an invalid one makes the initialisation fail."""
  monkeypatch.setattr(cpu_defaults, "RUN_ONCE_COMPILER_OPTIONS", {"xla_cpu_opt_preset": "NOPE"})
  config = demo.get_config()
  config.model.name = "efficientnetv2_tiny"
  mesh = sharding.make_mesh(config.mesh)
  with pytest.raises(Exception, match="xla_cpu_opt_preset"):
    train.init_state(models.from_config(config.model), train.create_optimizer(config), config,
                     mesh, (32, 32, 3))


HOLES = """
import ctypes, json, sys
from agg_jax import cpu_defaults
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
resident_mb = lambda: int(open("/proc/self/statm").read().split()[1]) * cpu_defaults.PAGE / 2**20
action, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

libc.malloc_usable_size.restype = ctypes.c_size_t
libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
after = lambda block: block + libc.malloc_usable_size(block) + 8  # the next chunk's pointer

blocks, separators = [], []
for _ in range(count):  # blocks kept apart by blocks that stay
  blocks.append(libc.malloc(size))
  separators.append(libc.malloc(2048))
# A hole: a block between two separators. Malloc may have served a block or a separator from
# memory freed before (not next to the others); such a block, once freed, merges with its free
# neighbours into a larger hole, which may be a mebibyte and left open by design.
holes = {block for block, below, above in zip(blocks[1:], separators, separators[1:])
         if block == after(below) and above == after(block)}
for block in blocks:
  ctypes.memset(block, 1, size)
for block in blocks:
  libc.free(block)
resident = resident_mb()
fillers = cpu_defaults.fill_heap_holes() if action == "fill" else 0
handed_back = resident - resident_mb()
later = [libc.malloc(size) for _ in range(100)]
print(json.dumps({"holes": len(holes), "fillers": fillers, "mb_handed_back": handed_back,
                  "holes_reused": len(set(later) & holes),
                  "blocks_reused": len(set(later) & set(blocks))}))
"""


def _holes_in_a_fresh_process(action: str, count: int, size: int) -> dict:
  """`count` free blocks of `size` bytes in a fresh process's heap, filled or left."""
  done = subprocess.run([sys.executable, "-c", HOLES, action, str(count), str(size)], cwd=REPO,
                        check=True, capture_output=True, text=True)
  return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="filling holes is for glibc's malloc")
def test_filled_holes_are_not_reused_and_their_memory_goes_back():
  hole = 96 << 10  # a matrix multiplication's workspace
  left = _holes_in_a_fresh_process("leave", 400, hole)
  assert left["holes"] >= 300 and left["holes_reused"] >= 90, left  # glibc's best fit
  filled = _holes_in_a_fresh_process("fill", 400, hole)
  assert filled["holes"] >= 300 and filled["fillers"] >= filled["holes"], filled
  assert filled["holes_reused"] == 0, filled
  assert filled["mb_handed_back"] > 0.8 * 400 * hole / 2**20, filled  # fillers cost no memory


@pytest.mark.skipif(not GLIBC, reason="filling holes is for glibc's malloc")
def test_holes_of_a_mebibyte_and_more_stay_open():
  filled = _holes_in_a_fresh_process("fill", 20, 4 << 20)
  assert filled["blocks_reused"] >= 15 and filled["fillers"] < 20, filled  # few: its own holes
  assert filled["mb_handed_back"] > 0.8 * 20 * 4, filled  # trimmed, still free


def test_holes_are_filled_after_a_compilation_as_long_as_the_threshold(monkeypatch):
  filled = []
  monkeypatch.setattr(cpu_defaults, "fill_heap_holes", lambda: filled.append(1))
  cpu_defaults.fill_holes_after_compiling()  # as importing agg_jax did (once, however called)
  monkeypatch.setattr(cpu_defaults, "FILL_AFTER_COMPILE_SECONDS", 1e9)
  jax.jit(lambda x: x * 3.0)(1.0)
  assert not filled  # a quicker compilation than the threshold
  monkeypatch.setattr(cpu_defaults, "FILL_AFTER_COMPILE_SECONDS", 0.0)
  jax.jit(lambda x: x * 5.0)(1.0)
  assert len(filled) == 1  # JAX's compile event reached the listener


@pytest.mark.skipif(not GLIBC, reason="malloc tuning needs glibc")
def test_no_fill_keeps_the_malloc_settings_without_the_listener(monkeypatch):
  listened = []
  monkeypatch.setattr(cpu_defaults, "fill_holes_after_compiling", lambda: listened.append(1))
  cpu_defaults.apply({"AGG_JAX_XLA_FLAGS": "none", "AGG_JAX_MALLOC": "no_fill"})
  cpu_defaults.apply({"AGG_JAX_XLA_FLAGS": "none", "AGG_JAX_MALLOC": "system"})
  assert not listened
  cpu_defaults.apply({"AGG_JAX_XLA_FLAGS": "none"})
  assert listened == [1]
