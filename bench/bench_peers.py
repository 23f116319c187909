"""agg_jax against torchvision and Keras on the same CPU, in the same run: images per second of
inference or of a training step (AdamW), compile time and peak resident memory.

Sides (--sides):
  detector       agg_jax's whole detector (backbone + aggregation head), the project's own jitted
                 train step (train.make_train_step) or prediction (evaluate.make_predict_fn)
  backbone       agg_jax's backbone alone with its 1000-class top, cross-entropy
  torch          torchvision's backbone, eager (CPU torch; cross-entropy, AdamW)
  torch_compile  the same under torch.compile
  keras          Keras' application of the same backbone on the JAX backend (jit_compile)
Speed: each side runs in a process of its own (two programs' buffers in one heap slowed one
another: EfficientNet-Lite0's detector trained at half speed next to its bare backbone). After
its first call and a warm-up, --rounds alternating rounds of --steps calls per side, one side
at a time while the others wait; the median round per side, and each row's ratio to the torch
sides of the same run. Memory (--memory): each side once more in a fresh process, whose peak
resident size (ru_maxrss of that process) and first call (compile; for agg_jax with an empty
and then a filled compilation cache) are reported.

  python bench/bench_peers.py --task=infer
  python bench/bench_peers.py --task=train --memory
  python bench/bench_peers.py --model=efficientnet_lite0 --batch=32 --task=train
  python bench/bench_peers.py --model=mobilenetv2 --size=128 --batch=32 --task=train

The peers need `make bench-install` (torchvision and Keras in the project's .venv).
bench/README.md holds the latest table.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import agg_jax  # noqa: E402,F401  (its CPU defaults, before JAX starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402

import bench_common  # noqa: E402
from agg_jax import evaluate, large_blocks, models, sharding, train  # noqa: E402
from configs import default as default_config  # noqa: E402

# Each agg_jax backbone and its counterparts: torchvision's model, Keras' application. For Lite0
# neither has the model itself; EfficientNet-B0 is the nearest (Lite0 without squeeze-excite,
# with ReLU6: fewer operations than B0).
PEERS = {"efficientnetv2_s": ("efficientnet_v2_s", "EfficientNetV2S"),
         "efficientnet_lite0": ("efficientnet_b0", "EfficientNetB0"),
         "mobilenetv2": ("mobilenet_v2", "MobileNetV2")}
SIDES = ("detector", "backbone", "torch", "torch_compile", "keras")
AGG_JAX_SIDES = ("detector", "backbone")

flags.DEFINE_enum("model", "efficientnetv2_s", list(PEERS), "agg_jax backbone.")
flags.DEFINE_integer("size", 256, "Input side.")
flags.DEFINE_integer("batch", 16, "Batch size.")
flags.DEFINE_enum("task", "train", ["train", "infer"], "Training step or inference.")
flags.DEFINE_list("sides", ["detector", "backbone", "torch", "torch_compile", "keras"],
                  f"Which of {SIDES} to run.")
flags.DEFINE_integer("steps", 3, "Timed calls per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the median round is reported.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Computation dtype of every side (agg_jax: model.dtype; torch: autocast; "
                  "Keras: the mixed_bfloat16 policy).")
flags.DEFINE_bool("memory", False, "Also measure each side's peak memory and compile time, "
                  "each in a process of its own.")
flags.DEFINE_string("serve", "", "Internal: build this one side and print its figures, then "
                    "time a round of it for each line read from stdin.")
flags.DEFINE_string("compilation_cache", "", "Internal: agg_jax's compilation cache folder.")
FLAGS = flags.FLAGS


def _labels(n: int) -> np.ndarray:
  return np.arange(n) % 2


class AggJax:
  """agg_jax's detector (`head="aggregation"`) or bare backbone (`head=None`)."""

  def __init__(self, head):
    config = default_config.get_config()
    config.model.name, config.model.dtype = FLAGS.model, FLAGS.dtype
    self.mesh = sharding.make_mesh(config.mesh)
    model = models.create(FLAGS.model, head=head, dtype=jnp.dtype(FLAGS.dtype))
    if head is not None:
      self.state, self.train_step, self.batch = bench_common.synthetic_train_step(
          config, FLAGS.size, FLAGS.batch, model)
      predict = evaluate.make_predict_fn(model, self.mesh)
    else:
      self.state = self._backbone_state(model, config)
      images = np.random.default_rng(0).integers(
          0, 256, (FLAGS.batch, FLAGS.size, FLAGS.size, 3), np.uint8)
      self.batch = {"images": jnp.asarray(images), "labels": jnp.asarray(_labels(FLAGS.batch))}
      self.train_step = self._backbone_train_step(model)
      predict = jax.jit(lambda variables, images: model.apply(variables, images,
                                                              train=False)[0])
    self.infer = lambda: predict({"params": self.state.params,
                                  "batch_stats": self.state.batch_stats}, self.batch["images"])

  @staticmethod
  def _backbone_state(model, config):
    variables = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, FLAGS.size, FLAGS.size, 3),
                                                             jnp.uint8), train=False))(
        jax.random.key(0))
    return train.TrainState.create(apply_fn=model.apply, params=variables["params"],
                                   tx=train.create_optimizer(config),
                                   batch_stats=variables["batch_stats"], rng=jax.random.key(1))

  @staticmethod
  def _backbone_train_step(model):
    def step(state, batch):
      def loss_fn(params):
        (logits, _), updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                      batch["images"], train=True, mutable=["batch_stats"],
                                      rngs={"dropout": state.rng})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
        return loss, updates
      (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
      return state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"]), loss
    return bench_common.jit_training(step, donate_argnums=0)

  def __call__(self):
    if FLAGS.task == "infer":
      jax.block_until_ready(self.infer())
    else:
      self.state, metrics = self.train_step(self.state, self.batch)
      jax.block_until_ready(metrics)


class Torch:
  """torchvision's backbone, eager or under torch.compile."""

  def __init__(self, compiled: bool):
    torch, torchvision = bench_common.import_torchvision()
    self.torch = torch
    torch.manual_seed(0)
    model = getattr(torchvision.models, PEERS[FLAGS.model][0])()
    model.train(FLAGS.task == "train")
    self.model = torch.compile(model) if compiled else model
    self.images = torch.randn(FLAGS.batch, 3, FLAGS.size, FLAGS.size)
    self.labels = torch.from_numpy(_labels(FLAGS.batch))
    self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    self.autocast = torch.autocast("cpu", torch.bfloat16, enabled=FLAGS.dtype == "bfloat16")

  def __call__(self):
    torch = self.torch
    if FLAGS.task == "infer":
      with torch.inference_mode(), self.autocast:
        self.model(self.images)
      return
    self.optimizer.zero_grad(set_to_none=True)
    with self.autocast:
      loss = torch.nn.functional.cross_entropy(self.model(self.images), self.labels)
    loss.backward()
    self.optimizer.step()


class Keras:
  """Keras' application of the backbone on the JAX backend (random weights, its own input
  rescaling), `train_on_batch` with AdamW and cross-entropy, or `predict_on_batch`."""

  def __init__(self):
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    if FLAGS.dtype == "bfloat16":
      keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    self.model = getattr(keras.applications, PEERS[FLAGS.model][1])(
        weights=None, input_shape=(FLAGS.size, FLAGS.size, 3))
    self.model.compile(optimizer=keras.optimizers.AdamW(1e-3), jit_compile=True,
                       loss=keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(0)
    self.images = rng.uniform(0, 255, (FLAGS.batch, FLAGS.size, FLAGS.size, 3)).astype(np.float32)
    self.labels = _labels(FLAGS.batch)

  def __call__(self):
    if FLAGS.task == "infer":
      np.asarray(self.model.predict_on_batch(self.images))
    else:
      self.model.train_on_batch(self.images, self.labels)


def make_side(name: str):
  return {"detector": lambda: AggJax("aggregation"), "backbone": lambda: AggJax(None),
          "torch": lambda: Torch(compiled=False), "torch_compile": lambda: Torch(compiled=True),
          "keras": Keras}[name]()


def first_call(name: str):
  """(the side, seconds of its first call: tracing and compilation included)."""
  side = make_side(name)
  start = time.perf_counter()
  side()
  return side, time.perf_counter() - start


def timed(side) -> float:
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    side()
  return (time.perf_counter() - start) / FLAGS.steps


# Marks the lines a serving process writes for the benchmark, among whatever else reaches stdout.
REPLY = "@bench "


def serve(name: str) -> None:
  """`--serve`: the side's first call and a warm-up, its figures so far (first call, peak
  resident memory), then one timed round per line of stdin. agg_jax's sides run with the
  allocator for XLA's large blocks, as agg_jax.main does; the peers as they come."""
  if name in AGG_JAX_SIDES:
    large_blocks.start_preloaded()
  side, first_s = first_call(name)
  timed(side)  # warm-up: the first rounds after a compile run slow
  print(REPLY + json.dumps({"first_call_s": first_s,
                            "peak_gb": bench_common.peak_resident_gb()}), flush=True)
  for _ in sys.stdin:
    print(REPLY + json.dumps({"seconds": timed(side)}), flush=True)


class ServedSide:
  """One side in a process of its own (`--serve`), timed a round at a time; `figures` are its
  first call and peak memory once built."""

  def __init__(self, name: str, cache: str = ""):
    self.name = name
    argv = [sys.executable, os.path.abspath(__file__), f"--serve={name}",
            f"--compilation_cache={cache}",
            *[f"--{flag}={getattr(FLAGS, flag)}" for flag in ("model", "size", "batch", "task",
                                                              "dtype", "steps")]]
    self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
    self.figures = self._reply()

  def _reply(self) -> dict:
    for line in self.process.stdout:
      if line.startswith(REPLY):
        return json.loads(line[len(REPLY):])
    raise RuntimeError(f"{self.name} stopped (exit status {self.process.wait()}); its errors "
                       "are above")

  def timed(self) -> float:
    self.process.stdin.write("round\n")
    self.process.stdin.flush()
    return self._reply()["seconds"]

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def run_alone(name: str, cache: str = "") -> dict:
  """One side built in a fresh process: its first call and peak resident memory (GB)."""
  side = ServedSide(name, cache)
  side.close()
  return side.figures


def main(_):
  if FLAGS.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  if FLAGS.serve:
    serve(FLAGS.serve)
    return
  unknown = set(FLAGS.sides) - set(SIDES)
  if unknown:
    raise app.UsageError(f"--sides: unknown {sorted(unknown)}; use some of {SIDES}")
  torch_sides = sorted(set(FLAGS.sides) & {"torch", "torch_compile"})
  if torch_sides and importlib.util.find_spec("torchvision") is None:
    raise app.UsageError(f"--sides={','.join(torch_sides)} needs torchvision, which is not "
                         "installed: run `make bench-install`")
  print(f"{FLAGS.task}: {FLAGS.model} at {FLAGS.size}x{FLAGS.size}, batch {FLAGS.batch}, "
        f"{FLAGS.dtype}, {jax.devices()[0].device_kind} ({os.cpu_count()} CPUs); median of "
        f"{FLAGS.rounds} alternating rounds of {FLAGS.steps} calls after a warm-up", flush=True)
  sides = {}
  try:
    for name in FLAGS.sides:  # one at a time: no compile runs beside another side
      sides[name] = ServedSide(name)
    rounds = {name: [] for name in sides}
    for _ in range(FLAGS.rounds):
      for name, side in sides.items():
        rounds[name].append(side.timed())
  finally:
    for side in sides.values():
      side.close()
  speed = {name: FLAGS.batch / float(np.median(times)) for name, times in rounds.items()}
  memory = {}
  if FLAGS.memory:
    for name in FLAGS.sides:
      if name in ("detector", "backbone"):
        with tempfile.TemporaryDirectory() as cache:
          cold = run_alone(name, cache)
          memory[name] = {**run_alone(name, cache), "cold_s": cold["first_call_s"]}
      else:
        memory[name] = run_alone(name)
  peers = [name for name in ("torch", "torch_compile") if name in speed]
  print(f"{'side':14s} {'images/s':>9s} " + " ".join(f"{'vs ' + p:>17s}" for p in peers)
        + ("   peak GB  first call s (cold / cached)" if memory else ""))
  for name in sides:
    line = f"{name:14s} {speed[name]:9.2f} " + " ".join(
        f"{speed[name] / speed[p]:16.2f}x" for p in peers)
    if name in memory:
      figures = memory[name]
      cold = f"{figures['cold_s']:.1f} / " if "cold_s" in figures else ""
      line += f"   {figures['peak_gb']:7.2f}  {cold}{figures['first_call_s']:.1f}"
    print(line, flush=True)


if __name__ == "__main__":
  app.run(main)
