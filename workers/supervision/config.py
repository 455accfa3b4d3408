"""Per-plugin settings: a TOML file plus command-line overrides.

File format::

    [plugins.default]          # applies to every plugin, below its own table
    memory_cap_mb = 512

    [plugins.tensorboard]
    enabled = false

    [plugins.my_plugin]
    interpreter = "/opt/venvs/plugin/bin/python"
    call_timeout = 120
    options = { flush_every = 10 }   # handed to the registration function
                                      # as RunOptions.plugin_options

A plugin's settings are its own table over ``[plugins.default]`` over the
built-in defaults (for the plugins that are off until asked for,
:mod:`statbus.plugins.opt_in`, ``enabled`` comes only from their own table,
an override, ``--plugins`` or their environment variable: :func:`load_plugin_config`); ``options`` tables are merged key by key the same way.  Only
the ``plugins`` table is read here: other top-level tables belong to other
parts of statbus and are kept, unread, in :attr:`Config.extra`.  Every key of a
plugin table is checked: an unknown key or a value of the wrong type is a
:class:`ConfigError` naming the file, the table and the key (a typo must not
silently leave a setting at its default).

Overrides (command-line flags) use the same names: ``{"my_plugin":
{"enabled": False}}``, built from ``NAME.KEY=VALUE`` strings by
:func:`parse_overrides`, where VALUE is a TOML value (``1``, ``true``,
``"text"``; a bare word is taken as a string) and KEY may be ``options.X``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ...plugins.discovery import PluginInfo
from ...plugins.errors import ConfigError
from ...plugins.opt_in import env_choice, missing_modules, opt_in_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "default"
"""Name of the table whose settings apply to every plugin."""


@dataclasses.dataclass(frozen=True)
class PluginSettings:
    enabled: bool = True
    interpreter: Optional[str] = None
    """Python that runs this plugin's worker host; None means the collector's own."""
    memory_cap_mb: float = 1024.0
    """RSS (host and its children) over which the host is restarted."""
    call_timeout: float = 60.0
    """Seconds one writer call may take before the host counts as hung."""
    heartbeat_timeout: float = 3.0
    """Seconds without a heartbeat after which the host counts as hung."""
    start_timeout: float = 60.0
    """Seconds a host may take from spawn to ready (imports can be slow)."""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The plugin's own options (``RunOptions.plugin_options``)."""
    backfill: bool = False
    """A plugin first seen mid-run reads the journal from its start, not from the head."""
    max_restarts: int = 5
    restart_window: float = 60.0
    """Restart budget: at most ``max_restarts`` restarts in ``restart_window`` seconds."""
    nice: int = 10
    """How much lower than the collector's the host's CPU priority is (Unix nice, 0–19): on a
    busy machine a plugin takes no CPU from training; what it has not written yet waits in
    the journal."""

    @property
    def python(self) -> str:
        return self.interpreter or sys.executable


