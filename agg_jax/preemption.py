"""Preemption: a notice to stop becomes a checkpoint at the next step boundary and a clean exit.

Cluster schedulers stop a job with SIGTERM first (SLURM's `scancel` and time limit, Kubernetes,
GCE and TPU maintenance) and SIGKILL a grace period later. A single process handles SIGTERM and
SIGINT (Ctrl-C; a second Ctrl-C stops at once) itself. In a multi-process job JAX's preemption
service owns SIGTERM (on TPU it also hears the maintenance notice): a notice that reaches any
process is shared, and `multihost_utils.reached_preemption_sync_point` is true for every process
at the same step, so all save the same step together.

The train loop asks `Preemption.reached(step)` after each step; when true it saves, and raises
`Preempted`, which the entry point reports in one line with status `cli.EXIT_PREEMPTED`; the
same command resumes from that checkpoint.
"""

import signal
import types

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """Training stopped for a preemption notice, after saving the checkpoint of `step`."""

  def __init__(self, step: int, workdir: str, cause: str):
    super().__init__(f"{cause}: stopped at step {step}, checkpoint saved in {workdir}; the same "
                     "command resumes from it")
    self.step = step


class Preemption:
  """Watches for a preemption notice during training; a context manager (restores handlers)."""

  def __init__(self):
    self.shared = (jax.distributed.is_initialized() and jax.process_count() > 1
                   and jax.config.jax_enable_preemption_service)
    self.cause = ""
    self._previous = {}

  def __enter__(self) -> "Preemption":
    if not self.shared:  # else JAX's preemption service handles SIGTERM and tells every process
      self._previous = {number: signal.signal(number, self._notice) for number in SIGNALS
                        if signal.getsignal(number) != signal.SIG_IGN}  # ignored stays ignored
    return self

  def __exit__(self, *exc) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)
    self._previous.clear()

  def _notice(self, number: int, _: types.FrameType | None) -> None:
    if self.cause and number == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C does not wait for the step to finish
    self.cause = f"preempted ({signal.Signals(number).name})"

  def reached(self, step: int) -> bool:
    """Whether training must save and stop after `step` (every process gets the same answer in
    a multi-process job, as long as each asks at every step)."""
    if self.shared:
      if multihost_utils.reached_preemption_sync_point(step):
        self.cause = "preempted (a preemption notice reached the job)"
        return True
      return False
    return bool(self.cause)
