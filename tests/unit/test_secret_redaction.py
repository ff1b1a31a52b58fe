"""Secrets never reach a log line through a traceback (no frame locals); a notification channel
masks the secrets a provider echoes in its error, and a database error the password, before the
message is shortened (a secret cut in two would escape the mask); and a channel whose answer
cannot be read fails like any other channel (typed, without its URL), never with a raw httpx
exception whose traceback would carry the webhook URL."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog

from orchestrator.config_bcp import NotifyRetry
from orchestrator.errors import PermanentError
from orchestrator.observability.logging import configure_logging
from orchestrator.providers.notify_http import MAX_DETAIL, HttpSender, Notice
from orchestrator.providers.notify_slack import SlackNotifier

PASSWORD = "pg-password-s3cr3t-0123456789"
HOOK_URL = "https://hooks.example.invalid/services/T0/B0/webhooksecret0123456789"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers, config = root.level, list(root.handlers), structlog.get_config()
    stream = io.StringIO()
    configure_logging("debug", stream)
    try:
        yield stream
    finally:
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)
        root.setLevel(level)
        structlog.configure(**config)


def connect(dsn: str, password: str) -> None:
    kwargs = {"password": password, "connect_timeout": 1}
    raise ConnectionError(f"cannot connect to {dsn} with {len(kwargs)} options")


def test_a_logged_traceback_carries_no_frame_locals(log_stream: io.StringIO) -> None:
    try:
        connect("host=db1 user=helios", PASSWORD)
    except ConnectionError:
        structlog.get_logger("t").exception("structlog: connect failed")
        logging.getLogger("lib").debug("stdlib: connect failed", exc_info=True)
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["structlog: connect failed", "stdlib: connect failed"]
    for entry in lines:
        # Still a structured traceback, down to the raising function ...
        (exc,) = entry["exception"]
        assert exc["exc_type"] == "ConnectionError"
        assert [f["name"] for f in exc["frames"]][-1] == "connect"
        # ... but without the frames' variables, where the password is.
        assert all(f.get("locals") is None for f in exc["frames"])
    leaked = PASSWORD in log_stream.getvalue()
    assert not leaked, "the password reached the log through a traceback"


async def test_an_undecodable_answer_is_a_permanent_error_without_the_url() -> None:
    def garbled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    sender = HttpSender("slack", "slack", 2.0, NotifyRetry(attempts=3), [HOOK_URL])
    await sender.aclose()
    sender._client = httpx.AsyncClient(transport=httpx.MockTransport(garbled))
    try:
        with pytest.raises(PermanentError) as err:
            await sender.call("POST", HOOK_URL, ok={200}, json={"text": "hello"})
    finally:
        await sender.aclose()
    message = str(err.value)
    assert message == "slack (slack): unreadable answer (DecodingError)"
    assert err.value.__cause__ is None and err.value.__suppress_context__


def sender_answering(answer: httpx.Response, secrets: list[str]) -> HttpSender:
    sender = HttpSender("hook", "webhook", 2.0, NotifyRetry(attempts=1), secrets)
    sender._client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: answer))
    return sender


@pytest.mark.parametrize("cut", [6, 12, 20, 39])
async def test_a_secret_echoed_across_the_clip_is_masked_whole(cut: int) -> None:
    token = "T0K3N-" + "x" * 34  # 40 characters
    # The provider's error quotes the token so that the clip at MAX_DETAIL falls inside it.
    echo = "e" * (MAX_DETAIL - 1 - cut) + token + " and more"
    answer = httpx.Response(400, json={"message": echo})
    sender = sender_answering(answer, [token])
    try:
        with pytest.raises(PermanentError) as err:
            await sender.call("POST", "https://hook.example.invalid/x", ok={200})
    finally:
        await sender.aclose()
    message = str(err.value)
    assert "***" in message
    assert token[:cut] not in message.rsplit("e" * 8, maxsplit=1)[-1]  # not even its head


async def test_slack_masks_its_url_before_clipping_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = "https://hooks.example.invalid/services/T0/B0/" + "s" * 24
    monkeypatch.setenv("T_HOOK", hook)
    from orchestrator.config_bcp import SlackChannel

    cfg = SlackChannel.model_validate(
        {"name": "slack", "kind": "slack", "webhook_url": "env:T_HOOK", "retry": {"attempts": 1}}
    )
    slack = SlackNotifier(cfg)
    await slack._http.aclose()
    text = "invalid_token " + "p" * (MAX_DETAIL - 30) + hook
    answer = httpx.Response(403, text=text)
    slack._http._client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: answer))
    try:
        with pytest.raises(PermanentError) as err:
            await slack.send(Notice(event="t", title="t", text="hi", service="s", sent_at=0.0))
    finally:
        await slack.aclose()
    message = str(err.value)
    assert "https://hooks" not in message and "services/T0" not in message


@pytest.mark.parametrize("cut", [6, 12, 20])
def test_a_password_in_a_database_error_is_masked_before_the_cut(cut: int) -> None:
    import psycopg

    from probes.postgres import classify_postgres_error

    prefix = "OperationalError: "
    text = "q" * (200 - 3 - len(prefix) - cut) + PASSWORD + " trailing words"
    _, msg = classify_postgres_error(psycopg.OperationalError(text), PASSWORD)
    assert len(msg) <= 200
    head_leaked = PASSWORD[:cut] in msg
    assert not head_leaked, f"the first {cut} characters of the password escaped the mask"
