"""Request bodies of the control API's mutating endpoints (pydantic, strict).

Guarantees: unknown fields are refused, booleans must be JSON booleans (``"yes"`` or ``1`` are
refused), and every mutating request is a dry run unless it carries ``"execute": true``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    execute: StrictBool = Field(
        False, description="Act; without it (or with false) the answer is a dry run."
    )


class SwitchoverRequest(_Body):
    """A planned switchover (the old primary is healthy): no data loss."""

    to: StrictStr | None = Field(
        None, min_length=1, max_length=63, description="Target region; default: the best one."
    )
    force: StrictBool = Field(False, description="Override a safety rail (audited).")
    checksum: StrictStr | None = Field(
        None,
        pattern=r"^[0-9a-f]{16}$",
        description="The dry run's plan checksum; the run is refused if the world changed.",
    )


class FailoverRequest(SwitchoverRequest):
    """An unplanned failover (the primary is lost)."""

    accept_data_loss: StrictBool = Field(
        False, description="Allow a candidate beyond the RPO (audited)."
    )


class DrillRequest(_Body):
    """A DR drill; fields left out come from the config's ``drill`` section."""

    kind: Literal["switchover", "failover"] | None = Field(None, description="Drill kind.")
    to: StrictStr | None = Field(None, min_length=1, max_length=63, description="Target region.")
    failback: StrictBool | None = Field(None, description="Switch back after the first leg.")


class ControlRequest(_Body):
    """pause, resume and ack."""

    reason: StrictStr | None = Field(
        None, max_length=500, description="Why (recorded in the audit log)."
    )
