"""`ConfigError` and `require`: how every module states a rule about its config fields.

Each module checks the fields it reads, in one function (`models.check_config`,
`data.check_config`, ...); a run checks them all before any compute (`run.validate`). The
message names the key, its value and what would work.
"""

import os

import ml_collections
import numpy as np


class ConfigError(ValueError):
  """A config key holds a value that cannot work."""


def require(condition: bool, key: str, value, expectation: str) -> None:
  """Raises ConfigError("config.<key>=<value>: <expectation>") unless `condition` holds."""
  if not condition:
    raise ConfigError(f"config.{key}={value!r}: {expectation}")


def validate(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Raises ConfigError on the first key whose value is unusable."""
  from agg_jax import data, models  # pylint: disable=import-outside-toplevel
  from agg_jax.data import demo  # pylint: disable=import-outside-toplevel
  m, d, t = config.model, config.data, config.train
  require(m.name in models.list_models(), "model.name", m.name,
           f"unknown model; known: {', '.join(models.list_models())}")
  require(m.head in models.HEADS, "model.head", m.head, f"use one of {models.HEADS}")
  require(m.dtype in ("float32", "bfloat16", "float16"), "model.dtype", m.dtype,
           "use float32, bfloat16 or float16")
  require(all(int(h) > 0 for h in m.hidden), "model.hidden", m.hidden, "widths must be > 0")
  require(m.num_primitives > 0, "model.num_primitives", m.num_primitives, "must be > 0")
  require(0.0 <= m.drop_path_rate < 1.0, "model.drop_path_rate", m.drop_path_rate,
           "must be in [0, 1)")
  windows = [m.pool_window] if isinstance(m.pool_window, int) else list(m.pool_window)
  require(all(int(w) > 0 for w in windows), "model.pool_window", m.pool_window,
           "windows must be > 0")
  if m.head == "aggregation":
    backbone = models.create_backbone(m.name)
    try:
      models.resolve_windows(backbone.block_names(), backbone.block_stages(), m.blocks,
                             m.pool_window)
    except ValueError as e:
      raise ConfigError(str(e)) from None

  if m.init_from:
    require(os.path.isdir(m.init_from), "model.init_from", m.init_from,
             "not a directory (write one with `python -m agg_jax.weights convert`)")

  require(d.source in data.SOURCES, "data.source", d.source, f"use one of {data.SOURCES}")
  if d.source == "demo":
    require(d.train_set in demo.GENERATORS, "data.train_set", d.train_set,
             f"the demo's training sets are {demo.GENERATORS}")
  require(d.image_size >= 32 and d.image_size % 16 == 0, "data.image_size", d.image_size,
           "must be a multiple of 16, at least 32")
  for key in ("train_per_class", "val_per_class", "test_per_class"):
    require(d[key] > 0, f"data.{key}", d[key], "must be > 0")

  for key in ("batch_size", "eval_batch_size", "num_steps", "log_every", "eval_every",
              "checkpoint_every"):
    require(t[key] > 0, f"train.{key}", t[key], "must be > 0")
  require(t.batch_size % 2 == 0, "train.batch_size", t.batch_size,
           "must be even (class-balanced batches)")
  require(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "must be > 0")
  require(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0")
  require(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, "must be >= 0")

  require(all(len(axis) == 2 and isinstance(axis[0], str) for axis in config.mesh), "mesh",
           config.mesh, "must be ((name, size), ...), e.g. (('data', -1),)")
  for pattern, rule in config.sharding_rules:
    require(rule in ("replicate", "fsdp"), "sharding_rules", (pattern, rule),
             "rule must be 'replicate' or 'fsdp'")
  if device_count is not None:
    sizes = [size for _, size in config.mesh]
    fixed = int(np.prod([s for s in sizes if s != -1]))
    require(device_count % fixed == 0, "mesh", config.mesh,
             f"does not fit the {device_count} devices")
    for key in ("batch_size", "eval_batch_size"):
      require(t[key] % device_count == 0, f"train.{key}", t[key],
               f"must be a multiple of the device count ({device_count})")
