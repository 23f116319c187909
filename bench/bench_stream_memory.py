"""Peak memory while streaming a prepared dataset several times larger than the memory allowed.

Makes (or reuses, with --data_dir) a prepared face dataset of --size_gb on disk (default 3 GB):
the TFDS builder of bench_input_pipeline.py writes 256x256 uniform-noise PNGs (compression
level 1, about 197 KB each: incompressible, so the decoded images take as much memory as the
files take disk; about 15,000 images for 3 GB, encoded in --build_workers processes). Then it
streams the training splits --passes times with data.train_stream as training does (--workers
grain worker processes, flips, blur and JPEG augmentation), holding each batch --step_seconds
as a train step would (default 0.2 s: a consumer slower than the workers, as on a CPU, so that
whatever the workers read ahead piles up as it would in training), while a thread samples every
--interval seconds the resident memory of the process tree (the main process and all its
children, e.g. grain's workers): the sum of VmRSS (/proc/<pid>/status; shared pages counted
once per process, so an upper bound) and the sum of Pss (/proc/<pid>/smaps_rollup; shared
pages split among the processes that map them).

Prints per pass the peak RSS, the peak PSS and the ratio peak RSS / dataset size, and whether
the peak is flat (it does not grow from pass to pass: memory follows the batch, not the data).
The peer holds the training images in memory as the array sources do (ArrayImages: one uint8
array, pickled into every worker): a subset of --peer_fractions of them (default 10% and 20%)
is read into one array and streamed the same way for --peer_steps batches, and the peak is
extrapolated linearly in the fraction to the whole dataset; its lower bound, the decoded images
held once, is printed beside it.
--memory_budget_gb checks the streaming peak RSS against a budget (PASS/FAIL, exit status 1 on
FAIL).

The default folder is a new one under /tmp, removed at the end unless --keep; with --data_dir
the dataset is made there once and kept (reused by the next run). Writing needs --size_gb of
free disk, and memory for the largest split (half the dataset) in the child process that writes
it (TFDS collects a split before writing it).

  .venv/bin/python bench/bench_stream_memory.py --size_gb=3 --passes=3 --memory_budget_gb=1
  .venv/bin/python bench/bench_stream_memory.py --data_dir=/tmp/stream_memory --step_seconds=0
"""

import argparse
import gc
import math
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_input_pipeline as pipeline  # noqa: E402  (also puts the repository on sys.path)

GB = 1e9

# ---------------------------------------------------------------------------------------------
# Resident memory of a process tree, from /proc (psutil, where installed, lists the children).


def _children(pid: int) -> list[int]:
  try:
    import psutil  # pylint: disable=import-outside-toplevel
  except ImportError:
    psutil = None
  if psutil is not None:
    try:
      return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
      return []
  parents = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          parents.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
      except (OSError, IndexError, ValueError):
        continue
  tree, todo = [], [pid]
  while todo:
    for child in parents.get(todo.pop(), []):
      tree.append(child)
      todo.append(child)
  return tree


