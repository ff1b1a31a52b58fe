"""Providers: the orchestrator's adapters to systems it acts on (databases, DNS, notifications)."""
