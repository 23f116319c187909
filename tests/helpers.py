"""What the tests share: paths, the faces-mini data, and running agg_jax commands as a user does.

In CI (`CI=true`, set by `.ci/run`) nothing may be skipped for want of a package, a backend or
the shared data: `tests/conftest.py` turns every skip into a failure there, so a missing
dependency shows up red instead of silently shrinking the suite.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FACES_MINI = SHARED / "data" / "faces-mini"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

requires_faces_mini = pytest.mark.skipif(
    not FACES_MINI.is_dir(),
    reason=f"faces-mini data not found at {FACES_MINI} (it lives in the project's shared "
    "folder, beside the clone)")


# A 6-step run of the tiny model on the demo data (tests/conftest.py `tiny_run` trains it once).
TINY_RUN = ["--config=configs/demo.py", "--config.model.name=efficientnetv2_tiny",
            "--config.model.hidden=(16,)", "--config.data.image_size=32",
            "--config.data.train_per_class=16", "--config.data.val_per_class=8",
            "--config.data.test_per_class=8", "--config.train.batch_size=8",
            "--config.train.eval_batch_size=16", "--config.train.warmup_steps=0",
            "--config.train.log_every=2", "--config.train.eval_every=2",
            "--config.train.checkpoint_every=2", "--config.train.num_steps=6"]


def faces_mini(folder: str, n: int | None = None, start: int = 0) -> list[str]:
  """Sorted paths of the JPEGs in a faces-mini folder (e.g. "real/yonsei"), n from `start`."""
  paths = sorted(str(p) for p in (FACES_MINI / folder).glob("*.jpg"))
  return paths[start:] if n is None else paths[start:start + n]


def run_module(module: str, *args, env: dict | None = None, timeout: float = 900,
               cwd: str | os.PathLike = REPO) -> subprocess.CompletedProcess:
  """`python -m <module> <args>` in a subprocess, as a user runs it; captures text output."""
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd,
                        capture_output=True, text=True, timeout=timeout,
                        env=None if env is None else {**os.environ, **env})


def one_line_error(out: subprocess.CompletedProcess, prog: str) -> str:
  """The single `<prog>: error: ...` line of a failed command (asserts there is no traceback)."""
  assert out.returncode != 0, out.stdout[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
  assert len(lines) == 1, out.stderr[-3000:]
  return lines[0]


def hooked_main(hook: str) -> str:
  """`python -c` source of agg_jax.main with `hook` (Python source) run first."""
  return textwrap.dedent(hook) + textwrap.dedent("""
      from agg_jax import cli, main
      main.config_imports_from_anywhere(sys.argv)
      cli.run(main.main, main.PROG)
  """)


# A real SIGTERM, delivered to the process once its third train step has returned.
SIGTERM_AFTER_STEP_3 = hooked_main("""
    import os, signal, sys
    from agg_jax import train

    compiled_train_step = train.compiled_train_step

    def compile_signalling_step(*args):
      step_fn, calls = compiled_train_step(*args), []

      def step(state, batch):
        out = step_fn(state, batch)
        calls.append(1)
        if len(calls) == 3:
          os.kill(os.getpid(), signal.SIGTERM)
        return out

      return step

    train.compiled_train_step = compile_signalling_step
""")


def temp_bytes_and_under_the_minimising_scheduler(lowered) -> tuple[int, int]:
  """The temporary bytes of a lowered forward program compiled as it is, then compiled with the
  training step's options (cpu_defaults.TRAINING_COMPILER_OPTIONS, the memory-minimising
  scheduler)."""
  from agg_jax import cpu_defaults  # noqa: PLC0415  (this module loads no agg_jax module)
  temp_bytes = lambda options: lowered.compile(options).memory_analysis().temp_size_in_bytes
  return temp_bytes(None), temp_bytes(cpu_defaults.TRAINING_COMPILER_OPTIONS)
