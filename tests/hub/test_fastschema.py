"""hub.fastschema: the quick check never passes params the JSON Schema validator refuses."""
from __future__ import annotations

import math
import random
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from hub import rpc
from hub.fastschema import quick_check

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["job", "amount"],
          "properties": {"job": {"type": "string", "minLength": 1, "maxLength": 4},
                         "amount": {"type": "integer", "minimum": 1, "maximum": 10},
                         "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                         "mode": {"enum": ["a", "b"]},
                         "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                         "at": {"type": ["string", "null"]}, "lat": {"type": "number", "maximum": 90}}}


@pytest.mark.parametrize(("value", "quick", "valid"), [
    ({"job": "j1", "amount": 3}, True, True),
    ({"job": "j1", "amount": 3, "currency": "GBP", "mode": "b", "tags": ["x"], "at": None, "lat": 1.5},
     True, True),
    ({"job": "j1", "amount": 3.0}, False, True),  # an integral float: the validator decides (valid)
    ({"job": "j1", "amount": True}, False, False),  # bools are not integers
    ({"job": "j1", "amount": 11}, False, False),
    ({"job": "", "amount": 3}, False, False),
    ({"job": "j1"}, False, False),
    ({"job": "j1", "amount": 3, "other": 1}, False, False),
    ({"job": "j1", "amount": 3, "currency": "gbp"}, False, False),
    ({"job": "j1", "amount": 3, "mode": "c"}, False, False),
    ({"job": "j1", "amount": 3, "tags": ["x", "y", "z"]}, False, False),
    ({"job": "j1", "amount": 3, "tags": [1]}, False, False),
    ({"job": "j1", "amount": 3, "lat": math.nan}, False, True),  # NaN: the validator decides
    ({"job": "j1", "amount": 3, "lat": False}, False, False),
    ([], False, False),
])
def test_quick_answers_and_the_validator_agrees(value: Any, quick: bool, valid: bool) -> None:
    check = quick_check(SCHEMA)
    assert check is not None
    assert check(value) is quick
    assert Draft202012Validator(SCHEMA).is_valid(value) is valid


def test_unknown_keywords_leave_the_validator_alone() -> None:
    # A property with one: the validator decides whenever it is present.
    check = quick_check({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}, "b": {}}})
    assert check is not None and check({"b": 1}) and not check({"a": "x"})
    assert quick_check({"oneOf": [{"type": "string"}]}) is None
    assert quick_check({"type": "array", "uniqueItems": True}) is None
    assert quick_check({"type": "object", "patternProperties": {"^x": {}}}) is None
    assert quick_check({"enum": [1, "1"]}) is None  # only string enums are compared here
    assert quick_check({"type": "string", "format": "email"}) is None


def _value(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """Something near what `schema` describes, often just outside it."""
    if rng.random() < 0.08 or not isinstance(schema, dict) or depth > 4:
        return rng.choice([None, True, False, 0, -1, 1.5, 2.0, math.nan, "", "x", "GBP", "a" * 300, [], {}, [1],
                           {"k": 1}, 10**13])
    if "enum" in schema:
        return rng.choice([*schema["enum"], "zz"])
    kinds = schema.get("type", rng.choice(["string", "integer", "object"]))
    kind = rng.choice(kinds) if isinstance(kinds, list) else kinds
    if kind == "string":
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 40)
        n = max(0, rng.choice([lo, hi, (lo + hi) // 2, lo - 1, hi + 1]))
        return rng.choice(["A", "b", "7", "-", " ", "é"]) * min(n, 500) if n else ""
    if kind in ("integer", "number"):
        lo, hi = schema.get("minimum", -1000), schema.get("maximum", 1000)
        pick = rng.choice([lo, hi, lo - 1, hi + 1, (lo + hi) // 2])
        return float(pick) + (0.5 if kind == "number" and rng.random() < 0.5 else 0) if rng.random() < 0.3 else pick
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "array":
        n = rng.randint(0, schema.get("maxItems", 3) + 1)
        return [_value(schema.get("items", {}), rng, depth + 1) for _ in range(n)]
    out: dict[str, Any] = {}
    for name, sub in schema.get("properties", {}).items():
        if name in schema.get("required", []) and rng.random() < 0.95 or rng.random() < 0.4:
            out[name] = _value(sub, rng, depth + 1)
    if rng.random() < 0.1:
        out["unexpected"] = 1
    return out


def test_every_registered_schema_agrees_with_the_validator() -> None:
    rng = random.Random(7)
    quick = [(name, m) for name, m in sorted(rpc.REGISTRY.items()) if m.quick is not None]
    assert len(quick) >= len(rpc.REGISTRY) - 3  # nearly every method's schema has a quick check
    passing = 0
    for name, m in quick:
        passed = 0
        for _ in range(300):
            value = _value(m.params, rng)
            if m.quick(value):  # type: ignore[misc]
                passed += 1
                assert m.validator.is_valid(value), (name, value)
        passing += passed > 0
    assert passing >= len(quick) * 3 // 4  # the generated params were often valid: the test tested
