"""Lists the backbones, or prints one backbone's block output shapes at an input size.

  python -m agg_jax.models                                # every backbone, parameter counts
  python -m agg_jax.models efficientnetv2_s --size=256    # each sown block's output shape
"""

import jax
import jax.numpy as jnp
from absl import flags

from agg_jax import cli, models

PROG = "agg_jax.models"

FLAGS = flags.FLAGS
flags.DEFINE_integer("size", 256, "Input height and width.")


def block_shapes(name: str, size: int) -> dict[str, tuple[int, ...]]:
  """Sown block name -> output shape (batch 1) at a `size` x `size` input, without computing."""
  model = models.create_backbone(name)
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  _, state = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["intermediates"]),
                            variables, images)
  return {block: tuple(value[0].shape) for block, value in state["intermediates"].items()}


def main(argv: list[str]) -> int:
  names = argv[1:]
  if len(names) > 1 or (names and names[0] not in models.list_models()):
    raise cli.UsageError(f"{' '.join(names)}: give one backbone name or none; known: "
                         f"{', '.join(models.list_models())}")
  if FLAGS.size < 32:
    raise cli.UsageError(f"--size={FLAGS.size}: must be at least 32")
  if not names:
    for name, count in models.list_models(with_params=True).items():
      print(f"{name:24s} {count:>12,d} parameters")
    return cli.EXIT_OK
  name = names[0]
  backbone = models.create_backbone(name)
  print(f"{name}: {models.backbone_param_count(name):,} parameters; blocks at "
        f"{FLAGS.size}x{FLAGS.size}:")
  stages = dict(zip(backbone.block_names(), backbone.block_stages()))
  for block, shape in block_shapes(name, FLAGS.size).items():
    print(f"  {block}  stage {stages[block]}  {'x'.join(map(str, shape[1:]))}")
  return cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main, PROG)
