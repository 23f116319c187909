"""agg_jax.cpu_defaults: XLA:CPU flags and malloc settings applied when agg_jax is imported."""

import os
import platform
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agg_jax import cpu_defaults, models, sharding, train
from configs import demo
from tests.helpers import REPO

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


YNN = "--xla_cpu_experimental_ynn_fusion_type=reduce"
SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
DEFAULTS = f"{YNN} {SCHEDULER}"


def test_defaults_are_appended_and_a_users_flag_wins():
  flag = "xla_cpu_experimental_ynn_fusion_type"
  assert cpu_defaults.merged_xla_flags("") == DEFAULTS
  assert cpu_defaults.merged_xla_flags("--xla_foo=1") == f"--xla_foo=1 {DEFAULTS}"
  assert cpu_defaults.merged_xla_flags(f"--{flag}=default") == f"--{flag}=default {SCHEDULER}"
  assert cpu_defaults.merged_xla_flags(f"  {flag}=none ") == f"{flag}=none {SCHEDULER}"
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


def test_importing_agg_jax_configures_a_cpu_backend_that_accepts_the_flags():
  assert _jax_in_a_fresh_process() == DEFAULTS
  assert _jax_in_a_fresh_process(AGG_JAX_XLA_FLAGS="none") == ""


TRAIN_STEP_TEMP_BYTES = """
import agg_jax, numpy as np
from agg_jax import models, sharding, train
from configs import demo
config = demo.get_config()
config.model.name = "efficientnetv2_tiny"
mesh = sharding.make_mesh(config.mesh)
state, shardings = train.init_state(models.from_config(config.model),
                                    train.create_optimizer(config), config, mesh, (32, 32, 3))
batch = sharding.global_batch({"images": np.zeros((8, 32, 32, 3), np.uint8),
                               "labels": np.zeros(8, np.float32)}, mesh)
compiled = train.make_train_step(mesh, shardings).lower(state, batch).compile()
print(compiled.memory_analysis().temp_size_in_bytes)
"""


def test_the_default_scheduler_shrinks_the_train_steps_temporary_buffers():
  def temp_bytes(xla_flags: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "AGG_JAX_XLA_FLAGS")}
    done = subprocess.run([sys.executable, "-c", TRAIN_STEP_TEMP_BYTES], cwd=REPO, check=True,
                          env={**env, "XLA_FLAGS": xla_flags}, capture_output=True, text=True)
    return int(done.stdout.split()[-1])

  ours = temp_bytes("")
  xlas = temp_bytes("--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT")
  assert ours < 0.85 * xlas, (ours, xlas)


def test_run_once_compiler_options_are_for_cpus_and_switch_off_with_the_flags():
  cpus = jax.devices("cpu")
  assert cpu_defaults.run_once_compiler_options(cpus, {}) == cpu_defaults.RUN_ONCE_COMPILER_OPTIONS
  assert cpu_defaults.run_once_compiler_options(cpus, {"AGG_JAX_XLA_FLAGS": "none"}) == {}
  assert cpu_defaults.run_once_compiler_options([types.SimpleNamespace(platform="gpu")], {}) == {}


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
