"""helios-orchestrator: automated regional failover for a PostgreSQL service."""
