"""`python -m agg_jax.predict --model=EXPORT_DIR PATH...`: is each photo or video a deepfake?

  python -m agg_jax.predict --model=runs/demo/export photo.jpg clip.mp4 folder/
  python -m agg_jax.predict --model=runs/demo/export folder/ --output=out --cam

PATHs are photos, videos and folders (searched recursively; hidden files skipped); the kind of a
file is sniffed from its content as the preprocessing does (`preprocess.sources`). Faces are
found and aligned with the settings of the training data (the export's `alignment`), resized to
the model's side as training did and scored in batches of --batch by the exported model
(`exported.Detector`). Every face of a photo is scored, the largest scored one is marked
`largest` and gives the photo its probability; a video's frames (--frames, default the
alignment's) follow the largest face, and the video's probability is the mean of its frames'.
A probability at or above the threshold (--threshold, default the export's) is labelled fake.

One JSON line per input, in order, on standard output (or DIR/predictions.jsonl with
--output=DIR, each line on disk as it comes), `status` one of
  ok             scored
  no_face        no face that could be aligned
  unsupported    neither a photo nor a video (content and extension)
  error: <why>   a missing, unreadable or broken file
then a summary on standard error. --cam (with --output) writes Grad-CAM overlays of the export's
CAM layers for each scored face under DIR/cam/, named in the JSON lines. Exit status 0 when
every input was scored, 1 otherwise, 2 for a usage mistake (agg_jax/cli.py).

This module imports no training code (no flax, optax, orbax, model definitions): it runs from
an export folder with jax, numpy, OpenCV and dlib.
"""

import dataclasses
import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # first of all: started again with XLA's large-block allocator
  from agg_jax import large_blocks
  large_blocks.start_preloaded()

import cv2  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from tqdm import tqdm  # noqa: E402

from agg_jax import cli, exported, fileio, heatmap  # noqa: E402
from agg_jax.preprocess import AlignedFace, Aligner, Settings  # noqa: E402
from agg_jax.preprocess.dlib_models import ModelNotFoundError  # noqa: E402
from agg_jax.preprocess.frames import VIDEO_EXTS, read_frames, sample_indices  # noqa: E402
from agg_jax.preprocess.images import IMAGE_EXTS, BadInput, read_image  # noqa: E402
from agg_jax.preprocess.sources import kind_of, sniff  # noqa: E402

PROG = "agg_jax.predict"
PREDICTIONS = "predictions.jsonl"
CAM_DIR = "cam"
AGGREGATION = "mean of frame probabilities"

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The export folder (`python -m agg_jax.main --workdir=RUN "
                    "--mode=export` writes RUN/export).")
flags.DEFINE_string("output", None, "Folder for predictions.jsonl (and cam/); default: the JSON "
                    "lines go to standard output.")
flags.DEFINE_float("threshold", None, "Probability of fake at or above which a face or video is "
                   "labelled fake; default: the export's (chosen on the validation split).")
flags.DEFINE_integer("frames", None, "Frames scored per video; default: the export's alignment.")
flags.DEFINE_boolean("cam", False, "With --output: Grad-CAM overlay PNGs of each scored face.")
flags.DEFINE_integer("batch", 32, "Faces per call of the model.")
flags.DEFINE_string("compilation_cache", "~/.cache/agg_jax/xla",
                    "Persistent XLA compilation cache: a second run skips compiling the model "
                    "for the batch sizes it has seen. Empty: off.")


@dataclasses.dataclass
class Item:
  """An input's JSON record and its aligned faces waiting to be scored: `entries[i]` (a face or
  frame of the record) gets the probability of `faces[i]`; `cams[i]` names its CAM PNGs."""
  record: dict
  faces: list[np.ndarray] = dataclasses.field(default_factory=list)
  entries: list[dict] = dataclasses.field(default_factory=list)
  cams: list[str] = dataclasses.field(default_factory=list)


