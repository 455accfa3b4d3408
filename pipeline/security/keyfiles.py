"""CURVE key files: writing, reading and checking them, and the allow-list directory.

The files use ZeroMQ's certificate format (the one ``zmq.auth.load_certificate``
and czmq read): ``NAME.key`` holds the public key, ``NAME.key_secret`` the public
*and* secret key.  A key directory made by ``statbus keys generate`` is mode 0700
and the secret file 0600; a secret key anyone else can read is refused, because
whoever reads it can impersonate its owner.

An allow-list directory holds one ``NAME.key`` per authorized client.  NAME is
what the collector reports as the sender's user id.  Files are written under a
temporary name and renamed into place, so a reader never sees half a key.
"""

from __future__ import annotations

import datetime
import logging
import os
import stat
from typing import Dict, NamedTuple, Optional, Tuple

import zmq
from zmq.utils import z85

from ...plugins import ConfigError

logger = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
SERVER_KEY_NAME = "server"
"""Base name of the collector's key pair inside its key directory."""

Z85_KEY_LENGTH = 40  # a 32-byte CURVE key in Z85 text
MAX_KEY_FILE_BYTES = 64 * 1024  # a key file is a few hundred bytes; anything huge is not one

_GENERATE_HINT = "make one with `statbus keys generate --dir DIR --name NAME`"


class KeyPair(NamedTuple):
    """Z85-encoded CURVE keys (bytes, 40 characters each, as zmq's socket options take them)."""

    public: bytes
    secret: Optional[bytes]


def _check_name(name: str) -> str:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise ConfigError(f"key name {name!r} must be a non-empty file name without '/' or a leading '.'")
    return name


def public_file(key_dir: str, name: str = SERVER_KEY_NAME) -> str:
    return os.path.join(key_dir, _check_name(name) + PUBLIC_SUFFIX)


def secret_file(key_dir: str, name: str = SERVER_KEY_NAME) -> str:
    return os.path.join(key_dir, _check_name(name) + SECRET_SUFFIX)


def _check_z85_key(value: bytes, path: str, what: str) -> bytes:
    if len(value) != Z85_KEY_LENGTH:
        raise ConfigError(
            f"{path}: the {what} is {len(value)} characters, a CURVE key is {Z85_KEY_LENGTH}; "
            f"the file is damaged — {_GENERATE_HINT}"
        )
    try:
        if len(z85.decode(value)) != 32:
            raise ValueError("wrong length")
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: the {what} is not valid Z85 text; the file is damaged — {_GENERATE_HINT}") from None
    return value


def _parse(path: str, text: bytes) -> KeyPair:
    """Read the ``public-key`` / ``secret-key`` lines of a ZeroMQ certificate."""
    public: Optional[bytes] = None
    secret: Optional[bytes] = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(b"#") or b"=" not in line:
            continue
        field, value = (part.strip() for part in line.split(b"=", 1))
        value = value.strip(b"\"'")
        if field == b"public-key":
            public = value
        elif field == b"secret-key":
            secret = value
    if public is None:
        raise ConfigError(f"{path} holds no public-key line; it is not a CURVE key file — {_GENERATE_HINT}")
    _check_z85_key(public, path, "public key")
    if secret is not None:
        _check_z85_key(secret, path, "secret key")
        if zmq.curve_public(secret) != public:
            raise ConfigError(f"{path}: its public key does not belong to its secret key; the file is damaged")
    return KeyPair(public, secret)


def _read_bytes(path: str, what: str) -> Tuple[bytes, os.stat_result]:
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{path} is not a regular file; expected a {what}")
            text = handle.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; {_GENERATE_HINT}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory; expected a {what}") from None
    except PermissionError:
        raise ConfigError(f"cannot read {what} {path}: permission denied") from None
    if len(text) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_KEY_FILE_BYTES} bytes; it is not a CURVE key file")
    return text, info


def read_public_key(path: str) -> bytes:
    """The Z85 public key in ``path`` (a ``.key`` or ``.key_secret`` file)."""
    text, _ = _read_bytes(path, "public key file")
    return _parse(path, text).public


