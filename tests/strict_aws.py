"""Strict AWS request checks: every request a test sends is validated against botocore's service model.

Why instrument the client: moto (the AWS stand-in these tests run against) accepts requests AWS
rejects, and botocore's own client-side validator checks types, required members and minimums only.
AWS enforces every constraint of the model: ``pattern``, ``min``/``max`` length, ``enum``, ranges.
This plugin wraps :meth:`botocore.client.BaseClient._make_api_call` in the test process, checks the
parameters against the operation's input shape with all of those rules, and fails the test that
sent a violating request (at teardown, with every violation listed), even when the product code
caught the error the call raised.

:func:`request_violations` is also usable directly, for requests built but not sent (the ``aws``
target's requests).
"""

from __future__ import annotations

import datetime
import functools
import threading
from typing import Any

import pytest

_VIOLATIONS: list[str] = []
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _service_model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@functools.lru_cache(maxsize=None)
def _compiled(pattern: str):
    """A Java-style model pattern for the ``regex`` module (which knows ``\\p{L}`` and friends).

    Some models quantify the end anchor (``...$``{1,256}``): a no-op in Java, an error here.
    """
    import re

    import regex

    cleaned = re.sub(r"\$\{\d+(,\d*)?\}", "$", pattern)
    try:
        return regex.compile(cleaned)
    except regex.error:
        return None


def request_violations(service: str, operation: str, params: dict) -> list[str]:
    """Every constraint of ``service``'s ``operation`` input shape that ``params`` breaks.

    :param service: botocore service name (``sagemaker``, ``ce``, ``athena``, ...).
    :param operation: API operation name (``CreateTrainingJob``).
    :param params: the request parameters as passed to the client.
    """
    model = _service_model(service).operation_model(operation)
    errors: list[str] = []
    if model.input_shape is not None:
        _check(model.input_shape, params, operation, errors)
    return errors


def _check(shape, value: Any, path: str, errors: list[str]) -> None:  # noqa: C901 - one walk, one place
    kind = shape.type_name
    meta = shape.metadata
    if value is None:
        return
    if kind == "structure":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a structure, got {type(value).__name__}")
            return
        for name in shape.required_members:
            if name not in value:
                errors.append(f"{path}: missing required member {name}")
        for name, member_value in value.items():
            if name not in shape.members:
                errors.append(f"{path}: unknown member {name}")
                continue
            _check(shape.members[name], member_value, f"{path}.{name}", errors)
        return
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        _bounds(len(value), meta, path, "items", errors)
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]", errors)
        return
    if kind == "map":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        _bounds(len(value), meta, path, "entries", errors)
        for key, item in value.items():
            _check(shape.key, key, f"{path} key {key!r}", errors)
            _check(shape.value, item, f"{path}[{key!r}]", errors)
        return
    if kind == "string":
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {type(value).__name__}")
            return
        _bounds(len(value), meta, path, "characters", errors)
        enum = shape.enum
        if enum and value not in enum:
            errors.append(f"{path}: {value!r} is not one of {list(enum)}")
        pattern = meta.get("pattern")
        if pattern:
            compiled = _compiled(pattern)
            if compiled is not None and compiled.fullmatch(value) is None:
                errors.append(f"{path}: {value!r} does not match the pattern {pattern}")
        return
    if kind in ("integer", "long", "float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected a number, got {type(value).__name__}")
            return
        low, high = meta.get("min"), meta.get("max")
        if low is not None and value < low:
            errors.append(f"{path}: {value} is below the minimum {low}")
        if high is not None and value > high:
            errors.append(f"{path}: {value} is above the maximum {high}")
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean, got {type(value).__name__}")
        return
    if kind == "blob":
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, (bytes, bytearray)):
            _bounds(len(value), meta, path, "bytes", errors)
        return
    if kind == "timestamp":
        if not isinstance(value, (datetime.datetime, datetime.date, str, int, float)):
            errors.append(f"{path}: expected a timestamp, got {type(value).__name__}")


def _bounds(size: int, meta: dict, path: str, unit: str, errors: list[str]) -> None:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and size < low:
        errors.append(f"{path}: {size} {unit}, the minimum is {low}")
    if high is not None and size > high:
        errors.append(f"{path}: {size} {unit}, the maximum is {high}")


def _instrument() -> None:
    from botocore.client import BaseClient

    if getattr(BaseClient._make_api_call, "_strict_aws", False):
        return
    original = BaseClient._make_api_call

    @functools.wraps(original)
    def _make_api_call(self, operation_name, api_params):
        service = self.meta.service_model.service_name
        errors = request_violations(service, operation_name, api_params)
        if errors:
            with _LOCK:
                _VIOLATIONS.extend(f"{service}.{operation_name}: {e}" for e in errors)
        return original(self, operation_name, api_params)

    _make_api_call._strict_aws = True
    BaseClient._make_api_call = _make_api_call


_instrument()  # on import: conftest imports this module before any test creates a client


@pytest.fixture(autouse=True)
def strict_aws_requests():
    """Fail the test when any AWS request it sent breaks the service model."""
    with _LOCK:
        _VIOLATIONS.clear()
    yield
    with _LOCK:
        found, _VIOLATIONS[:] = list(_VIOLATIONS), []
    if found:
        pytest.fail("AWS would reject these requests (moto accepted them):\n  " + "\n  ".join(found[:50]),
                    pytrace=False)

