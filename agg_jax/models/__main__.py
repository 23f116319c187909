"""Lists the backbones, or prints one backbone's block output shapes at an input size.

  python -m agg_jax.models                        # every backbone with its parameter count
  python -m agg_jax.models efficientnetv2_s --size=256   # each sown block's output shape
"""

import argparse
import sys

import jax
import jax.numpy as jnp

from agg_jax import models


def block_shapes(name: str, size: int) -> dict[str, tuple[int, ...]]:
  """Sown block name -> output shape (batch 1) at a `size` x `size` input, without computing."""
  model = models.create_backbone(name)
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  _, state = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["intermediates"]),
                            variables, images)
  return {block: tuple(value[0].shape) for block, value in state["intermediates"].items()}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m agg_jax.models", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", nargs="?", choices=models.list_models())
  parser.add_argument("--size", type=int, default=256, help="input height and width")
  args = parser.parse_args(argv)
  if args.name is None:
    for name, count in models.list_models(with_params=True).items():
      print(f"{name:24s} {count:>12,d} parameters")
    return 0
  backbone = models.create_backbone(args.name)
  print(f"{args.name}: {models.backbone_param_count(args.name):,} parameters; blocks at "
        f"{args.size}x{args.size}:")
  stages = dict(zip(backbone.block_names(), backbone.block_stages()))
  for block, shape in block_shapes(args.name, args.size).items():
    print(f"  {block}  stage {stages[block]}  {'x'.join(map(str, shape[1:]))}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