def read_secret_key(path: str) -> KeyPair:
    """The key pair in the secret key file ``path``; refuses a file others can read."""
    text, info = _read_bytes(path, "secret key file")
    pair = _parse(path, text)
    if pair.secret is None:
        # Checked first: a public key file is rightly world-readable, so "chmod 600" would mislead.
        raise ConfigError(
            f"{path} holds only a public key; pass the {SECRET_SUFFIX} file of the pair, or {_GENERATE_HINT}"
        )
    if info.st_uid != os.getuid():
        raise ConfigError(f"secret key file {path} belongs to uid {info.st_uid}, not to you; refusing to use it")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"secret key file {path} has mode {stat.S_IMODE(info.st_mode):04o}: other users can read it. "
            f"Run `chmod 600 {path}` (and consider making a new key pair, it may have leaked)"
        )
    return pair


def _render(pair: KeyPair, comment: str) -> bytes:
    lines = [
        f"#   ZeroMQ CURVE {comment} written by statbus on {datetime.datetime.now().isoformat(timespec='seconds')}",
        "metadata",
        "curve",
        f'    public-key = "{pair.public.decode("ascii")}"',
    ]
    if pair.secret is not None:
        lines.append(f'    secret-key = "{pair.secret.decode("ascii")}"')
    return ("\n".join(lines) + "\n").encode("ascii")


def write_key_file(path: str, pair: KeyPair, overwrite: bool = False) -> str:
    """Write ``pair`` to ``path`` atomically; mode 0600 if it holds a secret, else 0644."""
    if not overwrite and os.path.lexists(path):
        raise ConfigError(f"{path} already exists; remove it first or pass --force")
    mode = 0o600 if pair.secret is not None else 0o644
    # The temporary name does not end in ".key", so an allow-list reader never picks it up half written.
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    # O_EXCL with the final mode: a secret is never readable by others, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_render(pair, "secret key" if pair.secret is not None else "public key"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits away from a public key's 0644
        if not overwrite and os.path.lexists(path):
            raise ConfigError(f"{path} already exists; remove it first or pass --force")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def ensure_key_dir(path: str) -> str:
    """Create ``path`` mode 0700 if missing; refuse one that is not ours or others may write."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    check_private_dir(path, "key directory")
    return path


def check_private_dir(path: str, what: str) -> os.stat_result:
    """Refuse a directory another user owns or may write to (they could plant keys in it)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; create it with `statbus keys authorize --allow-dir {path} ...`") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {path} is not a directory")
    if info.st_uid != os.getuid():
        raise ConfigError(f"{what} {path} belongs to uid {info.st_uid}, not to you; refusing to trust it")
    if info.st_mode & 0o022:
        raise ConfigError(
            f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}: other users may add keys to it. "
            f"Run `chmod 700 {path}`"
        )
    return info


def generate_key_pair(key_dir: str, name: str = SERVER_KEY_NAME, overwrite: bool = False) -> Tuple[str, str]:
    """Make a new key pair in ``key_dir``; returns ``(public_file, secret_file)``."""
    ensure_key_dir(key_dir)
    public_path, secret_path = public_file(key_dir, name), secret_file(key_dir, name)
    if not overwrite:
        for path in (public_path, secret_path):
            if os.path.lexists(path):
                raise ConfigError(f"{path} already exists; pass --force to replace the key pair")
    public, secret = zmq.curve_keypair()
    # Secret first: a public key without its secret is useless, the reverse is recoverable.
    write_key_file(secret_path, KeyPair(public, secret), overwrite)
    write_key_file(public_path, KeyPair(public, None), overwrite)
    return public_path, secret_path


def allow_list_signature(allow_dir: str) -> Tuple[Tuple[str, int, int, int], ...]:
    """What changes when a key is added, removed or rewritten (names, inodes, sizes, mtimes)."""
    entries = []
    with os.scandir(allow_dir) as it:
        for entry in it:
            if entry.name.endswith(PUBLIC_SUFFIX) and not entry.name.startswith("."):
                try:
                    info = entry.stat()
                except FileNotFoundError:  # removed while we listed
                    continue
                entries.append((entry.name, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(sorted(entries))


def load_allow_list(allow_dir: str) -> Dict[bytes, str]:
    """Map each authorized Z85 public key to its name; a damaged file is skipped with a warning."""
    keys: Dict[bytes, str] = {}
    for name, *_ in allow_list_signature(allow_dir):
        path = os.path.join(allow_dir, name)
        try:
            public = read_public_key(path)
        except ConfigError as exc:
            # One bad file must not lock every trainer out (nor let anyone in).
            logger.warning("allow-list: skipping %s: %s", path, exc)
            continue
        keys.setdefault(public, name[: -len(PUBLIC_SUFFIX)])
    return keys
