"""The flags of a command that binds the data socket: ``--key-dir``, ``--allow-dir``, ``--insecure``.

Shared by the collector's own parser (``python -m statbus.pipeline``) and ``statbus collector
start``, which passes them on to the daemon it starts.
"""

from __future__ import annotations

import argparse
import os
from typing import List

from .curve import TransportSecurity


def add_transport_security_arguments(parser: argparse.ArgumentParser) -> None:
    """``--key-dir``, ``--allow-dir``, ``--insecure`` for a command that binds the data socket."""
    parser.add_argument(
        "--key-dir", metavar="DIR",
        help="directory with the collector's CURVE key pair (server.key_secret), required for tcp:// "
        "unless --insecure; make it with `statbus keys generate --dir DIR`",
    )
    parser.add_argument(
        "--allow-dir", metavar="DIR",
        help="directory of authorized trainers' public keys (*.key); re-read on every connection",
    )
    parser.add_argument(
        "--insecure", action="store_true",
        help="allow plain tcp without CURVE: anyone who reaches the port can send data (logged loudly)",
    )


def transport_security_from_args(args: argparse.Namespace) -> TransportSecurity:
    return TransportSecurity.from_key_dir(
        getattr(args, "key_dir", None), getattr(args, "allow_dir", None), bool(getattr(args, "insecure", False))
    )


def transport_security_argv(args: argparse.Namespace) -> List[str]:
    """The same flags again, for a command line that starts the daemon."""
    argv: List[str] = []
    for flag in ("key_dir", "allow_dir"):
        value = getattr(args, flag, None)
        if value:
            argv += ["--" + flag.replace("_", "-"), os.path.abspath(value)]
    if getattr(args, "insecure", False):
        argv.append("--insecure")
    return argv
