"""The run configuration: TOML sections ``[task]``/``[data]``, ``[model]``, ``[optimizer]``,
``[run]``, every key with a default, validated before any rank starts work.

A config is a plain nested dict (``config["optimizer"]["cg_max_iters"]``) resolved from
defaults, then a TOML file, then ``--set SECTION.KEY=VALUE`` overrides, in that order.
Unknown keys are errors that suggest the closest valid key; values are type- and
range-checked with messages that name the key.
"""
from __future__ import annotations

import copy
import difflib
import tomllib
from pathlib import Path
from typing import Any

from dhf.batches import BatchSizes
from dhf.errors import ConfigError
from dhf.schema import CHOICES, RANGES, SCHEMA, check


#: The built-in default job, run when neither the config file nor ``--set`` names a task
#: or a data file: Martens & Sutskever's 2-bit temporal order at T = 100 with their
#: recipe, which HF solves in minutes on 2 cores and clipped momentum SGD, given the same
#: minutes, does not (Adam does, faster: docs/results.md).  Keys the user sets
#: (``--set task.T=50``) win.
DEFAULT_JOB = {"task": {"name": "temporal_order_2bit", "T": 100}}


def defaults() -> dict:
    """A fresh config holding every default."""
    return {sec: {k: key.default for k, key in keys.items()}
            for sec, keys in SCHEMA.items()}


def load(path: str | Path | None = None, overrides: list[str] = (),
         base: dict | None = None) -> dict:
    """Defaults (or ``base``), then the chosen task's recommended settings, then the TOML
    file at ``path``, then ``--set`` overrides, in that order.  A config that names no
    task runs :data:`DEFAULT_JOB`.

    A task's recommendations may depend on the sequence length (Sutskever's λ₀ grows with
    the number of outputs, T of them for random permutation): they are taken at the
    ``task.T`` the whole config ends with.
    """
    values = read_toml(path) if path is not None else {}
    if base is None and not _names_a_task(values, overrides, str(path)):
        values = {**values, "task": {**DEFAULT_JOB["task"], **values.get("task", {})}}
    if base is not None:
        config = copy.deepcopy(base)
    else:
        config = defaults()
        name = _task_name(values, overrides, str(path))
        probe = defaults()
        merge(probe, _task_defaults(name), source=f"task {name!r} defaults")
        T = _apply_user_values(probe, values, overrides, str(path))["task"]["T"]
        merge(config, _task_defaults(name, T), source=f"task {name!r} defaults")
    _apply_user_values(config, values, overrides, str(path))
    if config["data"]["path"] and "fresh" not in _explicit(values, overrides, str(path),
                                                           "data"):
        config["data"]["fresh"] = False  # the file is the data, whatever the task's default
    validate(config)
    return config


def _apply_user_values(config: dict, values: dict, overrides, source: str) -> dict:
    """``config`` with the file's ``values``, then the ``--set`` overrides, applied."""
    merge(config, values, source=source)
    for item in overrides:
        apply_override(config, item)
    return config


def _names_a_task(values: dict, overrides, source: str) -> bool:
    """Do the file and overrides choose a task (``task.name``, or a data file)?"""
    probe = _apply_user_values(defaults(), values, overrides, source)
    named = "name" in values.get("task", {}) or any(
        item.split("=", 1)[0].strip() == "task.name" for item in overrides)
    return named or bool(probe["data"]["path"])


def _task_name(values: dict, overrides, source: str) -> str:
    """The task the file and overrides choose: a data file's own task if they name one,
    once checked against the ``[task]`` keys they set (:func:`_check_file_task`)."""
    probe = _apply_user_values(defaults(), values, overrides, source)
    path = probe["data"]["path"]
    if path:
        from dhf.dataset import file_task

        try:
            name, params = file_task(path)
        except Exception:  # a bad file is reported, in one line, when it is loaded
            return probe["task"]["name"]
        _check_file_task(path, name, params, _explicit(values, overrides, source, "task"))
        return name
    return probe["task"]["name"]


