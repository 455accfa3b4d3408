"""Loading the host's one plugin: its entry point imported, its writers registered."""

from __future__ import annotations

import sys
from typing import Any

from ...plugins.errors import StatbusError
from ..exits import ExitCode, HostExit
from ..statepage import StatePage
from .config import HostConfig
from .disk_wait import DiskWait
from .dispatch import Writers
from .mlagents_types import TypedWriter, real_mlagents_types


def load_plugin(config: HostConfig, page: StatePage) -> Writers:
    """Import the one entry point and register its writers (raises :class:`HostExit`)."""
    from ...plugins.errors import PluginImportError, PluginRegistrationError
    from ...plugins.loader import load_registration_function, load_writers
    from ...plugins.settings import RunOptions
    from ...plugins.groups import ML_AGENTS_STATS_WRITER
    from ..compat import install_mlagents_aliases, real_run_options

    try:
        run_options = RunOptions.from_dict(config.run_options)
    except (StatbusError, TypeError) as exc:
        raise HostExit(ExitCode.BAD_CONFIG, f"bad run options: {exc}") from exc
    aliased = install_mlagents_aliases()
    try:
        load_registration_function(config.plugin_info)  # imports the plugin's module: see below
        registered_with: Any = run_options
        real_mlagents = not aliased and config.group == ML_AGENTS_STATS_WRITER and "mlagents" in sys.modules
        if real_mlagents:
            # A plugin that imported the real mlagents gets ML-Agents' RunOptions: under
            # `statbus learn` the ones mlagents-learn built, else ML-Agents' defaults for this
            # run.  One that did not gets statbus's compatible one: building ML-Agents' imports
            # its trainers and torch (seconds per worker start).
            registered_with = real_run_options(run_options.mlagents_options or {
                "checkpoint_settings": {"run_id": run_options.run_id, "results_dir": run_options.results_dir,
                                        "resume": run_options.resume},
            }) or run_options
        writers = load_writers(config.plugin_info, registered_with)
        types = real_mlagents_types() if real_mlagents else None
        if types is not None:
            writers = [TypedWriter(writer, types) for writer in writers]
    except PluginImportError as exc:
        raise HostExit(ExitCode.IMPORT_FAILURE, str(exc)) from exc
    except PluginRegistrationError as exc:
        raise HostExit(ExitCode.REGISTRATION_FAILURE, str(exc)) from exc
    except SystemExit as exc:
        # A plugin module calling sys.exit() at import or registration.
        raise HostExit(ExitCode.IMPORT_FAILURE, f"plugin {config.plugin!r} called sys.exit({exc.code!r})") from exc
    return Writers(writers, page, DiskWait(page, lambda: False, config.plugin))
