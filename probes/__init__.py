"""Probes: observe databases and endpoints; every failure is an Observation, never an exception.

A leaf package: it imports nothing from ``orchestrator``. See :mod:`probes.base` for the contract.
"""

from probes.attempt import classify_os_error, timed
from probes.base import (
    DatabaseState,
    ErrorClass,
    Heartbeat,
    Kind,
    Observation,
    Outcome,
    Probe,
    Role,
)
from probes.http import HttpProbe, classify_http_error
from probes.postgres import (
    CREATE_HEARTBEAT_SQL,
    HEARTBEAT_SCHEMA,
    HEARTBEAT_TABLE,
    UPSERT_HEARTBEAT_SQL,
    ConnectionSlot,
    PostgresProbe,
    classify_postgres_error,
)
from probes.tcp import TcpProbe

__all__ = [
    "CREATE_HEARTBEAT_SQL",
    "HEARTBEAT_SCHEMA",
    "HEARTBEAT_TABLE",
    "UPSERT_HEARTBEAT_SQL",
    "ConnectionSlot",
    "DatabaseState",
    "ErrorClass",
    "Heartbeat",
    "HttpProbe",
    "Kind",
    "Observation",
    "Outcome",
    "PostgresProbe",
    "Probe",
    "Role",
    "TcpProbe",
    "classify_http_error",
    "classify_os_error",
    "classify_postgres_error",
    "timed",
]
