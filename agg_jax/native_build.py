"""Shared libraries built from the project's C and C++ sources on first use, into
`~/.cache/agg_jax/<name>/<key>/` (`$XDG_CACHE_HOME` if set), the key a hash of everything the
build depends on: a changed source, compiler or processor builds anew, an unchanged one loads
what is there."""

import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile


class BuildError(RuntimeError):
  """A library could not be built; the message has the command and the compiler's output."""


def compiler(variable: str, default: str) -> str | None:
  """The compiler `$variable` names (else `default`), if it is on the PATH."""
  return shutil.which(os.environ.get(variable, default))


# The compiler's variable -> (its default, the language, the Debian package that brings it).
COMPILERS = {"CC": ("cc", "C", "gcc"), "CXX": ("c++", "C++", "g++")}


def built_or_warn(owner: str, source: pathlib.Path, flags: list[str], compiler_variable: str,
                  without: str, depends_on: tuple[str, ...] = ()) -> pathlib.Path | None:
  """`build` with the compiler `$compiler_variable` names (one of COMPILERS, else its default)
  into `cache_dir(source's stem)`; None, after a warning from `owner` that says what happens
  `without` the library, where there is no such compiler or the build fails."""
  default, language, package = COMPILERS[compiler_variable]
  compiler_path = compiler(compiler_variable, default)
  if compiler_path is None:
    logging.warning("%s: no %s compiler (%s) found, so %s; install %s or set $%s", owner,
                    language, os.environ.get(compiler_variable, default), without, package,
                    compiler_variable)
    return None
  try:
    return build(compiler_path, source, flags, cache_dir(source.stem), depends_on)
  except BuildError as error:
    logging.warning("%s: %s\nSo %s.", owner, error, without)
    return None


def cache_dir(name: str) -> pathlib.Path:
  root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(root) / "agg_jax" / name


def build(compiler_path: str, source: pathlib.Path, flags: list[str], output_dir: pathlib.Path,
          depends_on: tuple[str, ...] = ()) -> pathlib.Path:
  """`source` compiled with `flags` into `output_dir/<key>/lib<source's stem>.so` unless it is
  there already; the key hashes the source, the compiler's version, the flags and `depends_on`.
  Raises BuildError with the compiler's message."""
  version = subprocess.run([compiler_path, "--version"], capture_output=True, text=True).stdout
  key = hashlib.sha256("\0".join(
      [source.read_text(), version, " ".join(flags), *depends_on]).encode()).hexdigest()[:16]
  library = output_dir / key / f"lib{source.stem}.so"
  if library.exists():
    return library
  library.parent.mkdir(parents=True, exist_ok=True)
  # Built under a temporary name and renamed: processes that build at once never load half a file.
  with tempfile.NamedTemporaryFile(dir=library.parent, suffix=".so", delete=False) as partial:
    pass
  command = [compiler_path, *flags, str(source), "-o", partial.name]
  result = subprocess.run(command, capture_output=True, text=True)
  if result.returncode != 0:
    os.unlink(partial.name)
    raise BuildError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")
  os.chmod(partial.name, 0o755)  # a temporary file's mode is the owner's alone
  os.replace(partial.name, library)
  return library
