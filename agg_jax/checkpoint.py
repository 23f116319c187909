"""Orbax checkpoints of a run: the latest train state (for resuming) and the best by validation.

`WORKDIR/checkpoints/<step>` holds the whole train state, so a preempted run resumes where it
stopped; `WORKDIR/best/<step>` holds the variables with the highest validation AP (checkpoints
are selected on the validation split, never on a test set). Orbax writes each checkpoint to a
temporary directory and renames it when complete, so a half-written checkpoint is never restored.
"""

from typing import Any

import jax
import orbax.checkpoint as ocp

from agg_jax import fileio

BEST_METRIC = "val_ap"
LATEST_DIR = "checkpoints"  # in the run directory
BEST_DIR = "best"


class RunCheckpoints:
  """The latest and the best checkpoint of one run directory."""

  def __init__(self, workdir: str, keep_latest: int = 1):
    workdir = fileio.absolute(workdir)
    self.latest = ocp.CheckpointManager(
        workdir / LATEST_DIR,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep_latest, create=True))
    self.best = ocp.CheckpointManager(workdir / BEST_DIR,
                                      options=_best_options(create=True))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def best_metric(self) -> float | None:
    step = self.best.best_step()
    return None if step is None else float(self.best.metrics(step)[BEST_METRIC])

  def save_latest(self, step: int, state: Any) -> None:
    self.latest.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore_latest(self, abstract_state: Any) -> Any:
    return self.latest.restore(self.latest.latest_step(),
                               args=ocp.args.StandardRestore(abstract_state))

  def save_best(self, step: int, variables: Any, val_ap: float) -> None:
    self.best.save(step, args=ocp.args.StandardSave(variables), metrics={BEST_METRIC: val_ap},
                   force=True)

  def restore_best(self, abstract_variables: Any) -> Any:
    return _restore_best(self.best, abstract_variables)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _best_options(**options) -> ocp.CheckpointManagerOptions:
  return ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda m: m[BEST_METRIC], best_mode="max",
      keep_checkpoints_without_metrics=False, **options)


def _restore_best(manager: ocp.CheckpointManager, abstract_variables: Any) -> Any:
  step = manager.best_step()
  if step is None:
    raise FileNotFoundError(f"no best checkpoint under {manager.directory}: train first")
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_variables))


def restore_best(workdir: str, abstract_variables: Any) -> Any:
  """The best variables of the run in `workdir`, read without writing or creating anything."""
  directory = fileio.absolute(workdir) / BEST_DIR
  if not directory.is_dir():
    raise FileNotFoundError(f"no best checkpoint under {directory}: train first")
  # create=False: nothing is created or written (read_only=True would say so in a warning).
  with ocp.CheckpointManager(directory, options=_best_options(create=False)) as manager:
    return _restore_best(manager, abstract_variables)


def abstract(tree: Any) -> Any:
  """Shape/dtype/sharding structs of a tree of arrays, the restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
