"""A quick "certainly valid" test for rpc params, ahead of the JSON Schema validator.

`quick_check(schema)` turns a schema written with the keywords rpc methods use (type, properties,
required, additionalProperties, items, string lengths and patterns, numeric bounds, string enums,
counts of items and properties) into a plain predicate. It answers True only for an instance the
schema accepts, in a few microseconds; False means "ask the validator", which then finds the
error and its message. A schema with any other keyword compiles to None: the validator alone
decides. jsonschema's full walk costs far more than the check it makes for the small, valid
params that nearly every call carries.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

# Keywords that say nothing about validity.
_NOTES = frozenset({"description", "title", "examples", "$comment", "default"})

_TYPES: dict[str, Check] = {
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,  # bools are not integers; 1.0 is left to the validator
    "number": lambda v: (type(v) is int) or (type(v) is float and v == v),  # NaN: the validator
    "boolean": lambda v: type(v) is bool,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "null": lambda v: v is None,
}


def quick_check(schema: Any) -> Check | None:
    """The predicate for `schema`, or None when it uses a keyword this module does not know."""
    if not isinstance(schema, dict):
        return None
    checks: list[Check] = []
    for key, value in schema.items():
        if key in _NOTES or key in ("properties", "additionalProperties"):
            continue
        made = _keyword(key, value, schema)
        if made is None:
            return None
        checks.append(made)
    if "properties" in schema or "additionalProperties" in schema:
        made = _object(schema)
        if made is None:
            return None
        checks.append(made)
    return lambda v: all(check(v) for check in checks)


def _ask(v: Any) -> bool:
    return False


def _keyword(key: str, value: Any, schema: dict[str, Any]) -> Check | None:
    if key == "type":
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(n, str) and n in _TYPES for n in names):
            return None
        tests = [_TYPES[n] for n in names]
        return tests[0] if len(tests) == 1 else (lambda v: any(t(v) for t in tests))
    if key in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        if type(value) is not int:
            return None
        kind = {"L": str, "I": list, "P": dict}[key[3]]  # minLength, maxItems, minProperties, ...
        if key.startswith("min"):
            return lambda v: type(v) is not kind or len(v) >= value
        return lambda v: type(v) is not kind or len(v) <= value
    if key in ("minimum", "maximum"):
        if type(value) not in (int, float):
            return None
        if key == "minimum":
            return lambda v: type(v) not in (int, float) or v >= value
        return lambda v: type(v) not in (int, float) or v <= value
    if key == "pattern":
        if not isinstance(value, str):
            return None
        search = re.compile(value).search
        return lambda v: type(v) is not str or search(v) is not None
    if key == "enum":
        if not isinstance(value, list) or not all(type(e) is str for e in value):
            return None
        allowed = frozenset(value)
        return lambda v: type(v) is str and v in allowed
    if key == "required":
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            return None
        wanted = tuple(value)
        return lambda v: type(v) is not dict or all(n in v for n in wanted)
    if key == "items":
        each = quick_check(value)
        if each is None or "prefixItems" in schema:
            return None
        return lambda v: type(v) is not list or all(each(x) for x in v)
    return None


def _object(schema: dict[str, Any]) -> Check | None:
    props = schema.get("properties", {})
    if not isinstance(props, dict) or "patternProperties" in schema:
        return None
    subs: dict[str, Check] = {}
    for name, sub in props.items():
        # A property this module cannot check (say a `oneOf`) sends the params to the validator
        # when present, and costs nothing when absent.
        subs[name] = quick_check(sub) or _ask
    extra = schema.get("additionalProperties", True)
    if extra is True:
        rest: Check | None = None
        closed = False
    elif extra is False:
        rest, closed = None, True
    else:
        rest, closed = quick_check(extra), False
        if rest is None:
            return None

    def check(v: Any) -> bool:
        if type(v) is not dict:
            return True
        for k, x in v.items():
            sub = subs.get(k)
            if sub is not None:
                if not sub(x):
                    return False
            elif closed or (rest is not None and not rest(x)):
                return False
        return True

    return check
