"""Preparing TFDS datasets without TensorFlow: the one place TFDS 4.9.10 still needs it.

When a split outgrows TFDS's in-memory shuffle buffer (1 GB), its writer spills the examples to
temporary bucket files through `tf.io.gfile`, which fails without TensorFlow. `install()` gives
that writer (`tensorflow_datasets.core.shuffle`) the few file functions it uses, backed by
etils.epath (local paths and gs://). Where TensorFlow is installed, nothing changes.
"""

import types

from etils import epath


class _ResourceExhaustedError(OSError):
  """Stands for tf.errors.ResourceExhaustedError (never raised by epath)."""


def _gfile(path, mode="r"):
  return epath.Path(path).open(mode)


_FILE_FUNCTIONS = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(
        GFile=_gfile, exists=lambda path: epath.Path(path).exists(),
        remove=lambda path: epath.Path(path).unlink())),
    errors=types.SimpleNamespace(ResourceExhaustedError=_ResourceExhaustedError))


def install() -> None:
  """Lets TFDS's shuffler spill to disk without TensorFlow (idempotent)."""
  try:
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    return
  except ImportError:
    pass
  from tensorflow_datasets.core import shuffle  # pylint: disable=import-outside-toplevel
  shuffle.tf = _FILE_FUNCTIONS