def inputs(paths: list[str], skip: str | None = None) -> list[str]:
  """The files named and those under the folders named (sorted, hidden ones and the folder
  `skip` left out), in command-line order, each once; a path that does not exist is kept."""
  skip = os.path.realpath(skip) if skip else None
  out = []
  for path in paths:
    if not os.path.isdir(path):
      out.append(path)
      continue
    found = []
    for folder, dirs, names in os.walk(path):
      dirs[:] = [d for d in dirs if not d.startswith(".")
                 and os.path.realpath(os.path.join(folder, d)) != skip]
      found.extend(os.path.join(folder, n) for n in names if not n.startswith("."))
    out.extend(sorted(found))
  unique = {}
  for p in out:
    unique.setdefault(os.path.abspath(p), p)
  return list(unique.values())


def kind(path: str) -> tuple[str | None, str | None]:
  """(kind, warning): "image" or "video" as the preprocessing decides, None when neither the
  content nor the extension says either. OSError when the file cannot be read."""
  ext = Path(path).suffix.lower()
  if ext not in IMAGE_EXTS and ext not in VIDEO_EXTS and sniff(path) is None:
    return None, None
  return kind_of(path)


def label(probability: float, threshold: float) -> str:
  return "fake" if probability >= threshold else "real"


def in_batches(function, images: np.ndarray, batch: int) -> np.ndarray:
  """`function` over `images` in chunks of at most `batch`, each padded to a power of two (or
  `batch`) so that a few shapes are compiled whatever the number of faces."""
  out = []
  for start in range(0, len(images), batch):
    chunk = images[start:start + batch]
    size = min(batch, 1 << (len(chunk) - 1).bit_length())
    pad = np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)
    out.append(np.asarray(function(np.concatenate([chunk, pad])))[:len(chunk)])
  return np.concatenate(out)


