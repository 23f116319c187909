"""`ConfigError` and `require`: how every module states a rule about its config fields.

Each module checks the fields it reads, in one function (`models.check_config`,
`data.check_config`, ...); a run checks them all before any compute (`run.check_config`). The
message names the key, its value and what would work.
"""

import ml_collections


class ConfigError(ValueError):
  """A config key holds a value that cannot work."""


def require(condition: bool, key: str, value, expectation: str) -> None:
  """Raises ConfigError("config.<key>=<value>: <expectation>") unless `condition` holds."""
  if not condition:
    raise ConfigError(f"config.{key}={value!r}: {expectation}")


def require_fields(section: ml_collections.ConfigDict, name: str, fields: tuple[str, ...],
                   reader: str) -> None:
  """Raises ConfigError naming the first of `fields` missing from `config.<name>`."""
  for field in fields:
    if field not in section:
      raise ConfigError(f"config.{name}.{field} is missing: {reader} needs "
                        f"{', '.join(f'{name}.{f}' for f in fields)}")
