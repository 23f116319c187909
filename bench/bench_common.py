"""What several benchmarks build the same way: the detector's jitted training step on a
synthetic batch, a module's jitted forward and backward pass, alternating timed rounds, a
process's peak resident memory, torchvision on the CPU torch. Imported by the scripts in bench/
(their own folder is on sys.path when run as `python bench/<script>.py`)."""

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from agg_jax import cpu_defaults, models, sharding, train


def synthetic_train_step(config, size: int, batch_size: int, model=None):
  """(state, step, batch): the project's train step for the model `config.model` describes (or
  `model`), its initial state and a batch of random uint8 images with alternating labels, all
  on the mesh of `config.mesh`. The step compiles on its first call as the training loop's does
  (train.compiled_train_step: what compiling used goes back to the system before it runs)."""
  mesh = sharding.make_mesh(config.mesh)
  model = model if model is not None else models.from_config(config.model)
  state, shardings = train.init_state(model, train.create_optimizer(config), config, mesh,
                                      (size, size, 3))
  rng = np.random.default_rng(0)
  batch = sharding.global_batch({
      "images": rng.integers(0, 256, (batch_size, size, size, 3), np.uint8),
      "labels": (np.arange(batch_size) % 2).astype(np.float32)}, mesh)
  compiled = []

  def step(state, batch):
    if not compiled:
      compiled.append(train.compiled_train_step(mesh, shardings, state, batch))
    return compiled[0](state, batch)
  return state, step, batch


def jit_training(fn, **jit_kwargs):
  """`fn` jitted as the training step is compiled (cpu_defaults.training_compiler_options), so
  that a benchmark's own gradient programs are scheduled like the step they stand in for."""
  return jax.jit(fn, compiler_options=cpu_defaults.training_compiler_options(jax.devices()),
                 **jit_kwargs)


def module_grad(module, input_shape, **apply_kwargs):
  """(jitted function, its arguments): d sum(y^2) / d (params, x) of `module` on a random
  float32 input of `input_shape`, batch statistics (if any) of the batch."""
  x = jax.random.normal(jax.random.key(0), input_shape, jnp.float32)
  variables = module.init(jax.random.key(1), x, **apply_kwargs)

  def loss(params, x):
    y, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"],
                        **apply_kwargs)
    return jnp.sum(jnp.square(y))
  return jit_training(jax.grad(loss, argnums=(0, 1))), (variables["params"], x)


def alternating_medians(calls: dict, rounds: int, steps: int) -> dict:
  """Seconds per call of each of `calls` (name -> function): each is called once (compiling)
  and timed once (warm-up), then `rounds` rounds time `steps` calls of each in turn; the median
  round of each."""
  def timed(call) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      call()
    return (time.perf_counter() - start) / steps

  for call in calls.values():
    call()
    timed(call)
  times = {name: [] for name in calls}
  for _ in range(rounds):
    for name, call in calls.items():
      times[name].append(timed(call))
  return {name: float(np.median(seconds)) for name, seconds in times.items()}


def peak_resident_gb() -> float:
  """This process's peak resident size in GB (VmHWM: since its exec, unlike the ru_maxrss of a
  child, which counts the parent's pages at fork time)."""
  try:
    with open("/proc/self/status") as status:
      for line in status:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # not Linux


def import_torchvision():
  """torchvision without its C++ extension: the CPU torch that installs here has no CUDA, and
  torchvision's wheel on PyPI is built for CUDA torch; only its detection operators (not used
  here) need the extension, and registering their schemas lets torchvision import."""
  import torch
  if not hasattr(torch.ops.torchvision, "nms"):
    try:
      import torchvision  # noqa: F401
    except (RuntimeError, OSError, ImportError):
      library = torch.library.Library("torchvision", "DEF")
      for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
      import_torchvision.library = library  # registrations live as long as their Library
  import torchvision
  return torch, torchvision
