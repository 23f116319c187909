"""The embedded default: train on one synthetic generator, test on all three, in minutes on a CPU.

A scaled-down EfficientNetV2 (the six stages of EfficientNetV2-S, 12 blocks, half width) with the
paper's aggregation head, on 64x64 crops of scikit-image's photographs and fakes made from them
by the project's three generators (agg_jax/data/generators.py). `make demo` runs:

  python -m agg_jax.main --config=configs/demo.py --workdir=runs/demo
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "efficientnetv2_mini"
  config.model.hidden = (64, 64)
  config.model.drop_path_rate = 0.0
  config.data.image_size = 64
  config.train.batch_size = 32
  config.train.learning_rate = 1e-3
  config.train.num_steps = 300
  config.train.warmup_steps = 30
  config.train.eval_every = 100
  config.train.checkpoint_every = 100
  return config
