"""Training and validation metrics of a run: ``metrics.jsonl`` and TensorBoard event files.

``WORKDIR/metrics.jsonl`` holds one JSON object per logging step (``step``, ``time`` and the
values); ``WORKDIR/tensorboard/`` holds the same values as scalars (``train/<name>``, and
``validation/<name>`` for values logged as ``val_<name>``), written by tensorboardX, so no
TensorFlow is needed (``tensorboard --logdir=WORKDIR/tensorboard`` shows them). Only process 0
writes.

A run resumed from step S replays the steps after S: lines logged after S by the interrupted run
are dropped from ``metrics.jsonl`` and TensorBoard is told to purge its events after S, so both
hold each step once.
"""

import json
import sys
import time

from agg_jax import fileio


def _summary_writer_without_torch():
  """tensorboardX's SummaryWriter, imported without PyTorch. Where torch is installed (the
  weight importers' extra), tensorboardX imports it only to accept torch tensors, which costs a
  training process 0.18 GB of resident memory and over a second; a run logs Python floats."""
  block = "torch" not in sys.modules
  if block:
    sys.modules["torch"] = None  # `import torch` raises ImportError: tensorboardX does without
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    if block:
      del sys.modules["torch"]
  return SummaryWriter


SummaryWriter = _summary_writer_without_torch()

JSONL = "metrics.jsonl"
TENSORBOARD = "tensorboard"


def tag(name: str) -> str:
  """The TensorBoard tag of a logged value: ``val_ap`` -> ``validation/ap``, ``loss`` ->
  ``train/loss``."""
  if name.startswith("val_"):
    return "validation/" + name[len("val_"):]
  return "train/" + name


class TrainLog:
  """Appends metrics to the run's JSON lines and TensorBoard events (process 0 only)."""

  def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True):
    self.path = fileio.path(workdir) / JSONL
    self.enabled = enabled
    self._writer = None
    if enabled:
      if start_step:
        self._forget_after(start_step)
      # Event files are read in name order, whose prefix is the second the file was opened; the
      # suffix keeps a restart within the same second from reusing the name, and in order.
      self._writer = SummaryWriter(str(fileio.path(workdir) / TENSORBOARD),
                                   purge_step=start_step + 1 if start_step else None,
                                   filename_suffix=f".from-step-{start_step:012d}")

  def _forget_after(self, step: int) -> None:
    if not self.path.exists():
      return
    lines, dropped, terminated = fileio.read_json_lines(self.path, ("step",))
    kept = [line for line in lines if line["step"] <= step]
    if dropped or not terminated or len(kept) != len(lines):
      fileio.atomic_write_text(self.path, "".join(json.dumps(line) + "\n" for line in kept))

  def write(self, step: int, **values: float) -> None:
    if not self.enabled:
      return
    fileio.append_durably(self.path, json.dumps({"step": step, "time": time.time(), **values})
                          + "\n")
    for name, value in values.items():
      self._writer.add_scalar(tag(name), value, step)
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
