"""core.logs: JSON lines with the request id, and no secret ever reaches the output."""
from __future__ import annotations

import io
import json
import logging

from django.conf import settings

from core.logs import ContextFilter, JsonFormatter, request_id
from hub import auth


def make_logger() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.core.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_secrets_never_logged() -> None:
    logger, stream = make_logger()
    jwt = auth.mint("alice", "customer", settings.HUB_SECRET)
    bearer = "xyzSecretBearerValue0123456789"
    sk = "sk-proj-AbCdEf0123456789GhIjKlMn"
    ant = "sk-ant-api03-ZyXwVu9876543210"
    header_value = "Basic dXNlcjpwYXNzd29yZDEyMzQ1Njc4"
    token = request_id.set("conn1:7")
    try:
        logger.info("connect with token %s", jwt)
        logger.info("upstream call with Authorization: Bearer %s", bearer)
        logger.warning("provider key %s rejected; fallback key %s", sk, ant)
        logger.info("headers {'Authorization': '%s', 'x-api-key': '%s'}", header_value, sk)
        logger.info("authorization=%s", header_value)
        try:
            raise ValueError(f"bad token {jwt} / Bearer {bearer}")
        except ValueError:
            logger.exception("refresh failed")
    finally:
        request_id.reset(token)
    out = stream.getvalue()
    for secret in (jwt, bearer, sk, ant, header_value, jwt.split(".")[1]):
        assert secret not in out, secret
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert len(lines) == 6
    assert all(line["request_id"] == "conn1:7" for line in lines)
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert "[redacted]" in lines[0]["msg"]
    assert "exc" in lines[-1] and "[redacted]" in lines[-1]["exc"]
