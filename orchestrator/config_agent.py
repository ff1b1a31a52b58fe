"""Configuration of the node agent (``orchestrator agent``), run beside each database node.

Guarantees: ``fence_after`` is the agent's promise and the leader's wait. An agent that has not
reached the coordination service's quorum for ``fence_after`` fences its own node, and the leader
never promotes a replica while an unreachable old primary could still be within that window.
So the two writable primaries of a partition never overlap.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.config_types import Duration


class AgentSettings(BaseModel):
    """The node agents' timing (the same for every node)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        False,
        description="Node agents run beside the database nodes: the leader waits fence_after "
        "before promoting over an unreachable primary.",
    )
    fence_after: Duration = Field(
        15.0,
        gt=0,
        description="An agent cut off from the coordination quorum this long fences its node.",
    )
    interval: Duration = Field(1.0, gt=0, description="How often an agent checks its quorum.")
    fence_timeout: Duration = Field(
        30.0,
        gt=0,
        description="Budget of one fence (the node's fence_command, or the agent's own hard "
        "stop); an agent cut off from the quorum has fenced its node at most fence_after + "
        "interval + fence_timeout after its last successful check.",
    )
    rejoin_timeout: Duration = Field(
        120.0,
        gt=0,
        description="Budget of one rejoin_command (pg_rewind and start as a replica); an agent "
        "asked to stop lets a rejoin in flight finish within it.",
    )

    @model_validator(mode="after")
    def _check(self) -> AgentSettings:
        if self.fence_after < 2 * self.interval:
            raise ValueError(
                f"fence_after: {self.fence_after:g}s must be at least two intervals "
                f"({2 * self.interval:g}s), or one late check would fence the primary"
            )
        return self
