"""FaceForensics++ (paper Table II): train on NeuralTextures against the originals, test on all
four.

See configs/faceforensics.py for the recipe. Prepare the data once (the official download's
folder; c23 by default), then train and test:

  python -m agg_jax.datasets build faceforensics --manual_dir=FaceForensics++ --config=c23
  python -m agg_jax.main --config=configs/ff_nt.py --workdir=runs/ff_nt
"""

from configs import faceforensics


def get_config():
  return faceforensics.make("neuraltextures")