def _explicit(values: dict, overrides, source: str, section: str) -> dict:
    """The ``section`` keys the config file and ``--set`` set themselves, as
    ``{key: (value, where)}`` (``--set`` last, as it wins)."""
    found = {k: (v, source) for k, v in values.get(section, {}).items()}
    for item in overrides:
        name = item.partition("=")[0].strip()
        if name.startswith(f"{section}."):
            probe = defaults()
            apply_override(probe, item)
            found[name[len(section) + 1:]] = (probe[section][name[len(section) + 1:]],
                                              "--set")
    return found


def _check_file_task(path: str, name: str, params: dict, explicit: dict) -> None:
    """A data file's task sets ``[task]``; a key the user set that the file contradicts
    (another task, another T) is refused, naming both values, rather than silently
    replaced by the file's."""
    stated = {"name": name, **{k: v for k, v in params.items() if k in SCHEMA["task"]}}
    for key, file_value in stated.items():
        if key not in explicit:
            continue
        value, where = explicit[key]
        if _coerce("task", key, file_value, path) != value:
            raise ConfigError(
                f"{path}: the data file holds task.{key} = {toml_value(file_value)}, but "
                f"{where} sets task.{key} = {toml_value(value)}; a data file's task sets "
                f"[task]: drop task.{key} or write a file for it (dhf-data)")


def _task_defaults(name: str, T: int | None = None) -> dict:
    from dhf import tasks

    return tasks.defaults(name, T)


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: TOML syntax error: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from None


def merge(config: dict, values: dict, *, source: str) -> None:
    """Set ``values`` (nested dict from TOML) into ``config``, checking every key."""
    for section, keys in values.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]"
                              f"{_suggest(section, SCHEMA)}")
        if not isinstance(keys, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of keys")
        for key, value in keys.items():
            config[section][key] = _coerce(section, key, value, source)


def apply_override(config: dict, item: str) -> None:
    """Apply one ``SECTION.KEY=VALUE``; VALUE is read as TOML (falls back to a string)."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, "
                          "e.g. --set optimizer.cg_max_iters=300")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    if section not in SCHEMA:
        raise ConfigError(f"--set {name}: unknown section {section!r}"
                          f"{_suggest(section, SCHEMA)}")
    config[section][key] = _coerce(section, key, value, "--set")


def _coerce(section: str, key: str, value: Any, source: str) -> Any:
    if key not in SCHEMA[section]:
        valid = {f"{section}.{k}": None for k in SCHEMA[section]}
        raise ConfigError(f"{source}: unknown key {section}.{key}"
                          f"{_suggest(f'{section}.{key}', valid)}")
    expected = type(SCHEMA[section][key].default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not expected:
        hint = ""
        if expected is bool and str(value).lower() in ("true", "false"):
            hint = f" (TOML writes it {str(value).lower()})"
        raise ConfigError(f"{source}: {section}.{key} must be {expected.__name__}, "
                          f"got {value!r}{hint}")
    return value


def validate(config: dict) -> None:
    """Range and consistency checks that need the whole config."""
    for section, key in [*RANGES, *CHOICES]:
        check(section, key, config[section][key])
    if config["data"]["fresh"] and config["data"]["path"]:
        raise ConfigError(f"data.fresh = true generates the training data; it cannot read "
                          f"data.path = {config['data']['path']!r} (set one of them)")
    opt = config["optimizer"]
    BatchSizes.of(opt).check_consistent(config["data"]["fresh"])
    if opt["cg_min_iters"] > opt["cg_max_iters"]:
        raise ConfigError(f"optimizer.cg_min_iters = {opt['cg_min_iters']} must be <= "
                          f"optimizer.cg_max_iters = {opt['cg_max_iters']}")
    if not opt["min_damping"] <= opt["init_damping"] <= opt["max_damping"]:
        raise ConfigError("optimizer.init_damping must lie in [optimizer.min_damping, "
                          "optimizer.max_damping]")
    from dhf import tasks

    tasks.check(config)


def to_toml(config: dict) -> str:
    """The resolved config as TOML text (what ``config.toml`` in a run directory holds)."""
    lines = []
    for section, keys in config.items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal (what ``--set`` and a config file take)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _suggest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else f"; valid: {', '.join(valid)}"
