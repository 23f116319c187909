"""One source (a photo or a video) to aligned PNGs and its manifest records (paper Sec. III-A,
IV-A): ``aligner.Aligner`` finds and aligns the faces in memory; this module writes each ok face
as a PNG under the output folder and makes one record per photo or frame (see ``manifest``),
adding to the alignment fields where the face comes from and went to (source, frame, output,
kind, warning) and the settings.

``Processor(settings, out_dir)(source)`` never raises: whatever goes wrong becomes the status of
the frame or file it concerns (``error: <reason>``), and the other frames go on.
"""

import os

import cv2
import numpy as np

from agg_jax import fileio
from agg_jax.preprocess.aligner import AlignedFace, Aligner, Settings
from agg_jax.preprocess.sources import Source

__all__ = ["Processor", "Settings", "make_record"]


def make_record(source: Source, settings: Settings, face: AlignedFace, output=None) -> dict:
  """One manifest record (keys: see ``manifest``): ``face``'s status and fields, from
  ``source``, written to ``output`` (None unless ok)."""
  fields = face.fields()
  record = {"source": source.path, "frame": face.frame, "status": face.status, "output": output}
  record.update((key, fields.pop(key)) for key in ("faces", "box", "landmarks", "affine", "eye"))
  record["kind"] = source.kind
  record.update(fields)
  if source.warning:
    record["warning"] = source.warning
  record["settings"] = settings.key()
  return record


class Processor:
  """Processes sources one by one; holds an ``Aligner`` (the dlib models: load once per
  worker)."""

  def __init__(self, settings: Settings, out_dir: str):
    self.settings = settings
    self.out_dir = out_dir
    self.aligner = Aligner(settings)

  def __call__(self, source: Source) -> list[dict]:
    records = []
    for face in self.aligner.file(source.path, source.kind):
      output = None
      if face.ok:
        output = (f"{source.output}/{face.frame:06d}.png" if source.kind == "video"
                  else source.output + ".png")
        try:
          self._write(output, face.face)
        except Exception as e:  # pylint: disable=broad-except
          face, output = face.failed(f"{type(e).__name__}: {e}"), None
      records.append(make_record(source, self.settings, face, output))
    return records

  def _write(self, relative: str, rgb: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
      raise OSError(f"PNG encoding failed for {relative}")
    fileio.atomic_write_bytes(os.path.join(self.out_dir, relative), png.tobytes())
