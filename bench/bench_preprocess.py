r"""Face preprocessing benchmark: faces found, alignment precision, speed and jitter on video.

  .venv/bin/python bench/bench_preprocess.py [--per_folder=0] [--workers=2] \
      [--parts=faces,video,beam]

faces: runs the pipeline on ../shared/data/faces-mini (every image, or ``--per_folder`` per
  folder) and prints, per folder, the share of images with a face found, the faces whose
  manifest ``quality`` flags a doubtful landmark fit, and the alignment precision: landmarks
  re-detected on the aligned outputs, left-eye centre minus the template point (mean, std per
  axis, robust std, median distance, shares), in output pixels. Three re-detections: first row,
  landmarks in the box a fresh detection (the pipeline's cascade) finds on the output; "(fresh,
  box on the face)", the same without the outputs where that box is a wrong face (IoU with the
  face region below MATCHED_IOU: a small false face, a box around an eye); "(face region)",
  landmarks in the box where the face must be (``face_region``: the output is a centred face,
  so no detection is needed). The last two differ where a turned face is off the average box;
  faces beyond 5 px in the first or the last are listed.
video: writes a 640x480 test video from faces-mini photos with known motion
  (``tests/synthetic_video.py``), then times, on one process, our video path (tracking +
  temporal smoothing) and its peer, a naive per-frame loop as most preprocessing scripts do it
  (dlib HOG with one upsampling on every whole frame, landmarks, the same warp, PNG write). Prints
  aligned frames/s of each and their ratio, and the jitter of each: the true left-eye position
  (the photo's landmarks carried through the known motion and the frame's alignment) across
  consecutive aligned frames, its distance to the template, and the same step for all 68 points.
beam: the same faces-mini images (``--per_folder``, default 40 per folder for this part) through
  the Apache Beam pipeline (``--beam``, local runner, ``--workers`` processes) and through the
  local process pool, same workers: images/s of each and their ratio, and whether the records
  agree.
"""

import glob
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import dlib
import numpy as np
from absl import app, flags

from agg_jax.preprocess import align, beam, runner
from agg_jax.preprocess.aligner import iou
from agg_jax.preprocess.detect import FaceDetector
from agg_jax.preprocess.images import read_image
from agg_jax.preprocess.landmarks import Landmarker, eye_centers
from agg_jax.preprocess.manifest import read_records
from agg_jax.preprocess.pipeline import Processor, Settings
from agg_jax.preprocess.sources import Source

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # For tests/.
from tests import synthetic_video  # noqa: E402
from tests.helpers import FACES_MINI as DATA  # noqa: E402

FOLDERS = ("real/yonsei", "real/amfd", "fake/photoshop", "fake/gan", "fake/sd21")
MATCHED_IOU = 0.5  # A fresh box overlapping the face region less than this is a wrong face.
ROWS = {  # Row labels of the three re-detections (the first row of a folder is "fresh").
    "fresh": "",
    "on face": f"{'  (fresh, box on the face)':54s} ",
    "region": f"{'  (face region)':54s} ",
}

flags.DEFINE_string("data", str(DATA), "The faces-mini folder.")
flags.DEFINE_integer("per_folder", 0, "Images per folder for the faces part (0: all).")
flags.DEFINE_integer("workers", 2, "Worker processes for the faces part.")
flags.DEFINE_list("parts", ["faces", "video"], "Parts to run: faces, video, beam.")
flags.DEFINE_integer("photos", 4, "Photos in the test video (one per folder, in turn).")
flags.DEFINE_integer("frames_per_photo", 50, "Frames per photo in the test video.")
FLAGS = flags.FLAGS


def face_region(size: int = 256) -> tuple[float, float, float, float]:
  """Where the face must be in an aligned output: the detector box of the average face, i.e. the
  output without the paper's margins (side size / 1.3, centred)."""
  half = size / (1 + 2 * align.MARGIN_TOP_BOTTOM) / 2
  return (size / 2 - half, size / 2 - half, size / 2 + half, size / 2 + half)


