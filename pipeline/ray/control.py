"""Starting, finding, asking and stopping a run's collector actor, from any process of the cluster.

The caller must be connected to Ray (``ray.init(...)``, or be a task or actor);
``statbus collector start --ray`` connects for you.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence

from ...plugins import ConfigError, StatbusError
from ..collector.lifecycle.daemon import StartFailed
from ..trainer.ray_discovery import NAMESPACE, actor_name, import_ray

RAY_CALL_TIMEOUT = 30.0
"""Seconds a call to the actor may take before the caller gives up (it never blocks training)."""
STOP_GRACE = 20.0


@dataclasses.dataclass(frozen=True)
class CollectorInfo:
    """Where a run's collector actor runs and how trainers reach it (nothing secret)."""

    run_id: str
    results_dir: str
    node_id: str
    node_ip: str
    hostname: str
    actor_pid: int
    collector_pid: int
    ipc_address: str
    tcp_address: str
    server_key: str
    starts: int
    """1 + the restarts of this run's collector actor so far."""
    already_running: bool = False

    @classmethod
    def from_dict(cls, info: Dict[str, Any], already_running: bool = False) -> "CollectorInfo":
        names = {field.name for field in dataclasses.fields(cls)} - {"already_running"}
        return cls(**{name: info[name] for name in names}, already_running=already_running)


def _connected_ray() -> Any:
    ray = import_ray()
    if not ray.is_initialized():
        raise StatbusError("not connected to a Ray cluster: call ray.init() first (or run this in a Ray task or actor)")
    return ray


def _placement(ray: Any, node_id: Optional[str], resource: Optional[str]) -> str:
    """The node the actor is pinned to: named, the first alive one holding ``resource``, or ours."""
    if node_id and resource:
        raise ConfigError("give a node id or a custom resource for the collector, not both")
    alive = [node for node in ray.nodes() if node.get("Alive")]
    if resource:
        holding = [node["NodeID"] for node in alive if node.get("Resources", {}).get(resource, 0) > 0]
        if not holding:
            raise ConfigError(f"no alive node of the cluster has the custom resource {resource!r}")
        # Pinned to that one node, not to the resource: the journal stays on its disk.
        return sorted(holding)[0]
    if node_id:
        if node_id not in {node["NodeID"] for node in alive}:
            raise ConfigError(f"no alive node of the cluster has the id {node_id!r}; `ray status` lists them")
        return node_id
    return ray.get_runtime_context().get_node_id()


def find_collector(run_id: str) -> Optional[Any]:
    """The run's collector actor handle, or None when the cluster has none."""
    ray = _connected_ray()
    try:
        return ray.get_actor(actor_name(run_id), namespace=NAMESPACE)
    except ValueError:
        return None


def _call(ray: Any, method: Any, *args: Any, timeout: float = RAY_CALL_TIMEOUT) -> Any:
    try:
        return ray.get(method.remote(*args), timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise StatbusError(f"the collector actor did not answer within {timeout:g} s") from None
    except ray.exceptions.RayActorError as exc:
        raise StatbusError(f"the collector actor is gone: {exc}") from None


def start_collector(
    run_id: str,
    results_dir: str = "results",
    *,
    node_id: Optional[str] = None,
    resource: Optional[str] = None,
    bind_host: Optional[str] = None,
    port: int = 0,
    collector_args: Sequence[str] = (),
    force: bool = False,
    max_restarts: int = -1,
    timeout: float = 60.0,
) -> CollectorInfo:
    """Start the run's collector as a detached actor, or find the one already running.

    ``results_dir`` is a path on the collector's node (a relative one is made absolute
    here).  The actor is pinned to ``node_id``, to the first alive node holding the
    custom ``resource``, or to this process's node, and Ray restarts it there up to
    ``max_restarts`` times (-1: always).  Its tcp socket binds ``bind_host`` (default:
    the node's Ray address) at ``port`` (0: any free one, kept across restarts).
    ``collector_args`` go to ``python -m statbus.pipeline`` (``--plugins``, ``--config``,
    ``--set``...).  ``force``: start the run over (``--force``; only this start, not Ray's
    restarts of it).  Raises :class:`StartFailed` when the collector cannot start.
    """
    ray = _connected_ray()
    handle = find_collector(run_id)
    if handle is not None:
        info = _call(ray, handle.info)
        if "failure" in info:
            raise StartFailed(f"the run's collector actor is up but its collector could not start: {info['failure']}; "
                              f"`statbus collector stop --ray` ends it")
        if force or "--force" in collector_args:
            raise StartFailed(f"run {run_id!r}'s collector is running (node {info['node_id']}): stop it first "
                              f"(`statbus collector stop --ray`) to start the run over")
        return CollectorInfo.from_dict(info, already_running=True)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .actor import CollectorActor

    node = _placement(ray, node_id, resource)
    host = bind_host or next(
        (n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node), ray.util.get_node_ip_address()
    )
    handle = (
        ray.remote(CollectorActor)
        .options(
            name=actor_name(run_id),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=max_restarts,
            max_task_retries=3,
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        )
        .remote(run_id, os.path.abspath(results_dir), host, port, [*collector_args, *(["--force"] if force else [])], timeout)
    )
    try:
        info = ray.get(handle.info.remote(), timeout=timeout + RAY_CALL_TIMEOUT)
    except ray.exceptions.GetTimeoutError:
        ray.kill(handle, no_restart=True)
        raise StartFailed(f"the collector actor for run {run_id!r} did not start within {timeout + RAY_CALL_TIMEOUT:g} s") from None
    except ray.exceptions.RayActorError as exc:
        raise StartFailed(f"the collector actor for run {run_id!r} could not start: {exc}") from None
    if "failure" in info:
        ray.kill(handle, no_restart=True)  # frees the run's name for the next try
        raise StartFailed(info["failure"])
    return CollectorInfo.from_dict(info)


def collector_info(run_id: str) -> Optional[CollectorInfo]:
    handle = find_collector(run_id)
    if handle is None:
        return None
    info = _call(import_ray(), handle.info)
    if "failure" in info:
        raise StatbusError(f"the run's collector could not start: {info['failure']}")
    return CollectorInfo.from_dict(info, already_running=True)


def collector_status(run_id: str) -> Optional[Dict[str, Any]]:
    """The collector's status map (as ``statbus status --json``) with a ``ray`` entry; None: no actor."""
    handle = find_collector(run_id)
    if handle is None:
        return None
    return _call(import_ray(), handle.status)


def stop_collector(run_id: str, timeout: float = 30.0) -> Optional[Dict[str, Any]]:
    """Stop the collector gracefully, then end its actor for good; None: there was none.

    The collector first (``ray.kill`` alone would take the collector down with its
    actor, plugins not caught up).
    """
    ray = _connected_ray()
    handle = find_collector(run_id)
    if handle is None:
        return None
    try:
        result = _call(ray, handle.stop, timeout, timeout=timeout + STOP_GRACE + RAY_CALL_TIMEOUT)
    finally:
        ray.kill(handle, no_restart=True)
    return result