def _kb_field(path: str, field: str) -> int | None:
  """`field` (a "Name:  123 kB" line) of a /proc file, in bytes; None if unreadable."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return 0


def tree_memory(pid: int) -> tuple[int, int, int, int]:
  """(sum of VmRSS, sum of Pss, processes, VmRSS of `pid` alone) over `pid` and all its
  descendants."""
  rss = pss = count = 0
  own = _kb_field(f"/proc/{pid}/status", "VmRSS") or 0
  for member in [pid] + _children(pid):
    member_rss = _kb_field(f"/proc/{member}/status", "VmRSS")
    if member_rss is None:  # exited meanwhile
      continue
    member_pss = _kb_field(f"/proc/{member}/smaps_rollup", "Pss")
    rss += member_rss
    pss += member_rss if member_pss is None else member_pss
    count += 1
  return rss, pss, count, own


class Sampler(threading.Thread):
  """Samples tree_memory(this process) every `interval` seconds; peaks over time windows."""

  def __init__(self, interval: float):
    super().__init__(daemon=True)
    self.interval = interval
    self.samples: list[tuple] = []  # (time, rss, pss, processes, main process's rss)
    self.lock = threading.Lock()
    self.stopped = threading.Event()

  def sample(self) -> tuple:
    now = time.perf_counter()
    row = (now, *tree_memory(os.getpid()))
    with self.lock:
      self.samples.append(row)
    return row

  def run(self) -> None:
    while not self.stopped.wait(self.interval):
      self.sample()

  def stop(self) -> None:
    self.stopped.set()
    self.join()

  def peak(self, start: float, end: float) -> tuple[int, int, int, int]:
    """(peak RSS, peak PSS, most processes, peak RSS of the main process) of the samples taken
    in [start, end]."""
    with self.lock:
      rows = [row for row in self.samples if start <= row[0] <= end]
    if not rows:
      return 0, 0, 0, 0
    return tuple(max(row[i] for row in rows) for i in (1, 2, 3, 4))


# ---------------------------------------------------------------------------------------------


def split_bytes(folder: str) -> dict[str, int]:
  """Bytes on disk of each split's record files in a prepared version folder."""
  sizes = {}
  for name in os.listdir(folder):
    if ".array_record-" in name:
      split = name.split(".array_record-")[0].split("-", 1)[1]
      sizes[split] = sizes.get(split, 0) + os.path.getsize(os.path.join(folder, name))
  return sizes


def stream_passes(batches, passes: int, workers: int, step_seconds: float,
                  sampler: Sampler) -> list[dict]:
  """Streams `passes` passes over the training split (one stream, as in training), holding each
  batch `step_seconds` (the train step); per pass its steps, images/s and peaks."""
  from agg_jax import data  # pylint: disable=import-outside-toplevel
  steps = math.ceil(len(batches.split) / batches.batch_size)
  results = []
  start = sampler.sample()[0]
  stream = data.train_stream(batches, 0, passes * steps, workers=workers)
  try:
    for step, batch in enumerate(stream):
      if step_seconds:
        time.sleep(step_seconds)
      del batch
      if (step + 1) % steps == 0:
        end = sampler.sample()[0]
        rss, pss, processes, main_rss = sampler.peak(start, end)
        results.append({"steps": steps, "seconds": end - start, "rss": rss, "pss": pss,
                        "processes": processes, "main": main_rss,
                        "images_s": steps * batches.batch_size / (end - start)})
        print(f"  pass {len(results)}: {end - start:6.1f} s, peak RSS {rss / GB:.2f} GB (main "
              f"process {main_rss / GB:.2f} GB), peak PSS {pss / GB:.2f} GB ({processes} "
              "processes)", flush=True)
        start = end
  finally:
    getattr(stream, "close", lambda: None)()
  return results


