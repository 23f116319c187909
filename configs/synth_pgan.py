"""Synthetic faces (paper Table I): train on PGAN against CelebA-HQ, test on the seven sets.

The sets of Chai et al. (ECCV 2020): CelebA-HQ real with PGAN, SGAN, Glow and GMM fakes; FFHQ
real with PGAN, SGAN and SGAN2 fakes. Each is one config of the synthetic_faces builder; prepare
all seven from the released images, then train and test:

  for c in celebahq_pgan celebahq_sgan celebahq_glow celebahq_gmm ffhq_pgan ffhq_sgan ffhq_sgan2; do
    python -m agg_jax.datasets build synthetic_faces --manual_dir=chai_faces --config=$c
  done
  python -m agg_jax.main --config=configs/synth_pgan.py --workdir=runs/synth_pgan

The paper's model (configs/default.py) at 256x256. Chosen here, as the paper does not give
them: AdamW at 1e-4, 1,000 warm-up steps, cosine decay over 20,000 steps of 32 images, flips
only (Wang et al.'s blur+JPEG, the "CNN (p=0.1)" rows: --config.data.augment.blur_prob=0.1
--config.data.augment.jpeg_prob=0.1). Table I leaves the training set's own test set out of
CoV^-1 (`python -m agg_jax.tables --exclude-in-domain`). The logits baseline:
--config.model.head=logits; Xception++: --config.model.name=xception.
"""

from configs import default

TEST_SETS = ("celebahq_pgan", "celebahq_sgan", "celebahq_glow", "celebahq_gmm", "ffhq_pgan",
             "ffhq_sgan", "ffhq_sgan2")


def get_config():
  config = default.get_config()
  test_sets = [f"synthetic_faces/{name}:{name.partition('_')[2]}" for name in TEST_SETS]
  # Trained on the first test set's training partition, named celebahq_pgan as that test set.
  default.use_face_dataset(config, "synthetic_faces/celebahq_pgan", test_sets[0], test_sets)
  config.train.num_steps = 20_000
  config.train.warmup_steps = 1_000
  config.train.eval_every = 1_000
  config.train.checkpoint_every = 1_000
  config.train.log_every = 50
  return config
