"""agg_jax.cpu_defaults: XLA:CPU flags and malloc settings applied when agg_jax is imported."""

import os
import platform
import subprocess
import sys

import pytest

from agg_jax import cpu_defaults

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_defaults_are_appended_and_a_users_flag_wins():
  flag = "xla_cpu_experimental_ynn_fusion_type"
  assert cpu_defaults.merged_xla_flags("") == f"--{flag}=reduce"
  assert cpu_defaults.merged_xla_flags("--xla_foo=1") == f"--xla_foo=1 --{flag}=reduce"
  assert cpu_defaults.merged_xla_flags(f"--{flag}=default") == f"--{flag}=default"
  assert cpu_defaults.merged_xla_flags(f"  {flag}=none ") == f"{flag}=none"


@pytest.mark.parametrize("environ, flags", [
    ({}, "--xla_cpu_experimental_ynn_fusion_type=reduce"),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
     "--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type=reduce"),
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
  assert _jax_in_a_fresh_process() == "--xla_cpu_experimental_ynn_fusion_type=reduce"
  assert _jax_in_a_fresh_process(AGG_JAX_XLA_FLAGS="none") == ""