@dataclasses.dataclass(frozen=True)
class Config:
    default: PluginSettings = PluginSettings()
    plugins: Mapping[str, PluginSettings] = dataclasses.field(default_factory=dict)
    """Settings of the plugins that have a table (or an override) of their own."""
    source: Optional[str] = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Top-level tables other than ``plugins``, for other parts of statbus."""

    def for_plugin(self, name: str) -> PluginSettings:
        return self.plugins.get(name, self.default)


_FIELDS = {f.name: f for f in dataclasses.fields(PluginSettings)}


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


_CHECKS: Dict[str, Tuple[Any, str]] = {
    "enabled": (lambda v: isinstance(v, bool), "true or false"),
    "interpreter": (lambda v: isinstance(v, str) and bool(v), "a non-empty string (path of a python)"),
    "memory_cap_mb": (_positive_number, "a positive number"),
    "call_timeout": (_positive_number, "a positive number of seconds"),
    "heartbeat_timeout": (_positive_number, "a positive number of seconds"),
    "start_timeout": (_positive_number, "a positive number of seconds"),
    "options": (lambda v: isinstance(v, Mapping), "a table"),
    "backfill": (lambda v: isinstance(v, bool), "true or false"),
    "max_restarts": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "restart_window": (_positive_number, "a positive number of seconds"),
    "nice": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 19, "an integer from 0 to 19"),
}
assert set(_CHECKS) == set(_FIELDS), "every setting needs a check"


def _where(source: Optional[str]) -> str:
    return source if source is not None else "<overrides>"


def _validated(table: Mapping[str, Any], source: Optional[str], name: str) -> Dict[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{_where(source)}: [plugins.{name}] must be a table, got {type(table).__name__}")
    clean: Dict[str, Any] = {}
    for key, value in table.items():
        if key not in _CHECKS:
            known = ", ".join(sorted(_CHECKS))
            raise ConfigError(f"{_where(source)}: [plugins.{name}] unknown key {key!r}; known keys: {known}")
        check, expected = _CHECKS[key]
        if not check(value):
            raise ConfigError(
                f"{_where(source)}: [plugins.{name}] key {key!r} must be {expected}, got {value!r}"
            )
        clean[key] = dict(value) if key == "options" else value
    return clean


def _merge(base: Dict[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if key == "options":
            merged["options"] = {**merged.get("options", {}), **value}
        else:
            merged[key] = value
    return merged


def _settings(values: Mapping[str, Any]) -> PluginSettings:
    return PluginSettings(**values)


def load_config(
    path: Optional[str] = None,
    overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
    off_by_default: Iterable[str] = (),
) -> Config:
    """Settings from the TOML file at ``path`` (None: no file) and ``overrides``.

    ``overrides`` maps a plugin name (or ``"default"``) to settings that win
    over the file's.  The plugins named in ``off_by_default`` are disabled
    unless their own table or an override says ``enabled = true`` (the
    ``[plugins.default]`` table cannot turn them on).  Raises
    :class:`ConfigError` for an unreadable file, invalid TOML, unknown keys or
    wrong types.
    """
    document: Mapping[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    plugin_tables = document.get("plugins", {})
    if not isinstance(plugin_tables, Mapping):
        raise ConfigError(f"{_where(path)}: 'plugins' must be a table of tables ([plugins.NAME])")

    file_values = {name: _validated(table, path, name) for name, table in plugin_tables.items()}
    override_values = {name: _validated(table, None, name) for name, table in (overrides or {}).items()}

    default_values = _merge(file_values.get(DEFAULT_TABLE, {}), override_values.get(DEFAULT_TABLE, {}))
    off = set(off_by_default) - {DEFAULT_TABLE}
    names = (set(file_values) | set(override_values) | off) - {DEFAULT_TABLE}

    def base(name: str) -> Dict[str, Any]:
        if name in off and default_values.get("enabled", True):
            return {**default_values, "enabled": False}
        return default_values

    plugins = {
        name: _settings(
            _merge(_merge(base(name), file_values.get(name, {})), override_values.get(name, {}))
        )
        for name in sorted(names)
    }
    if default_values.get("enabled") is False and not any(p.enabled for p in plugins.values()):
        # ML-Agents' own writers are the entry point named "default" too: a user who writes
        # this table to turn those off (statbus leaves them out anyway) loses every plugin.
        logger.warning(
            "%s: [plugins.%s] holds the settings of every plugin: its enabled = false turns every "
            "plugin off, and no [plugins.NAME] table turns one on (ML-Agents' own 'default' writers "
            "are left out by statbus anyway; to turn one plugin off, write enabled = false in its table)",
            _where(path), DEFAULT_TABLE,
        )
    extra = {key: value for key, value in document.items() if key != "plugins"}
    return Config(default=_settings(default_values), plugins=plugins, source=path, extra=extra)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        # A bare word (a path, a name) is a string; quoting it on a shell line is a chore.
        return text


def parse_override(item: str) -> Tuple[str, str, Any]:
    """``NAME.KEY=VALUE`` → (name, key path, value); KEY is a setting or ``options.X``."""
    target, sep, text = item.partition("=")
    if not sep:
        raise ConfigError(f"override {item!r}: expected NAME.KEY=VALUE")
    parts = target.strip().split(".")
    # The plugin name may itself contain dots: it ends where a setting name begins.
    for index in range(1, len(parts)):
        if parts[index] in _FIELDS:
            name, key_parts = ".".join(parts[:index]), parts[index:]
            break
    else:
        raise ConfigError(f"override {item!r}: no setting named in {target!r}; known: {', '.join(sorted(_FIELDS))}")
    key = ".".join(key_parts)
    if key_parts[0] == "options":
        if len(key_parts) != 2 or not key_parts[1]:
            raise ConfigError(f"override {item!r}: plugin options are set as NAME.options.KEY=VALUE")
    elif len(key_parts) != 1:
        raise ConfigError(f"override {item!r}: {key_parts[0]!r} has no sub-keys")
    return name, key, _parse_value(text.strip())


def parse_overrides(items: Iterable[str]) -> Dict[str, Dict[str, Any]]:
    """Command-line ``NAME.KEY=VALUE`` strings → the ``overrides`` of :func:`load_config`."""
    result: Dict[str, Dict[str, Any]] = {}
    for item in items:
        name, key, value = parse_override(item)
        table = result.setdefault(name, {})
        if key.startswith("options."):
            table.setdefault("options", {})[key.split(".", 1)[1]] = value
        else:
            table[key] = value
    return result


def load_plugin_config(
    plugins: Iterable[PluginInfo],
    path: Optional[str] = None,
    overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
    environ: Mapping[str, str] = os.environ,
    named: Iterable[str] = (),
) -> Config:
    """:func:`load_config` for these ``plugins``, with the off-by-default ones (:mod:`statbus.plugins.opt_in`) decided.

    Such a plugin is on when its own table or an override says so, else when its environment
    variable does, or when ``named`` (``--plugins``) names it.  One that is on but whose library
    this interpreter cannot find is turned off with one error line saying what to install: the
    other plugins run.  (A plugin with an ``interpreter`` of its own is not checked here: its
    worker reports what it lacks.)
    """
    merged: Dict[str, Dict[str, Any]] = {name: dict(table) for name, table in (overrides or {}).items()}
    off: List[str] = []
    named = set(named)
    opt_ins = {}
    for info in plugins:
        opt_in = opt_in_of(info.group, info.name)
        if opt_in is None:
            continue
        opt_ins[info.name] = opt_in
        off.append(info.name)
        choice = True if info.name in named or f"{info.group}:{info.name}" in named else env_choice(opt_in, environ)
        if choice is not None and "enabled" not in merged.get(info.name, {}):
            merged.setdefault(info.name, {})["enabled"] = choice
    config = load_config(path, merged, off_by_default=off)
    for name, opt_in in opt_ins.items():
        settings = config.for_plugin(name)
        if not settings.enabled or settings.interpreter is not None:
            continue
        missing = missing_modules(opt_in)
        if missing:
            logger.error("plugin %s is enabled but %s is not installed: %s (the other plugins run)",
                         name, ", ".join(missing), opt_in.install_hint)
            plugins_now = dict(config.plugins)
            plugins_now[name] = dataclasses.replace(settings, enabled=False)
            config = dataclasses.replace(config, plugins=plugins_now)
    return config