def in_memory_peak(batches, fraction: float, steps: int, workers: int, step_seconds: float,
                   sampler: Sampler) -> tuple[int, int]:
  """(images, peak RSS) of the peer: `fraction` of the training images read into one array
  (ArrayImages) and streamed for `steps` batches, with the same workers and augmentation (the
  same steps at every fraction: what grows with the fraction is what the array costs)."""
  from agg_jax import data  # pylint: disable=import-outside-toplevel
  from agg_jax.data.split import ArrayImages, Split  # pylint: disable=import-outside-toplevel
  split = batches.split
  rows = np.unique(np.linspace(0, len(split) - 1, max(2, round(fraction * len(split))))
                   .round().astype(np.int64))  # spread over both classes' segments
  start = sampler.sample()[0]
  array = np.empty((len(rows), *split.images.shape), np.uint8)
  for first in range(0, len(rows), 256):
    array[first:first + 256] = split.images.read(rows[first:first + 256])
  subset = Split(ArrayImages(array), split.labels[rows], split.ids[rows])
  peer = data.BalancedBatches(subset, batches.batch_size, batches.seed, flip=batches.flip,
                              augment=batches.augment)
  stream = data.train_stream(peer, 0, steps, workers=workers)
  try:
    for batch in stream:
      if step_seconds:
        time.sleep(step_seconds)
      del batch
  finally:
    getattr(stream, "close", lambda: None)()
  end = sampler.sample()[0]
  del stream, peer, subset, array
  gc.collect()
  return len(rows), sampler.peak(start, end)[0]


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--size_gb", type=float, default=3.0,
                      help="size on disk of the dataset the script makes")
  parser.add_argument("--num_images", type=int, default=0,
                      help="images of the dataset the script makes (overrides --size_gb)")
  parser.add_argument("--data_dir", default="",
                      help="prepared datasets' folder (made there once and kept; default: a "
                           "new folder under /tmp, removed unless --keep; "
                           "~/tensorflow_datasets with --dataset)")
  parser.add_argument("--dataset", default="",
                      help=f"a prepared dataset in --data_dir (default: {pipeline.NAME}/noise)")
  parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
  parser.add_argument("--passes", type=int, default=3, help="passes over the training images")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--image_size", type=int, default=256, help="side the faces are read at")
  parser.add_argument("--workers", type=int, default=2, help="grain worker processes")
  parser.add_argument("--blur_prob", type=float, default=0.5)
  parser.add_argument("--jpeg_prob", type=float, default=0.5)
  parser.add_argument("--step_seconds", type=float, default=0.2,
                      help="seconds each batch is held, as the train step would (0: batches are "
                           "taken as fast as they come)")
  parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
  parser.add_argument("--memory_budget_gb", type=float, default=0.0,
                      help="check the streaming peak RSS against this budget (0: no check)")
  parser.add_argument("--peer_fractions", default="0.1,0.2",
                      help="subsets the in-memory peer is measured on ('' skips the peer)")
  parser.add_argument("--peer_steps", type=int, default=20,
                      help="batches the in-memory peer streams at each fraction")
  parser.add_argument("--build_workers", type=int, default=2,
                      help="processes that encode the PNGs")
  args = parser.parse_args(argv)
  args.peer_fractions = [float(f) for f in args.peer_fractions.split(",") if f]
  if args.batch_size % 2:
    parser.error("--batch_size must be even (class-balanced batches)")
  return args


def main(args: argparse.Namespace) -> int:
  temporary = None
  if args.data_dir or args.dataset:
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir or "~/tensorflow_datasets"))
    os.makedirs(data_dir, exist_ok=True)
  else:
    data_dir = temporary = tempfile.mkdtemp(prefix="bench_stream_memory_", dir="/tmp")
  try:
    dataset = args.dataset
    if not dataset:
      per_image = len(pipeline.noise_png(0))
      count = args.num_images or math.ceil(args.size_gb * GB / per_image)
      from agg_jax.datasets import prepared_dir  # pylint: disable=import-outside-toplevel
      free = shutil.disk_usage(data_dir).free
      if prepared_dir(data_dir, pipeline.NAME, "noise") is None and free < count * per_image + GB:
        raise SystemExit(f"{data_dir}: {free / GB:.1f} GB free, the dataset needs "
                         f"{count * per_image / GB:.1f} GB (and 1 GB to spare)")
      dataset = pipeline.ensure_dataset(data_dir, "noise", count, args.build_workers)
    return run(data_dir, dataset, args)
  finally:
    if temporary and not args.keep:
      shutil.rmtree(temporary, ignore_errors=True)
    elif temporary:
      print(f"kept {temporary}")


