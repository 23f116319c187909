"""FaceForensics++ (paper Table II): train on one manipulation against the originals, test on
all four. The four experiment files (ff_df.py, ff_f2f.py, ff_fs.py, ff_nt.py) call `make`.

The paper's model (EfficientNetV2-S, 256x256, the aggregation head; configs/default.py) on faces
prepared by the faceforensics builder (the first 100 frames of every video, aligned as in
section IV-A), c23 by default (`data.dataset="faceforensics/c40"` for another compression; build
it first). Frame and video level metrics are both reported (frame scores averaged per video).

Chosen here, as the paper does not give them: AdamW at 1e-4 with 1,000 warm-up steps and a
cosine decay over 30,000 steps of 32 faces (half real, half fake), weight decay 1e-5, gradient
norm clipped at 1, flips only; validation on the official val split every 1,000 steps selects
the checkpoint. Start from ImageNet weights with `model.init_from` (README: pretrained weights).

The paper's comparisons are one override away:
  the logits baseline  --config.model.head=logits
  Xception++           --config.model.name=xception --config.data.image_size=256
"""

from configs import default

METHODS = {"df": "deepfakes", "f2f": "face2face", "fs": "faceswap", "nt": "neuraltextures"}


def make(method: str):
  config = default.get_config()
  default.use_face_dataset(config, "faceforensics/c23", method, METHODS.values())
  config.train.num_steps = 30_000
  config.train.warmup_steps = 1_000
  config.train.eval_every = 1_000
  config.train.checkpoint_every = 1_000
  config.train.log_every = 50
  return config
