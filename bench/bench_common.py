"""What several benchmarks build the same way: the detector's jitted training step on a
synthetic batch, a process's peak resident memory, torchvision on the CPU torch. Imported by the
scripts in bench/ (their own folder is on sys.path when run as `python bench/<script>.py`)."""

import resource

import numpy as np

from agg_jax import models, sharding, train


def synthetic_train_step(config, size: int, batch_size: int, model=None):
  """(state, step, batch): the project's jitted train step (train.make_train_step) for the
  model `config.model` describes (or `model`), its initial state and a batch of random uint8
  images with alternating labels, all on the mesh of `config.mesh`."""
  mesh = sharding.make_mesh(config.mesh)
  model = model if model is not None else models.from_config(config.model)
  state, shardings = train.init_state(model, train.create_optimizer(config), config, mesh,
                                      (size, size, 3))
  rng = np.random.default_rng(0)
  batch = sharding.global_batch({
      "images": rng.integers(0, 256, (batch_size, size, size, 3), np.uint8),
      "labels": (np.arange(batch_size) % 2).astype(np.float32)}, mesh)
  return state, train.make_train_step(mesh, shardings), batch


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
