"""The paper's model and recipe: EfficientNetV2-S at 256x256 with the aggregation head.

Sections III-B and IV of the paper: every one of the 40 blocks is pooled and projected to 10
primitives by a 3-layer MLP, one dense layer over the 400 primitives gives the score. Pool window
7 on every stage with hidden width 256 gives an analysis part of 15.0M parameters, near the
paper's 16M; the paper's windows (14 on the fused-MBConv stages, 7 later) are
`model.pool_window=(14, 14, 14, 7, 7, 7)` (8.0M). Experiments import this file and override.

  python -m agg_jax.main --config=configs/default.py --workdir=runs/default
"""

import ml_collections

from agg_jax.analysis import settings as analysis_settings


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = "efficientnetv2_s"
  config.model.head = "aggregation"  # or "logits": the baseline head on the 1000 logits
  config.model.blocks = "all"  # or a tuple of block indices
  config.model.pool_window = 7  # one int, or one per stage
  config.model.hidden = (256, 256)
  config.model.num_primitives = 10
  # Computation dtype: "bfloat16" is mixed precision (parameters, batch statistics, logits and
  # loss stay float32; README: mixed precision), for TPUs, GPUs and CPUs with bfloat16 units.
  config.model.dtype = "float32"
  config.model.drop_path_rate = 0.2
  # What the backward pass recomputes instead of keeping: "none", "conv" (each block keeps its
  # convolutions' outputs) or "block" (each block keeps only its input). Less memory, more time.
  config.model.remat = "none"
  # Pretrained backbone: a directory written by `python -m agg_jax.weights convert` ("": random).
  config.model.init_from = ""

  config.data = ml_collections.ConfigDict()
  config.data.source = "demo"
  config.data.train_set = "upsample"
  config.data.image_size = 256
  config.data.train_per_class = 512
  config.data.val_per_class = 128
  config.data.test_per_class = 256
  config.data.seed = 0
  # The input pipeline (every source): processes that read, decode and augment training batches
  # (0: the training process itself), and the training augmentation (Wang et al., CVPR 2020:
  # blur and JPEG each with probability p; "CNN (p=0.1)" in Table I).
  config.data.workers = 0
  config.data.augment = ml_collections.ConfigDict(
      {"flip": True, "blur_prob": 0.0, "jpeg_prob": 0.0})

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32
  config.train.eval_batch_size = 64
  config.train.num_steps = 2000
  config.train.learning_rate = 1e-4
  config.train.end_lr_factor = 0.01
  config.train.warmup_steps = 100
  config.train.weight_decay = 1e-5
  config.train.grad_clip_norm = 1.0
  config.train.log_every = 10
  config.train.eval_every = 200
  config.train.checkpoint_every = 200

  # What `--mode=analyze` computes (agg_jax/analysis/settings.py explains each field).
  config.analysis = analysis_settings.defaults()

  # Mesh axes and sizes (-1: the remaining devices); parameter sharding rules, first match wins
  # ((regex, "replicate" | "fsdp"), ...), or a preset of agg_jax/sharding.py (("fsdp",) in a
  # config file): "fsdp" splits the large kernels and their Adam moments over the "fsdp" axis.
  # E.g. on 8 devices: --config.mesh='(("data",2),("fsdp",4))' --config.sharding_rules=fsdp
  config.mesh = (("data", -1),)
  config.sharding_rules = ((".*", "replicate"),)
  return config


def use_face_dataset(config: ml_collections.ConfigDict, dataset: str, train_set: str,
                     test_sets, *, real=(), test_real=(), image_size: int = 256) -> None:
  """Points `config.data` at a prepared face dataset (the "tfds" source; its fields are
  explained in agg_jax/data/tfds_source.py), keeping the pipeline's augmentation settings."""
  config.data = ml_collections.ConfigDict({
      "source": "tfds", "data_dir": "~/tensorflow_datasets", "dataset": dataset,
      "train_set": train_set, "train_mix": (), "test_sets": tuple(test_sets),
      "real": tuple(real), "test_real": tuple(test_real), "image_size": image_size,
      "crop": 1.0, "max_padding": 1.0, "workers": 2, "augment": config.data.augment})