class Predictor:
  """Scores inputs one after another and writes their JSON lines in order; faces of several
  inputs share model calls (a line is written once its input's faces are scored)."""

  def __init__(self, detector: exported.Detector, settings: Settings, threshold: float,
               batch: int, output: str | None, cam: bool):
    self.detector, self.settings, self.threshold = detector, settings, threshold
    self.batch, self.output, self.cam = batch, output, cam
    self.aligner = Aligner(settings)
    self.pending: list[Item] = []
    self.records: list[dict] = []
    self.number = 0

  @property
  def destination(self) -> str:
    return os.path.join(self.output, PREDICTIONS) if self.output else "standard output"

  def __call__(self, path: str) -> None:
    self.number += 1
    item = self.item(path)
    self.pending.append(item)
    if sum(len(i.faces) for i in self.pending) >= self.batch or item.record["kind"] == "video":
      self.flush()

  def item(self, path: str) -> Item:
    if not os.path.exists(path):
      return Item({"path": path, "kind": None, "status": "error: no such file or directory"})
    try:
      what, warning = kind(path)
    except OSError as e:
      return Item({"path": path, "kind": None,
                   "status": f"error: cannot read: {e.strerror or e}"})
    if what is None:
      return Item({"path": path, "kind": None, "status": "unsupported",
                   "note": "neither a photo nor a video by its content or extension"})
    item = Item({"path": path, "kind": what, "status": None})
    if warning:
      item.record["warning"] = warning
    try:
      (self.photo if what == "image" else self.video)(path, item)
      return item
    except BadInput as e:
      status = f"error: {e}"
    except OSError as e:
      status = f"error: cannot read: {e.strerror or e}"
    except Exception as e:  # pylint: disable=broad-except  # One bad file never stops a run.
      status = f"error: unexpected {type(e).__name__}: {e}"
    return Item({**item.record, "status": status})  # nothing of it is scored

  def _cam_name(self, path: str, suffix: str) -> str:
    return f"{CAM_DIR}/{self.number:05d}_{Path(path).stem}/{suffix}"

  def photo(self, path: str, item: Item) -> None:
    rgb = read_image(path, self.settings.max_pixels)
    aligned = self.aligner.faces(rgb)
    found = [f for f in aligned if f.box is not None]
    item.record.update(image_size=[rgb.shape[1], rgb.shape[0]], faces=[])
    for index, face in enumerate(found):
      fields = face.fields()
      entry = {"index": index, "largest": False, "status": face.status,
               **{k: fields[k] for k in ("box", "eye", "detector", "quality", "note")
                  if k in fields},
               "probability": None, "label": None}
      item.record["faces"].append(entry)
      if face.ok:
        self._add(item, face, entry, self._cam_name(path, f"face{index}"))
    item.record.update(status=_status(aligned), probability=None, label=None)

  def video(self, path: str, item: Item) -> None:
    s = self.settings
    info, frames = read_frames(path, s.frames, s.sampling)
    wanted = len(sample_indices(info.frame_count, s.frames, s.sampling))
    with tqdm(frames, total=wanted or None, desc=Path(path).name, unit="frame",
              leave=False) as bar:
      aligned = self.aligner.video(bar, info)
    item.record.update(frames=[], probability=None, aggregation=AGGREGATION, label=None,
                       frames_scored=sum(f.ok for f in aligned),
                       frames_without_face=sum(f.status == "no_face" for f in aligned),
                       frames_failed=sum(f.status.startswith("error") for f in aligned),
                       frames_total=info.frame_count, image_size=[info.width, info.height])
    for face in aligned:
      entry = {"frame": face.frame, "status": face.status, "probability": None}
      item.record["frames"].append(entry)
      if face.ok:
        self._add(item, face, entry, self._cam_name(path, f"frame{face.frame:06d}"))
    item.record["status"] = _status(aligned)

  def _add(self, item: Item, face: AlignedFace, entry: dict, cam: str) -> None:
    item.faces.append(face.face)
    item.entries.append(entry)
    item.cams.append(cam)

  def flush(self) -> None:
    """Scores the pending faces and writes the pending lines."""
    faces = [face for item in self.pending for face in item.faces]
    if faces:
      images = self.detector.prepare(np.stack(faces))
      probabilities = in_batches(self.detector.probabilities, images, self.batch)
      maps = in_batches(self.detector.cam, images, self.batch) if self.cam else None
      entries = [(e, c) for item in self.pending for e, c in zip(item.entries, item.cams)]
      for k, ((entry, cam), p) in enumerate(zip(entries, probabilities)):
        entry.update(probability=float(p), label=label(float(p), self.threshold))
        if maps is not None:
          entry["cam"] = self.write_cams(faces[k], maps[k], cam)
    for item in self.pending:
      item.record.setdefault("probability", None)
      item.record.setdefault("label", None)
      self.finish(item.record)
      self.write(item.record)
    self.pending = []

  def write_cams(self, face: np.ndarray, maps: np.ndarray, name: str) -> list[str]:
    names = []
    for layer, heat in zip(self.detector.cam_layers, maps):
      names.append(f"{name}_{layer}.png")
      heat = cv2.resize(np.asarray(heat, np.float32), face.shape[1::-1],
                        interpolation=cv2.INTER_LINEAR)  # the model's side -> the face's
      ok, png = cv2.imencode(".png", cv2.cvtColor(heatmap.overlay(face, heat),
                                                  cv2.COLOR_RGB2BGR))
      if not ok:
        raise OSError(f"cannot encode {names[-1]}")
      path = os.path.join(self.output, names[-1])
      os.makedirs(os.path.dirname(path), exist_ok=True)
      fileio.atomic_write_bytes(path, png.tobytes())
    return names

  def finish(self, record: dict) -> None:
    """The record's probability and label from its scored faces or frames."""
    if record["kind"] == "image" and record.get("faces"):
      scored = [f for f in record["faces"] if f["probability"] is not None]
      if scored:
        scored[0]["largest"] = True  # faces come largest first
        record.update(probability=scored[0]["probability"], label=scored[0]["label"])
    elif record["kind"] == "video" and record.get("frames_scored"):
      p = float(np.mean([f["probability"] for f in record["frames"]
                         if f["probability"] is not None]))
      record.update(probability=p, label=label(p, self.threshold))
    if record.get("probability") is not None:
      record["threshold"] = self.threshold

  def write(self, record: dict) -> None:
    self.records.append(record)
    line = json.dumps(record) + "\n"
    if self.output:
      fileio.append_durably(os.path.join(self.output, PREDICTIONS), line)
    else:
      sys.stdout.write(line)
      sys.stdout.flush()

  def summary(self) -> str:
    statuses = [r["status"] for r in self.records]
    labels = [r.get("label") for r in self.records if r["status"] == "ok"]
    errors = sum(s.startswith("error") for s in statuses)
    return (f"{PROG}: {len(statuses)} inputs: {statuses.count('ok')} scored "
            f"({labels.count('fake')} fake, {labels.count('real')} real; threshold "
            f"{self.threshold:.4g}), {statuses.count('no_face')} without a face, "
            f"{errors} error{'' if errors == 1 else 's'}, {statuses.count('unsupported')} "
            f"unsupported; predictions in {self.destination}")


