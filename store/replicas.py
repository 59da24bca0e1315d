"""Replica state for the router: which replicas may serve reads right now.

Each process keeps, per replica, whether it is usable (reachable, in recovery,
streaming, within ``STOREOPS_MAX_REPLICA_LAG``), re-checked with a light probe at
most every ``STOREOPS_REPLICA_CHECK_SECONDS`` by one thread while the others use the
last answer; a full health round (``store.health``) refreshes it too, and a read that
fails to connect marks the replica down until its next check. ``store.routing``
picks among the usable ones.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connections

from store import deadlines
from store.probes import Probe, probe_light, replica_lag

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaState:
    alias: str
    usable: bool
    lag_seconds: float | None
    reason: str
    checked_at: float


_replica_states: dict[str, ReplicaState] = {}
_replica_lock = threading.Lock()


def replica_state_from(probe: Probe) -> ReplicaState:
    max_lag = float(settings.STOREOPS_MAX_REPLICA_LAG)
    if not probe.reachable:
        usable, reason = False, f"unreachable: {probe.error}"
    elif probe.vendor == "postgresql" and probe.role != "replica":
        usable, reason = False, "not in recovery"
    elif probe.vendor == "postgresql" and probe.receiver_status != "streaming":
        usable, reason = False, "WAL receiver not streaming"
    elif probe.lag_seconds is None and probe.vendor == "postgresql":
        usable, reason = False, "lag unknown"
    elif probe.lag_seconds is not None and probe.lag_seconds > max_lag:
        usable, reason = False, f"lag {probe.lag_seconds:.1f} s > {max_lag:g} s"
    else:
        usable, reason = True, ""
    return ReplicaState(probe.alias, usable, probe.lag_seconds, reason, time.monotonic())


def replicas_remember(probes: list[Probe]) -> None:
    """A full health round (lags already combined) is the freshest check there is."""
    for probe in probes:
        if probe.kind == "replica":
            _replica_states[probe.alias] = replica_state_from(probe)


def replica_state(alias: str) -> ReplicaState:
    """Cached per process for ``STOREOPS_REPLICA_CHECK_SECONDS``; one thread re-checks."""
    ttl = settings.STOREOPS_REPLICA_CHECK_SECONDS
    state = _replica_states.get(alias)
    if state is not None and time.monotonic() - state.checked_at < ttl:
        return state
    if not _replica_lock.acquire(blocking=state is None):
        return state  # type: ignore[return-value]  # someone is re-checking: use the old one
    try:
        state = _replica_states.get(alias)
        if state is not None and time.monotonic() - state.checked_at < ttl:
            return state
        # Each light probe's connection is cut at the probe deadline: no budget needed.
        finished = deadlines.in_parallel(
            probe_light, [alias, "default"], timeout=None, name="replica-check"
        )
        replica, primary = finished[alias].result(), finished["default"].result()
        if replica.reachable and replica.wal_lsn:
            replica_lag(replica, primary.wal_lsn if primary.reachable else None)
        previous, state = state, replica_state_from(replica)
        if previous is None or previous.usable != state.usable:  # log changes, not every check
            if state.usable:
                logger.info("replica %s serves reads again", alias)
            else:
                logger.warning("replica %s skipped: %s", alias, state.reason)
        _replica_states[alias] = state
        return state
    finally:
        _replica_lock.release()


def replica_mark_down(alias: str, reason: str) -> None:
    """A read just failed to connect: skip the replica until its next check is due."""
    logger.warning("replica %s skipped: %s", alias, reason)
    _replica_states[alias] = ReplicaState(alias, False, None, reason, time.monotonic())


def replica_states_reset() -> None:
    _replica_states.clear()


def healthy_replicas() -> list[str]:
    """Replicas fit to serve reads: reachable, streaming, and within the allowed lag.

    The check is cached per process (``replica_state``): a dead replica costs one
    connect timeout per interval, not one per request, and reads return to it once
    it recovers. Only PostgreSQL replicas can be measured; any other alias is taken
    as it is.
    """
    healthy = []
    for alias in settings.REPLICA_ALIASES:
        engine = settings.DATABASES.get(alias, {}).get("ENGINE", "")
        if "postgresql" not in engine or (
            not deadlines.is_down(alias) and replica_state(alias).usable
        ):
            healthy.append(alias)
    return healthy


def replica_connectable(alias: str) -> bool:
    """Open (or health-check) the request connection to ``alias`` before promising it:
    a replica that died since its last check is marked down at once."""
    if alias not in connections.settings:
        return True  # nothing to connect to (a name used only for routing decisions)
    connection = connections[alias]
    try:
        connection.close_if_health_check_failed()
        connection.ensure_connection()
    except DatabaseError as exc:
        connection.close()
        replica_mark_down(alias, str(exc).strip().splitlines()[0] if str(exc) else "error")
        return False
    return True
