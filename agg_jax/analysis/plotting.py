"""Figures of the analysis: matplotlib without a screen, written atomically as PNG.

Each analysis module draws its own figures with these helpers, so every figure of a report has
the same size conventions, colours and file handling.
"""

import io
import os

import matplotlib

matplotlib.use("Agg")  # no screen; must precede pyplot
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from agg_jax import fileio  # pylint: disable=wrong-import-position

REAL_COLOR, FAKE_COLOR = "tab:blue", "tab:orange"  # the paper's Figure 4 colours
DPI = 110


def figure(width: float, height: float, rows: int = 1, cols: int = 1, **kwargs):
  """A new (figure, axes) of the given size in inches: one Axes, or an array of rows x cols
  (`plt.subplots`' conventions and keywords)."""
  return plt.subplots(rows, cols, figsize=(width, height), dpi=DPI, **kwargs)


def save_figure(fig, path: str | os.PathLike) -> None:
  """Writes `fig` as PNG at `path` (atomically, folder created) and closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", bbox_inches="tight")
  plt.close(fig)
  fileio.atomic_write_bytes(path, buffer.getvalue())
