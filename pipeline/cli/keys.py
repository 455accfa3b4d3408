"""``statbus keys generate|authorize|revoke|list`` — CURVE keys for collectors on tcp.

Typical setup of a collector on tcp and one remote trainer::

    statbus keys generate --dir ~/.statbus/server                 # the collector's pair
    statbus keys generate --dir ~/.statbus/trainer1 --name trainer1   # on the trainer's host
    statbus keys authorize --allow-dir ~/.statbus/allowed trainer1.key
    statbus collector start --bind tcp://0.0.0.0:5555 --key-dir ~/.statbus/server --allow-dir ~/.statbus/allowed
    # trainer: STATBUS_CLIENT_KEY=.../trainer1.key_secret STATBUS_SERVER_KEY=.../server.key

Authorize and revoke take effect on the next connection, without a restart.

The collector's own flags for them (``--key-dir``, ``--allow-dir``, ``--insecure``) are
:mod:`..security.arguments`'.
"""

from __future__ import annotations

import argparse
import os
from ...plugins import ConfigError
from ...workers.exits import ExitCode
from ..security import keyfiles
from ..security.curve import ENV_CLIENT_KEY, ENV_SERVER_KEY


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="make and authorize CURVE keys for a collector on tcp",
        description="Manage the CURVE keys that protect a collector bound to tcp://: the collector's key "
        "pair, each trainer's key pair, and the allow-list directory of trainers' public keys.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    generate = actions.add_parser(
        "generate",
        help="make a key pair: DIR/NAME.key (public) and DIR/NAME.key_secret (mode 0600)",
        description="Make a CURVE key pair in DIR (created mode 0700): NAME.key is the public key to hand "
        "out, NAME.key_secret the secret one (mode 0600) that never leaves its host.",
    )
    generate.add_argument("--dir", required=True, metavar="DIR", help="where to write the pair")
    generate.add_argument(
        "--name", default=keyfiles.SERVER_KEY_NAME,
        help=f"base name of the files (default {keyfiles.SERVER_KEY_NAME!r}, the collector's own pair)",
    )
    generate.add_argument("--force", action="store_true", help="replace an existing pair of that name")
    generate.set_defaults(func=run_generate)

    authorize = actions.add_parser(
        "authorize",
        help="add a trainer's public key to the allow-list",
        description="Copy a trainer's public key into the allow-list directory (created mode 0700) as "
        "NAME.key; a running collector accepts it on the next connection.",
    )
    authorize.add_argument("--allow-dir", required=True, metavar="DIR", help="the allow-list directory")
    authorize.add_argument("public_key_file", metavar="PUBLIC_KEY_FILE", help="the trainer's NAME.key")
    authorize.add_argument("--name", help="name in the allow-list (default: the file's base name)")
    authorize.add_argument("--force", action="store_true", help="replace a different key of the same name")
    authorize.set_defaults(func=run_authorize)

    revoke = actions.add_parser(
        "revoke",
        help="remove a trainer's key from the allow-list",
        description="Remove NAME.key from the allow-list directory; a running collector refuses that key "
        "from the next connection on (an already open connection is not cut).",
    )
    revoke.add_argument("--allow-dir", required=True, metavar="DIR", help="the allow-list directory")
    revoke.add_argument("name", metavar="NAME", help="the key's name, as `statbus keys list` shows it")
    revoke.set_defaults(func=run_revoke)

    listing = actions.add_parser("list", help="show the keys in an allow-list", description="Show NAME and public key of every authorized trainer.")
    listing.add_argument("--allow-dir", required=True, metavar="DIR", help="the allow-list directory")
    listing.set_defaults(func=run_list)


def run_generate(args: argparse.Namespace) -> int:
    public_path, secret_path = keyfiles.generate_key_pair(args.dir, args.name, overwrite=args.force)
    print(f"public key: {public_path}")
    print(f"secret key: {secret_path} (mode 0600; keep it on this host)")
    if args.name == keyfiles.SERVER_KEY_NAME:
        print(f"collector: --key-dir {args.dir}; trainers: {ENV_SERVER_KEY}={os.path.abspath(public_path)}")
    else:
        print(f"authorize it on the collector's host: statbus keys authorize --allow-dir ALLOWDIR {public_path}")
        print(f"trainer: {ENV_CLIENT_KEY}={os.path.abspath(secret_path)}")
    return ExitCode.OK


def _name_of(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (keyfiles.SECRET_SUFFIX, keyfiles.PUBLIC_SUFFIX):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def run_authorize(args: argparse.Namespace) -> int:
    source = args.public_key_file
    if source.endswith(keyfiles.SECRET_SUFFIX):
        raise ConfigError(
            f"{source} is a secret key file; authorize the public one ({_name_of(source)}{keyfiles.PUBLIC_SUFFIX}) "
            "and keep the secret on the trainer's host"
        )
    public = keyfiles.read_public_key(source)
    name = args.name or _name_of(source)
    keyfiles.ensure_key_dir(args.allow_dir)
    current = keyfiles.load_allow_list(args.allow_dir)
    if public in current:
        print(f"{source}: already authorized as {current[public]!r}")
        return ExitCode.OK
    target = keyfiles.public_file(args.allow_dir, name)
    if os.path.lexists(target) and not args.force:
        raise ConfigError(f"{target} already holds a different key named {name!r}; pass --name or --force")
    # Only the key itself is copied: whatever else the file holds never reaches the allow-list.
    keyfiles.write_key_file(target, keyfiles.KeyPair(public, None), overwrite=True)
    print(f"authorized {name!r} ({public.decode('ascii')}): {target}")
    return ExitCode.OK


def run_revoke(args: argparse.Namespace) -> int:
    name = _name_of(args.name)
    target = keyfiles.public_file(args.allow_dir, name)
    try:
        os.unlink(target)
    except FileNotFoundError:
        try:
            known = sorted(keyfiles.load_allow_list(args.allow_dir).values())
        except OSError:
            raise ConfigError(f"allow-list directory {args.allow_dir} does not exist") from None
        raise ConfigError(
            f"no key named {name!r} in {args.allow_dir} (authorized: {', '.join(known) or 'none'})"
        ) from None
    print(f"revoked {name!r}: removed {target}; new connections with that key are refused")
    return ExitCode.OK


def run_list(args: argparse.Namespace) -> int:
    try:
        keys = keyfiles.load_allow_list(args.allow_dir)
    except OSError:
        raise ConfigError(f"allow-list directory {args.allow_dir} does not exist") from None
    for public, name in sorted(keys.items(), key=lambda item: item[1]):
        print(f"{name}  {public.decode('ascii')}")
    return ExitCode.OK
