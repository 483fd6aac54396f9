"""The canonical JSON text that change hashes are taken of, written fast.

``normalize.content_hash`` defines the text with the standard library: sorted keys, no
whitespace, UTF-8. orjson writes the same bytes several times faster for the JSON Billingo sends,
and ``orjson_canonical`` returns its text only where the two provably agree (None elsewhere, and
the caller takes the stdlib's):

- orjson refuses what is not plain JSON: a lone surrogate, an integer beyond 64 bits, a mapping
  that is not a dict, a float subclass such as ``NonFiniteNumber``;
- orjson and the stdlib (``repr``) format some floats differently (``1e-7`` / ``1e-07``,
  ``0.000025`` / ``2.5e-05``): a text with a digit before ``e-`` or with ``0.0000`` is left to the
  stdlib (the same characters inside a string only cost speed);
- orjson writes NaN and the infinities as ``null``. Billingo's NaN never reaches it as a plain
  float: a page is read by orjson, which refuses NaN, or else by the stdlib through
  ``read_json_text``, which reads NaN and the infinities as ``NonFiniteNumber``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class NonFiniteNumber(float):
    """NaN, Infinity or -Infinity as read from JSON text: a float like any other, whose type tells
    the fast serializer to step aside (it would write ``null`` for the value)."""


def read_json_text(text: str | bytes) -> Any:
    """The stdlib's reading of a JSON text, with NaN and the infinities as ``NonFiniteNumber``."""
    return json.loads(text, parse_constant=NonFiniteNumber)


def orjson_canonical(payload: Any) -> bytes | None:
    """The canonical text of ``payload`` exactly as the stdlib writes it, or None when orjson's
    could differ (see the module's docstring)."""
    try:
        text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError is one
        return None
    if _may_differ_from_stdlib_floats(text):
        return None
    return text


def _may_differ_from_stdlib_floats(text: bytes) -> bool:
    # Literal searches, not a regular expression: a regex starting with a digit class scans every
    # position in Python's engine and cost more than orjson's whole serialization.
    if b"0.0000" in text:
        return True
    at = text.find(b"e-")
    while at != -1:
        if 0x30 <= text[at - 1] <= 0x39:  # a digit before "e-": an exponent
            return True
        at = text.find(b"e-", at + 2)
    return False
