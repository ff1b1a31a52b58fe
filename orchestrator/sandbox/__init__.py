"""The embedded local three-region PostgreSQL environment (``orchestrator sandbox ...``)."""

from orchestrator.sandbox.cluster import RegionStatus, Sandbox, SandboxStatus
from orchestrator.sandbox.pgbin import PgBinaries, find_pg_binaries

__all__ = ["PgBinaries", "RegionStatus", "Sandbox", "SandboxStatus", "find_pg_binaries"]