def redetected_eyes(records: list[dict], out_dir: str, detector, landmarker
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Left-eye centres found again on the aligned PNGs of ok records, two ways ((n, 2) each):
  landmarks in the box a fresh detection finds (NaN: no face), and in ``face_region``; and the
  IoU of the fresh box with ``face_region`` ((n,), 0 where none)."""
  fresh, region, overlap = [], [], []
  for r in records:
    rgb = cv2.cvtColor(cv2.imread(os.path.join(out_dir, r["output"])), cv2.COLOR_BGR2RGB)
    det = detector.detect(rgb)
    expected = face_region(rgb.shape[0])
    fresh.append(eye_centers(landmarker(rgb, det.box))[0] if det else (np.nan, np.nan))
    overlap.append(iou(det.box, expected) if det else 0.0)
    region.append(eye_centers(landmarker(rgb, expected))[0])
  return (np.array(fresh, dtype=np.float64).reshape(-1, 2),
          np.array(region, dtype=np.float64).reshape(-1, 2), np.array(overlap))


def faces_part(tmp: str) -> None:
  data = Path(FLAGS.data)
  inputs = []
  for folder in FOLDERS:
    files = sorted(glob.glob(str(data / folder / "*.jpg")))
    inputs += files[:FLAGS.per_folder] if FLAGS.per_folder else [str(data / folder)]
  out = os.path.join(tmp, "faces")
  summary = runner.run(inputs, out, Settings(), workers=FLAGS.workers, progress=False)
  records = read_records(out)
  detector, landmarker = FaceDetector(), Landmarker()
  t = align.template(256)
  print(f"faces-mini: {len(records)} images, {summary.seconds:.1f} s with {FLAGS.workers} "
        f"workers ({len(records) / summary.seconds:.1f} images/s)")
  print(f"{'folder':16s} {'images':>6s} {'found':>7s} {'no face':>7s} {'errors':>6s} "
        f"{'flagged':>7s} {'eye dx mean/std':>15s} {'eye dy mean/std':>15s} {'robust std':>11s} "
        f"{'median':>6s} {'<=2px':>6s} {'>5px':>4s} {'redetected':>10s}")
  all_dev = {name: [] for name in ROWS}
  for folder in FOLDERS:
    mine = [r for r in records if f"/{folder}/" in r["source"]]
    ok = [r for r in mine if r["status"] == "ok"]
    fresh, region, overlap = redetected_eyes(ok, out, detector, landmarker)
    found = ~np.isnan(fresh).any(axis=1)
    on_face = found & (overlap >= MATCHED_IOU)
    flagged = sum(bool(r.get("quality")) for r in ok)
    head = (f"{folder:16s} {len(mine):6d} {len(ok) / max(1, len(mine)):7.2%} "
            f"{sum(r['status'] == 'no_face' for r in mine):7d} "
            f"{sum(r['status'].startswith('error') for r in mine):6d} {flagged:7d} ")
    for name, eyes in (("fresh", fresh[found]), ("on face", fresh[on_face]), ("region", region)):
      dev = eyes - t
      all_dev[name].append(dev)
      print((head if name == "fresh" else ROWS[name]) + _precision(dev)
            + f" {len(dev):5d}/{len(ok)}")
    for r, a, b in zip(ok, fresh, region):
      da, db = np.linalg.norm(a - t), np.linalg.norm(b - t)
      if not da <= 5 or db > 5:
        print(f"    eye off by {da:.1f} / {db:.1f} px (fresh / region): {r['output']}"
              + (f"  [{'; '.join(r['quality'])}]" if r.get("quality") else ""))
  ok_share = sum(r["status"] == "ok" for r in records) / len(records)
  flagged = sum(bool(r.get("quality")) for r in records if r["status"] == "ok")
  for name, devs in all_dev.items():
    head = f"{'all':16s} {len(records):6d} {ok_share:7.2%} {'':7s} {'':6s} {flagged:7d} "
    print((head if name == "fresh" else ROWS[name]) + _precision(np.concatenate(devs)))
  for r in records:
    if r["status"] != "ok":
      print(f"  {r['status']}: {r['source']}" + (f" ({r['note']})" if r.get("note") else ""))


def _precision(dev: np.ndarray) -> str:
  """Mean / std per axis, robust std (1.4826 MAD, both axes), median distance, share within
  2 px, count beyond 5 px."""
  dist = np.linalg.norm(dev, axis=1)
  mad = 1.4826 * np.median(np.abs(dev - np.median(dev, axis=0)), axis=0)
  return (f"{dev[:, 0].mean():+6.2f} / {dev[:, 0].std():5.2f} {dev[:, 1].mean():+6.2f} / "
          f"{dev[:, 1].std():5.2f}  {mad[0]:4.2f} {mad[1]:4.2f}  {np.median(dist):6.2f} "
          f"{np.mean(dist <= 2):6.1%} {np.sum(dist > 5):4d}")


def naive(path: str, out_dir: str, n: int) -> list[dict]:
  """The peer: whole-frame HOG (one upsampling) + landmarks + the same warp on every frame."""
  hog, landmarker = dlib.get_frontal_face_detector(), Landmarker()
  cap = cv2.VideoCapture(path)
  records = []
  for index in range(n):
    ok, bgr = cap.read()
    if not ok:
      break
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rects = hog(rgb, 1)
    if not rects:
      records.append({"frame": index, "status": "no_face"})
      continue
    r = max(rects, key=lambda r: r.area())
    box = (r.left(), r.top(), r.right(), r.bottom())
    a = align.matrix(align.pose(box, landmarker(rgb, box)), 256)
    out = cv2.warpAffine(rgb, a, (256, 256), flags=cv2.INTER_LINEAR)
    name = os.path.join(out_dir, f"{index:06d}.png")
    cv2.imwrite(name, cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    records.append({"frame": index, "status": "ok", "affine": a.tolist(), "output": name})
  cap.release()
  return records


def jitter(records, matrices, photo_landmarks, per_photo) -> tuple[float, float, float, int]:
  """(eye step RMS, eye distance to template RMS, all-point step RMS, ok frames) in output px,
  from the true positions of the photo's landmarks."""
  n = len(matrices)
  points = np.full((n, 68, 2), np.nan)
  for r in records:
    if r["status"] == "ok":
      f = r["frame"]
      truth = align.transform(matrices[f], photo_landmarks[f // per_photo])
      points[f] = align.transform(np.array(r["affine"]), truth)
  eyes = points[:, 42:48].mean(axis=1)
  same = (np.arange(1, n) % per_photo) != 0  # Steps within one photo's stretch.
  eye_steps = np.linalg.norm(np.diff(eyes, axis=0), axis=1)[same]
  all_steps = np.linalg.norm(np.diff(points, axis=0), axis=2)[same]
  to_template = np.linalg.norm(eyes - align.template(256), axis=1)
  return (float(np.sqrt(np.nanmean(eye_steps ** 2))), float(np.sqrt(np.nanmean(to_template ** 2))),
          float(np.sqrt(np.nanmean(all_steps ** 2))), int((~np.isnan(eyes[:, 0])).sum()))


def video_part(tmp: str) -> None:
  data = Path(FLAGS.data)
  files = [sorted(glob.glob(str(data / FOLDERS[k % len(FOLDERS)] / "*.jpg")))[3 + k // 5]
           for k in range(FLAGS.photos)]
  photos = [read_image(f) for f in files]
  detector, landmarker = FaceDetector(), Landmarker()
  photo_landmarks = [landmarker(p, detector.detect(p).box) for p in photos]
  video = os.path.join(tmp, "test.mp4")
  per = FLAGS.frames_per_photo
  matrices = synthetic_video.make_video(photos, video, per)
  n = len(matrices)
  print(f"\ntest video: {n} frames 640x480 (mp4v), {FLAGS.photos} photos x {per} frames, moving")
  rows = {}
  for name, smooth in (("ours", 1.0), ("ours, no smoothing", 0.0)):
    out = os.path.join(tmp, f"video_{smooth}")
    processor = Processor(Settings(frames=n, smooth=smooth), out)
    start = time.perf_counter()
    records = processor(Source(video, "test", "video"))
    rows[name] = (n / (time.perf_counter() - start), records)
  out = os.path.join(tmp, "naive")
  os.makedirs(out)
  start = time.perf_counter()
  records = naive(video, out, n)
  rows["naive per-frame loop"] = (n / (time.perf_counter() - start), records)
  print(f"{'':22s} {'frames/s':>9s} {'ok':>5s} {'eye step RMS':>13s} {'eye-template RMS':>17s} "
        f"{'68-pt step RMS':>15s}   (output px, truth from the known motion)")
  for name, (fps, records) in rows.items():
    step, dist, all_step, ok = jitter(records, matrices, photo_landmarks, per)
    print(f"{name:22s} {fps:9.1f} {ok:5d} {step:13.2f} {dist:17.2f} {all_step:15.2f}")
  ratio = rows["ours"][0] / rows["naive per-frame loop"][0]
  print(f"speed ratio ours / naive per-frame loop: {ratio:.2f}x (one process, 640x480)")
  ours = [r for r in rows["ours"][1] if r["status"] == "ok"]
  eyes, _, _ = redetected_eyes(ours, os.path.join(tmp, "video_1.0"), detector, landmarker)
  steps = np.linalg.norm(np.diff(eyes, axis=0), axis=1)
  steps = steps[(np.arange(1, len(eyes)) % per) != 0]
  print(f"ours, left eye re-detected on the aligned frames: step RMS "
        f"{np.sqrt(np.nanmean(steps ** 2)):.2f} px, std about the template "
        f"{np.nanstd(eyes - align.template(256), axis=0).round(2).tolist()} px")


def beam_part(tmp: str) -> None:
  data = Path(FLAGS.data)
  per_folder = FLAGS.per_folder or 40
  inputs = [f for folder in FOLDERS
            for f in sorted(glob.glob(str(data / folder / "*.jpg")))[:per_folder]]
  rows = {}
  for name, run in (("local process pool", runner.run), ("beam pipeline", beam.run)):
    out = os.path.join(tmp, f"beam_{len(rows)}")
    kwargs = {"progress": False} if run is runner.run else {}
    start = time.perf_counter()
    summary = run(inputs, out, Settings(), workers=FLAGS.workers, **kwargs)
    rows[name] = (len(inputs) / (time.perf_counter() - start), summary, read_records(out))
  print(f"\n{len(inputs)} faces-mini images, {FLAGS.workers} workers; wall time includes "
        "start-up (Beam: the runner and its worker processes)")
  for name, (rate, summary, _) in rows.items():
    print(f"{name:20s} {rate:7.1f} images/s  ok {summary.ok}, no face {summary.no_face}, "
          f"errors {summary.errors}")
  (local, _, a), (piped, _, b) = rows.values()
  same = ({(r["source"], r["frame"]): r for r in a} == {(r["source"], r["frame"]): r for r in b})
  print(f"speed ratio beam / local: {piped / local:.2f}x; records identical: {same}")


def main(argv):
  del argv
  cv2.setNumThreads(1)
  with tempfile.TemporaryDirectory() as tmp:
    if "faces" in FLAGS.parts:
      faces_part(tmp)
    if "video" in FLAGS.parts:
      video_part(tmp)
    if "beam" in FLAGS.parts:
      beam_part(tmp)


if __name__ == "__main__":
  app.run(main)
