"""CLI: convert a Keras or PyTorch weight file into a directory that `model.init_from` loads.

  python -m agg_jax.weights convert --source=keras|torch --input=FILE --model=NAME --output=DIR
      [--noclassifier]

Exit status and errors follow agg_jax/cli.py: a file that cannot be read or does not fit the
model is one line naming the file and the first bad key, status 2, and no output is written.
"""

import os

from absl import flags

from agg_jax import cli, models
from agg_jax.weights import SOURCES, WeightsError, convert, save

PROG = "agg_jax.weights"
COMMANDS = ("convert",)

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", None, list(SOURCES), "Who wrote the file.")
flags.DEFINE_string("input", None, "A .weights.h5/.keras/.h5 or .pth/.safetensors file.")
flags.DEFINE_enum("model", None, models.list_models(), "The backbone the weights are for.")
flags.DEFINE_string("output", None, "Directory to write.")
flags.DEFINE_bool("classifier", True,
                  "The file has the 1000-class layer (--noclassifier: Keras *_notop.h5).")


def main(argv: list[str]) -> int:
  if argv[1:] != ["convert"]:
    raise cli.UsageError(f"give one command, one of {COMMANDS} (got {argv[1:] or 'none'})")
  for name in ("source", "input", "model", "output"):
    if FLAGS[name].value is None:
      raise cli.UsageError(f"convert needs --{name}")
  if not os.path.isfile(FLAGS.input):
    raise cli.UsageError(f"--input={FLAGS.input}: no such file")
  try:
    variables = convert(FLAGS.source, FLAGS.input, FLAGS.model, classifier=FLAGS.classifier)
  except WeightsError as e:
    raise cli.UsageError(str(e)) from None
  save(FLAGS.output, FLAGS.model, variables, source=FLAGS.source,
       input=os.path.abspath(FLAGS.input))
  print(f"{FLAGS.model}: {models.count_params(variables['params']):,} parameters + "
        f"{models.count_params(variables.get('batch_stats', {})):,} batch-norm statistics "
        f"from {FLAGS.input} -> {FLAGS.output}")
  return cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main, PROG)