def run(data_dir: str, dataset: str, args: argparse.Namespace) -> int:
  from agg_jax.data import tfds_source  # pylint: disable=import-outside-toplevel
  prepared = tfds_source.Prepared(data_dir, dataset)
  on_disk = split_bytes(prepared.folder)
  batches = pipeline.training_batches(data_dir, dataset, args, args.image_size)
  train = batches.split
  streamed = sum(on_disk.get(s.split, 0) for s in train.images.segments)
  total = sum(on_disk.values())
  decoded = len(train) * int(np.prod(train.images.shape))
  print(f"{dataset}: {sum(prepared.sizes.values()):,} images, {total / GB:.2f} GB on disk, in "
        f"{prepared.folder}")
  print(f"streamed: the {len(train):,} training images, {streamed / GB:.2f} GB on disk, "
        f"{decoded / GB:.2f} GB decoded at {args.image_size}x{args.image_size}")

  sampler = Sampler(args.interval)
  rss, pss = sampler.sample()[1:3]
  print(f"before streaming: RSS {rss / GB:.2f} GB, PSS {pss / GB:.2f} GB (this process)",
        flush=True)
  sampler.start()
  try:
    passes = stream_passes(batches, args.passes, args.workers, args.step_seconds, sampler)
    peers = []
    for fraction in args.peer_fractions:
      images, peak = in_memory_peak(batches, fraction, args.peer_steps, args.workers,
                                    args.step_seconds, sampler)
      peers.append((images / len(train), images, peak))
      print(f"  in-memory peer, {images:,} images ({images / len(train):.1%}): peak RSS "
            f"{peak / GB:.2f} GB", flush=True)
  finally:
    sampler.stop()

  print()
  print(f"streaming {dataset} ({streamed / GB:.2f} GB of training images on disk), read at "
        f"{args.image_size}, batch {args.batch_size}, {args.workers} workers, flips, blur "
        f"p={args.blur_prob:g}, JPEG p={args.jpeg_prob:g}, each batch held "
        f"{args.step_seconds:g} s (the train step); memory sampled every {args.interval:g} s; "
        "pass 1 includes the workers' start-up")
  print(f"{'pass':>4} {'steps':>6} {'seconds':>8} {'images/s':>9} {'peak RSS GB':>12} "
        f"{'main proc GB':>12} {'peak PSS GB':>12} {'processes':>9} {'RSS/dataset':>12}")
  for number, row in enumerate(passes, 1):
    print(f"{number:>4} {row['steps']:>6} {row['seconds']:>8.1f} {row['images_s']:>9.1f} "
          f"{row['rss'] / GB:>12.2f} {row['main'] / GB:>12.2f} {row['pss'] / GB:>12.2f} "
          f"{row['processes']:>9} {row['rss'] / streamed:>12.2f}")
  peak = max(row["rss"] for row in passes)
  growth = max(row["rss"] for row in passes[1:]) - passes[0]["rss"] if len(passes) > 1 else 0
  flat = growth <= max(0.05 * passes[0]["rss"], 64e6)
  print(f"peak RSS {peak / GB:.2f} GB = {peak / streamed:.2f}x the dataset streamed; later passes "
        f"vs the first: {growth / 1e6:+.0f} MB: {'flat' if flat else 'GROWS from pass to pass'}")
  if len(peers) >= 2:
    fractions, peaks = np.array([p[0] for p in peers]), np.array([p[2] for p in peers], float)
    slope, intercept = np.polyfit(fractions, peaks, 1)
    whole = slope + intercept
    measured = ", ".join(f"{p / GB:.2f} GB at {f:.0%}" for f, p in zip(fractions, peaks))
    print(f"in-memory peer (ArrayImages, same stream): peak RSS {measured} of the images -> "
          f"about {whole / GB:.2f} "
          f"GB for the whole dataset ({whole / streamed:.2f}x it; {slope / decoded:.1f} copies "
          f"of the decoded images); at least {decoded / GB:.2f} GB (the decoded images once)")
    print(f"streaming / in-memory peer: {peak / whole:.2f} of the peer's peak")
  else:
    print(f"in-memory peer: at least {decoded / GB:.2f} GB (the decoded training images once"
          + (f"; measured {peers[0][2] / GB:.2f} GB at {peers[0][0]:.0%} of them)" if peers
             else ")"))
  if args.memory_budget_gb > 0:
    ok = peak <= args.memory_budget_gb * GB
    print(f"memory budget {args.memory_budget_gb:g} GB: {'PASS' if ok else 'FAIL'} (peak RSS "
          f"{peak / GB:.2f} GB, {streamed / (args.memory_budget_gb * GB):.1f}x the budget "
          "streamed)")
    return 0 if ok else 1
  return 0


if __name__ == "__main__":
  sys.exit(main(parse_args()))
