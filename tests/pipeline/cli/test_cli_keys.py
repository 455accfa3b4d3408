"""``statbus keys``: through the real command line (subprocess) and through the run functions."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from typing import List

import pytest
import zmq
import zmq.auth

from statbus.pipeline.security.arguments import (
    add_transport_security_arguments,
    transport_security_argv,
    transport_security_from_args,
)
from statbus.pipeline.cli.main import build_parser, main
from statbus.pipeline.security import keyfiles
from statbus.plugins import ConfigError


def statbus(*argv: str, check: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "statbus.pipeline.cli", *argv],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generate_authorize_list_revoke_through_the_command(tmp_path):
    server, trainer, allow = tmp_path / "server", tmp_path / "trainer", tmp_path / "allow"
    out = statbus("keys", "generate", "--dir", str(server)).stdout
    assert "--key-dir" in out and "STATBUS_SERVER_KEY=" in out
    statbus("keys", "generate", "--dir", str(trainer), "--name", "t1")
    assert mode(server) == 0o700 and mode(server / "server.key_secret") == 0o600
    assert mode(trainer / "t1.key_secret") == 0o600 and mode(trainer / "t1.key") & 0o044 == 0o044
    pair = keyfiles.read_secret_key(str(trainer / "t1.key_secret"))
    assert zmq.curve_public(pair.secret) == keyfiles.read_public_key(str(trainer / "t1.key"))
    # The files are ZeroMQ certificates: pyzmq's own reader agrees.
    assert zmq.auth.load_certificate(str(trainer / "t1.key_secret")) == (pair.public, pair.secret)

    statbus("keys", "authorize", "--allow-dir", str(allow), str(trainer / "t1.key"))
    assert mode(allow) == 0o700
    assert keyfiles.load_allow_list(str(allow)) == {pair.public: "t1"}
    listing = statbus("keys", "list", "--allow-dir", str(allow)).stdout
    assert f"t1  {pair.public.decode()}" in listing

    statbus("keys", "revoke", "--allow-dir", str(allow), "t1")
    assert keyfiles.load_allow_list(str(allow)) == {}
    err = statbus("keys", "revoke", "--allow-dir", str(allow), "t1", check=1).stderr
    assert "no key named 't1'" in err


def test_generate_refuses_to_overwrite_without_force(tmp_path, capsys):
    key_dir = str(tmp_path / "k")
    assert main(["keys", "generate", "--dir", key_dir]) == 0
    first = keyfiles.read_public_key(os.path.join(key_dir, "server.key"))
    assert main(["keys", "generate", "--dir", key_dir]) == 1
    assert "already exists" in capsys.readouterr().err
    assert keyfiles.read_public_key(os.path.join(key_dir, "server.key")) == first
    assert main(["keys", "generate", "--dir", key_dir, "--force"]) == 0
    assert keyfiles.read_public_key(os.path.join(key_dir, "server.key")) != first
    assert mode(os.path.join(key_dir, "server.key_secret")) == 0o600
    assert not [n for n in os.listdir(key_dir) if n.endswith(".tmp")]


@pytest.mark.parametrize("bad", ["secret", "malformed", "missing", "empty"])
def test_authorize_refuses_what_is_not_a_public_key(tmp_path, capsys, bad):
    keyfiles.generate_key_pair(str(tmp_path / "t"), "t1")
    source = tmp_path / "t" / "t1.key"
    if bad == "secret":
        source = tmp_path / "t" / "t1.key_secret"
        expect = "is a secret key file"
    elif bad == "malformed":
        source.write_text('curve\n    public-key = "not-a-key"\n')
        expect = "CURVE key is 40"
    elif bad == "missing":
        source = tmp_path / "t" / "nope.key"
        expect = "does not exist"
    else:
        source.write_text("")
        expect = "no public-key line"
    allow = tmp_path / "allow"
    assert main(["keys", "authorize", "--allow-dir", str(allow), str(source)]) == 1
    err = capsys.readouterr().err
    assert expect in err and str(source) in err
    assert not allow.exists() or keyfiles.load_allow_list(str(allow)) == {}


def test_authorize_is_idempotent_and_guards_names(tmp_path, capsys):
    allow = str(tmp_path / "allow")
    t1_pub, _ = keyfiles.generate_key_pair(str(tmp_path / "a"), "t1")
    other_pub, _ = keyfiles.generate_key_pair(str(tmp_path / "b"), "t1")
    assert main(["keys", "authorize", "--allow-dir", allow, t1_pub]) == 0
    assert main(["keys", "authorize", "--allow-dir", allow, t1_pub]) == 0
    assert "already authorized as 't1'" in capsys.readouterr().out
    assert main(["keys", "authorize", "--allow-dir", allow, other_pub]) == 1
    assert "different key named 't1'" in capsys.readouterr().err
    assert main(["keys", "authorize", "--allow-dir", allow, other_pub, "--name", "t1b"]) == 0
    assert sorted(keyfiles.load_allow_list(allow).values()) == ["t1", "t1b"]
    # The allow-list copy holds the public key only.
    with open(os.path.join(allow, "t1b.key")) as handle:
        assert "secret" not in handle.read().replace("secret key", "")


def test_secret_key_readable_by_others_is_refused(tmp_path):
    _, secret = keyfiles.generate_key_pair(str(tmp_path / "k"))
    os.chmod(secret, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        keyfiles.read_secret_key(secret)


def test_collector_flags_make_transport_security(tmp_path):
    parser = argparse.ArgumentParser()
    add_transport_security_arguments(parser)
    args = parser.parse_args(["--key-dir", str(tmp_path / "k"), "--allow-dir", str(tmp_path / "a")])
    settings = transport_security_from_args(args)
    assert settings.server_secret_file == str(tmp_path / "k" / "server.key_secret")
    assert settings.allow_dir == str(tmp_path / "a") and not settings.insecure
    argv: List[str] = transport_security_argv(args)
    assert argv == ["--key-dir", str(tmp_path / "k"), "--allow-dir", str(tmp_path / "a")]
    plain = parser.parse_args(["--insecure"])
    assert transport_security_from_args(plain).insecure and transport_security_argv(plain) == ["--insecure"]
    with pytest.raises(ConfigError):
        transport_security_from_args(parser.parse_args(["--key-dir", "k"]))


def test_keys_is_a_statbus_subcommand():
    parser = build_parser()
    args = parser.parse_args(["keys", "revoke", "--allow-dir", "a", "t1"])
    assert args.func.__name__ == "run_revoke"