def _status(aligned: list[AlignedFace]) -> str:
  """ok when a face was aligned, else no_face when one was looked for, else the first error."""
  statuses = [f.status for f in aligned]
  if "ok" in statuses:
    return "ok"
  if "no_face" in statuses or not statuses:
    return "no_face"
  return statuses[0]


def load(folder: str, frames: int | None) -> tuple[exported.Detector, Settings]:
  """The detector and the alignment settings (UsageError when the export cannot be used)."""
  try:
    detector = exported.load(folder)
    settings = Settings(**detector.alignment)
  except exported.ExportError as e:
    raise cli.UsageError(f"--model={folder}: {e}") from None
  except TypeError as e:
    raise cli.UsageError(f"--model={folder}: the alignment in model.json does not fit this "
                         f"agg_jax's preprocessing ({e})") from None
  if frames is not None:
    settings = dataclasses.replace(settings, frames=frames)
  return detector, settings


def check_flags(paths: list[str]) -> None:
  if not FLAGS.model:
    raise cli.UsageError("--model is missing: the export folder to load (make one with "
                         "`python -m agg_jax.main --workdir=RUN --mode=export`)")
  if not paths:
    raise cli.UsageError("no PATH given: name photos, videos or folders after the flags")
  if FLAGS.threshold is not None and not 0.0 <= FLAGS.threshold <= 1.0:
    raise cli.UsageError(f"--threshold={FLAGS.threshold}: a probability, in [0, 1]")
  if FLAGS.frames is not None and FLAGS.frames < 1:
    raise cli.UsageError(f"--frames={FLAGS.frames}: at least 1")
  if FLAGS.batch < 1:
    raise cli.UsageError(f"--batch={FLAGS.batch}: at least 1")
  if FLAGS.cam and not FLAGS.output:
    raise cli.UsageError("--cam writes PNG files: give --output=DIR too")
  if FLAGS.output and os.path.exists(FLAGS.output) and not os.path.isdir(FLAGS.output):
    raise cli.UsageError(f"--output={FLAGS.output}: exists and is not a folder")


def main(argv: list[str]) -> int:
  paths = argv[1:]
  check_flags(paths)
  if FLAGS.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(FLAGS.compilation_cache))
  detector, settings = load(FLAGS.model, FLAGS.frames)
  if FLAGS.cam and not detector.cam_layers:
    raise cli.UsageError(f"--cam: the export {FLAGS.model} holds no CAM module")
  threshold = detector.threshold if FLAGS.threshold is None else FLAGS.threshold
  try:
    predictor = Predictor(detector, settings, threshold, FLAGS.batch, FLAGS.output, FLAGS.cam)
  except ModelNotFoundError as e:
    raise cli.UsageError(str(e)) from None
  if FLAGS.output:
    os.makedirs(FLAGS.output, exist_ok=True)
    fileio.atomic_write_text(os.path.join(FLAGS.output, PREDICTIONS), "")
  files = inputs(paths, skip=FLAGS.output)
  for path in tqdm(files, desc="predict", unit="file", file=sys.stderr):
    predictor(path)
  predictor.flush()
  print(predictor.summary(), file=sys.stderr)
  scored = all(r["status"] == "ok" for r in predictor.records)
  return cli.EXIT_OK if scored else cli.EXIT_FAILED


if __name__ == "__main__":
  cli.run(main, PROG)
