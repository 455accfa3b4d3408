"""Loading the host's one plugin: its entry point imported, its writers registered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...plugins.errors import StatbusError
from ..exits import ExitCode, HostExit
from ..statepage import StatePage
from .disk_wait import DiskWait
from .dispatch import Writers

if TYPE_CHECKING:
    from .loop import HostConfig


def load_plugin(config: HostConfig, page: StatePage) -> Writers:
    """Import the one entry point and register its writers (raises :class:`HostExit`)."""
    from ...plugins.errors import PluginImportError, PluginRegistrationError
    from ...plugins.loader import load_writers
    from ...plugins.settings import RunOptions
    from ..compat import install_mlagents_aliases

    try:
        run_options = RunOptions.from_dict(config.run_options)
    except (StatbusError, TypeError) as exc:
        raise HostExit(ExitCode.BAD_CONFIG, f"bad run options: {exc}") from exc
    install_mlagents_aliases()
    try:
        writers = load_writers(config.plugin_info, run_options)
    except PluginImportError as exc:
        raise HostExit(ExitCode.IMPORT_FAILURE, str(exc)) from exc
    except PluginRegistrationError as exc:
        raise HostExit(ExitCode.REGISTRATION_FAILURE, str(exc)) from exc
    except SystemExit as exc:
        # A plugin module calling sys.exit() at import or registration.
        raise HostExit(ExitCode.IMPORT_FAILURE, f"plugin {config.plugin!r} called sys.exit({exc.code!r})") from exc
    return Writers(writers, page, DiskWait(page, lambda: False, config.plugin))
