"""FaceForensics++ (paper Table II): train on FaceSwap against the originals, test on all four.

See configs/faceforensics.py for the recipe. Prepare the data once (the official download's
folder; c23 by default), then train and test:

  python -m agg_jax.datasets build faceforensics --manual_dir=FaceForensics++ --config=c23
  python -m agg_jax.main --config=configs/ff_fs.py --workdir=runs/ff_fs
"""

from configs import faceforensics


def get_config():
  return faceforensics.make("faceswap")
