"""The command-line convention every agg_jax command follows.

- Flags are absl flags; `run(main, prog)` parses them and calls `main(argv)`.
- A mistake of the user (a flag, a config value, a path) is one line on standard error,
  `<prog>: error: <what is wrong, naming the flag, key or file>`, never a traceback, and the
  command stops before doing anything.
- Exit status means the same everywhere:

  ======================  ==============================================================
  0  `EXIT_OK`            everything asked for was done
  1  `EXIT_FAILED`        the command ran but not everything was done (a failed run, an
                          input that could not be processed); what finished is kept
  2  `EXIT_USAGE`         a usage mistake: nothing was done
  75 `EXIT_PREEMPTED`     stopped by a preemption notice (SIGTERM) after saving a checkpoint;
                          the same command resumes (75 is EX_TEMPFAIL: try again)
  130 `EXIT_INTERRUPTED`  interrupted (Ctrl-C); what finished is kept
  ======================  ==============================================================

- Library code raises `UsageError` (or `config_validation.ConfigError`) for such mistakes; `run`
  turns them into the one line and status 2.
- Logging is absl logging, at WARNING unless `--verbosity` is given (`--verbosity=0` shows
  INFO): libraries' INFO lines would drown progress bars and results.
"""

import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags, logging

from agg_jax.config_validation import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130


class UsageError(Exception):
  """A mistake on the command line; the message names the flag or path and what is wrong."""


def fail(prog: str, message: str, status: int = EXIT_USAGE) -> NoReturn:
  """Prints `<prog>: error: <message>` (one line) and exits with `status`."""
  print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(status)


def _flag_error_line(error: Exception, argv: Sequence[str]) -> str:
  """One line for an error absl or ml_collections raised while parsing `argv`."""
  text = str(error)
  if isinstance(error, (AttributeError, KeyError)):  # a --config.<key> override naming no key
    text = text.encode().decode("unicode_escape").strip("'\"")
    key = re.match(r"'?([^'\n]+)", text).group(1)
    bad = [arg for arg in argv if arg.startswith("--config.") and
           re.search(rf"\.{re.escape(key)}(=|\.|$)", arg.split("=")[0] + "=")]
    hint = " ".join(line.strip() for line in text.splitlines()[1:])
    return (f"{bad[0] if bad else 'a --config override'}: the config has no key {key!r}. "
            f"{hint}").rstrip()
  if "Traceback (most recent call last)" in text:  # an exception raised inside a config file
    head = text.split("\n", 1)[0].rstrip(":").rstrip()
    cause = [line for line in text.splitlines() if line.strip()][-1].strip()
    return f"{head}: {cause}"
  return text


def parse_flags(argv: list[str], prog: str) -> list[str]:
  """absl flag parsing that reports a bad flag, value or override in one line (status 2)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    fail(prog, _flag_error_line(e, argv))
  except SyntaxError as e:  # a config file that is not Python
    fail(prog, f"{e.filename}, line {e.lineno}: {e.msg}: {(e.text or '').strip()}")


def run(main: Callable[[list[str]], int | None], prog: str) -> NoReturn:
  """Runs an absl `main` under this convention (see the module docstring)."""

  def guarded(argv: list[str]) -> int:
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv) or EXIT_OK
    except (UsageError, ConfigError) as e:
      fail(prog, str(e))
    except BrokenPipeError:  # the reader of our output went away (`... | head`)
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
      return EXIT_OK
    except KeyboardInterrupt:
      print(f"\n{prog}: interrupted; what finished is kept, the same command resumes",
            file=sys.stderr)
      return EXIT_INTERRUPTED

  app.run(guarded, flags_parser=lambda argv: parse_flags(argv, prog))
