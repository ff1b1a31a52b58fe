"""Configuration of the control API (``api:``): who may call it and with what rights.

Guarantees: tokens are secret references (``env:NAME`` / ``file:PATH``) resolved at load time,
never plain text in the file; a token shorter than :data:`MIN_TOKEN_LENGTH` characters, two
tokens with the same name or the same value are configuration errors. With no token configured,
every mutating endpoint answers 403 (the API is read-only).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.config_types import Name, SecretRef

MIN_TOKEN_LENGTH = 16
"""Shortest accepted bearer token (characters); ``openssl rand -hex 32`` gives 64."""


class ApiToken(BaseModel):
    """One bearer token of the control API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(description="Who holds the token; recorded with every action it takes.")
    token: SecretRef = Field(description="The bearer token, by reference (env:NAME, file:PATH).")
    role: Literal["operator", "viewer"] = Field(
        "operator",
        description="operator: every endpoint; viewer: the read-only ones (403 on the others).",
    )

    @model_validator(mode="after")
    def _long_enough(self) -> ApiToken:
        if len(self.token.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"token of {self.name!r} is shorter than {MIN_TOKEN_LENGTH} characters "
                "(generate one with `openssl rand -hex 32`)"
            )
        return self


class ApiSettings(BaseModel):
    """The control API on the daemon's HTTP server (``/v1/...``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[ApiToken] = Field(
        default_factory=list,
        description="Bearer tokens; without any, mutating endpoints answer 403.",
    )
    read_requires_token: bool = Field(
        False,
        description="Also require a token (any role) for the GET endpoints; /metrics, /healthz "
        "and /readyz stay open for the scraper and the probes.",
    )

    @model_validator(mode="after")
    def _distinct(self) -> ApiSettings:
        names = [t.name for t in self.tokens]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"token names must be unique: {', '.join(dup)} repeated")
        values = [t.token.get_secret_value() for t in self.tokens]
        if len(set(values)) != len(values):
            raise ValueError("two tokens have the same value; give each holder its own")
        return self
