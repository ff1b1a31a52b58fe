"""Bearer-token authentication of the control API.

Guarantees: the presented token is compared with **every** configured token using
:func:`hmac.compare_digest` (no early exit, so the time taken does not reveal which token or how
much of it matched); the token itself never appears in an error, a log line or a response.
401 means "no valid credentials" (missing header, wrong scheme, unknown token), 403 means
"authenticated, but not allowed" (a viewer token on a mutating endpoint) or "this API has no
operator token, so it is read-only".
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from orchestrator.config_api import ApiSettings


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's configured name and role (``anonymous`` when unauthenticated
    reads are allowed)."""

    name: str
    role: str


ANONYMOUS = Principal("anonymous", "viewer")


class Denied(Exception):
    """The request may not proceed; ``status`` is 401 or 403, ``message`` names the cause."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Authenticator:
    """Checks ``Authorization`` headers against the configured tokens."""

    def __init__(self, settings: ApiSettings) -> None:
        self._tokens = [
            (t.token.get_secret_value().encode(), Principal(t.name, t.role))
            for t in settings.tokens
        ]
        self._read_requires_token = settings.read_requires_token

    @property
    def has_operator(self) -> bool:
        return any(p.role == "operator" for _, p in self._tokens)

    def identify(self, header: str | None) -> Principal | None:
        """The principal for a presented header, or None (no header, bad scheme, no match)."""
        if not header:
            return None
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        given = presented.strip().encode()
        found: Principal | None = None
        for secret, principal in self._tokens:
            if hmac.compare_digest(given, secret) and found is None:
                found = principal
        return found

    def for_read(self, header: str | None) -> Principal:
        """The caller of a GET endpoint; raises Denied(401) when reads need a token."""
        principal = self.identify(header)
        if principal is not None:
            return principal
        if header or self._read_requires_token:
            raise _unauthorized(bool(header))
        return ANONYMOUS

    def for_write(self, header: str | None) -> Principal:
        """The caller of a mutating endpoint: an operator, or Denied (401/403)."""
        if not self.has_operator:
            raise Denied(
                403,
                "API_READ_ONLY",
                "the control API is read-only: no operator token is configured (api.tokens)",
            )
        principal = self.identify(header)
        if principal is None:
            raise _unauthorized(bool(header))
        if principal.role != "operator":
            raise Denied(
                403,
                "FORBIDDEN",
                f"token {principal.name!r} has the {principal.role} role; this endpoint needs "
                "an operator token",
            )
        return principal


def _unauthorized(presented: bool) -> Denied:
    if presented:
        return Denied(401, "UNAUTHORIZED", "the bearer token is not valid")
    return Denied(401, "UNAUTHORIZED", "this endpoint needs 'Authorization: Bearer <token>'")
