"""The ``--ray`` side of ``statbus collector start|stop`` and ``statbus status``.

The commands connect to the cluster as a Ray driver (``--ray-address``, else
``$RAY_ADDRESS``, else the cluster this machine belongs to), do one thing through
the run's actor and disconnect; the detached actor stays.  Ray is imported only
here, when ``--ray`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any, Callable, Dict, Iterator, List

from ...plugins import ConfigError, StatbusError
from ...workers.exits import ExitCode
from ..trainer.ray_discovery import NAMESPACE, import_ray


def add_ray_arguments(parser: argparse.ArgumentParser, placement: bool = False) -> None:
    parser.add_argument(
        "--ray", action="store_true",
        help="the run's collector is a Ray actor: start, find or stop it through the Ray cluster",
    )
    parser.add_argument(
        "--ray-address", metavar="ADDR",
        help="with --ray: the cluster to join (default: $RAY_ADDRESS, else the one this machine is part of)",
    )
    if placement:
        parser.add_argument("--node-id", metavar="ID", help="with --ray: run the collector on this node (default: this one)")
        parser.add_argument(
            "--resource", metavar="NAME",
            help="with --ray: run the collector on the first node that has this custom resource",
        )


@contextlib.contextmanager
def connected(args: argparse.Namespace) -> Iterator[Any]:
    ray = import_ray()
    address = args.ray_address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise StatbusError(f"cannot join the Ray cluster at {address}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _run_id(args: argparse.Namespace) -> str:
    return args.run_id or os.environ.get("STATBUS_RUN_ID", "ppo")


def run_start(args: argparse.Namespace, collector_args: List[str]) -> int:
    if args.foreground or args.bind or args.key_dir or args.allow_dir or args.insecure:
        raise ConfigError(
            "--ray runs the collector as a Ray actor, which binds its own sockets and makes its own keys: "
            "drop --foreground, --bind, --key-dir, --allow-dir and --insecure"
        )
    from .control import start_collector

    results_dir = args.results_dir or os.environ.get("STATBUS_RESULTS_DIR", "results")
    with connected(args):
        info = start_collector(
            _run_id(args), results_dir, node_id=args.node_id, resource=args.resource,
            collector_args=collector_args, timeout=args.timeout,
        )
    state = "was already running" if info.already_running else "is ready"
    print(f"collector for run {info.run_id!r} {state} as a Ray actor on node {info.node_id} ({info.node_ip})")
    print(f"  trainers on that node:  {info.ipc_address}")
    print(f"  trainers elsewhere:     {info.tcp_address} (CURVE; keys exchanged through Ray)")
    print(f"  collector pid {info.collector_pid}, actor pid {info.actor_pid}, start {info.starts}")
    print(f"  results: {os.path.join(info.results_dir, info.run_id)} on that node")
    print(f"trainers: configure(run_id={info.run_id!r}, ray=True) or STATBUS_RAY=1 STATBUS_RUN_ID={info.run_id}")
    return ExitCode.OK


def run_stop(args: argparse.Namespace) -> int:
    from .control import stop_collector

    with connected(args):
        result = stop_collector(_run_id(args), timeout=args.timeout)
    if result is None:
        print(f"no collector actor is running for run {_run_id(args)!r}")
        return ExitCode.OK
    if not result.get("stopped"):
        print(f"statbus: the collector (pid {result.get('pid')}) did not stop in time; its actor was killed", file=sys.stderr)
        return ExitCode.ERROR
    print(f"collector for run {_run_id(args)!r} stopped (pid {result.get('pid')}) and its Ray actor ended")
    return ExitCode.OK


@contextlib.contextmanager
def status_source(args: argparse.Namespace) -> Iterator[Callable[[], Dict[str, Any]]]:
    """``fetch() -> status`` through the run's actor, for ``statbus status --ray``."""
    from .control import collector_status

    with connected(args):
        def fetch() -> Dict[str, Any]:
            status = collector_status(_run_id(args))
            if status is None:
                raise StatbusError("the Ray cluster has no collector actor for this run")
            if not status.get("ok"):
                raise StatbusError(status.get("error", "the collector did not answer its actor"))
            return status

        yield fetch


def ray_line(status: Dict[str, Any]) -> str:
    ray = status.get("ray") or {}
    return (
        f"ray actor on node {ray.get('node_id')} ({ray.get('node_ip')}), pid {ray.get('actor_pid')}, "
        f"start {ray.get('starts')}; trainers elsewhere: {ray.get('tcp_address')}"
    )
