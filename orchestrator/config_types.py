"""Field types shared by every configuration section: durations, secret references, names,
IP addresses and URLs.

Guarantees: durations accept ``300s``, ``5m``, ``1h``, ``800ms`` or a number of seconds; secrets
are only accepted by reference (``env:NAME`` or ``file:PATH``) and resolved at load time into
:class:`pydantic.SecretStr`, so their values never appear in ``repr``, logs or the JSON Schema.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, SecretStr, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Parse ``300s`` / ``5m`` / ``1h`` / ``800ms`` / a number into seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300s, 5m or 800ms")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"invalid duration {value!r}: expected a number with unit ms, s, m or h")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h)?$"},
            ],
            "description": "Duration: seconds as a number, or a string with unit ms, s, m or h.",
        }
    ),
]

_SECRET_REF = re.compile(r"^(env|file):(.+)$")


def resolve_secret(ref: object) -> SecretStr:
    """Resolve an ``env:NAME`` or ``file:PATH`` reference. Literal secrets are refused."""
    if not isinstance(ref, str):
        raise ValueError("expected a secret reference env:NAME or file:PATH")
    m = _SECRET_REF.match(ref)
    if not m:
        raise ValueError(
            "secrets are only accepted by reference: use env:NAME or file:PATH, "
            "not the secret itself"
        )
    scheme, where = m.group(1), m.group(2)
    if scheme == "env":
        if where not in os.environ:
            raise ValueError(f"environment variable {where} is not set")
        return SecretStr(os.environ[where])
    path = Path(where)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {where}: {exc.strerror or exc}") from None
    return SecretStr(text.rstrip("\r\n"))


SecretRef = Annotated[
    SecretStr,
    BeforeValidator(resolve_secret),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(env|file):.+$",
            "description": "Secret reference: env:NAME or file:PATH.",
        }
    ),
]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-63 lower-case letters, digits and dashes, "
            "starting and ending with a letter or digit"
        )
    return value


Name = Annotated[
    str,
    AfterValidator(_check_name),
    WithJsonSchema({"type": "string", "pattern": _NAME.pattern}),
]


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


IpAddress = Annotated[str, AfterValidator(_check_ip)]


def check_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("expected an http:// or https:// URL")
    return value
