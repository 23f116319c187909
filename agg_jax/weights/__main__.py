"""CLI: convert a Keras or PyTorch weight file into a directory that `model.init_from` loads.

  python -m agg_jax.weights convert --source=keras|torch --input=FILE --model=NAME --output=DIR
      [--no-classifier]
"""

import argparse
import os
import sys

from agg_jax import models
from agg_jax.weights import SOURCES, WeightsError, convert, save


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m agg_jax.weights", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  conv = commands.add_parser("convert", help="import a weight file")
  conv.add_argument("--source", required=True, choices=SOURCES)
  conv.add_argument("--input", required=True, help="a .weights.h5/.keras/.h5 or .pth/.safetensors")
  conv.add_argument("--model", required=True, choices=models.list_models())
  conv.add_argument("--output", required=True, help="directory to write")
  conv.add_argument("--no-classifier", action="store_true",
                    help="the file has no 1000-class layer (Keras *_notop.h5)")
  args = parser.parse_args(argv)
  if not os.path.isfile(args.input):
    print(f"error: --input {args.input} does not exist", file=sys.stderr)
    return 2
  try:
    variables = convert(args.source, args.input, args.model,
                        classifier=not args.no_classifier)
  except WeightsError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  save(args.output, args.model, variables, source=args.source,
       input=os.path.abspath(args.input))
  print(f"{args.model}: {models.count_params(variables['params']):,} parameters + "
        f"{models.count_params(variables.get('batch_stats', {})):,} batch-norm statistics "
        f"from {args.input} -> {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
