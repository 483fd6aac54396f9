"""orjson writes the canonical text (``canonical_json``) only where it is byte for byte the stdlib's,
which ``normalize.content_hash`` defines and every stored change hash was taken of."""

from __future__ import annotations

import datetime as dt
import json
import random
import struct

import pytest

from billingo_pipeline.billingo_client import parse_json_body
from billingo_pipeline.canonical_json import NonFiniteNumber, orjson_canonical, read_json_text
from billingo_pipeline.normalize import change_hash
from billingo_pipeline.simulator.data import generate_documents
from billingo_pipeline.warehouse.documents import raw_document

from .test_client import _response


def _stdlib(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_simulator_documents_take_the_fast_path_and_hash_as_before():
    documents = generate_documents(11, 2_000, today=dt.date(2026, 11, 30))
    for document in documents:
        assert orjson_canonical(document) == _stdlib(document)  # never None for what Billingo sends
        raw = raw_document(document["id"], document)
        assert raw.content_hash == change_hash(document)
        assert raw.text.encode("utf-8") == _stdlib(document) and raw.verbatim is None
    # Both branches of the change hash were walked: with and without the fake paid_date.
    assert {d["payment_status"] == "paid" for d in documents} == {True, False}


def test_any_float_is_written_as_the_stdlib_writes_it_or_left_to_it():
    rng = random.Random(5)
    fast = 0
    for _ in range(100_000):
        value = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if value != value or value in (float("inf"), float("-inf")):
            continue
        text = orjson_canonical({"v": value})
        if text is not None:
            assert text == _stdlib({"v": value}), value
            fast += 1
    assert fast > 10_000  # the check is not vacuous: most floats take the fast path
    for money in (0.1, 12700.5, -0.0, 123.0, 1e15, 9007199254740993.0, 1e16, 1.5e300):
        assert orjson_canonical([money]) == _stdlib([money])


def test_every_character_is_escaped_as_the_stdlib_escapes_it():
    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(characters), 4096):
        chunk = characters[start:start + 4096]
        assert orjson_canonical(chunk) == _stdlib(chunk)
    assert orjson_canonical({chr(c): c for c in (0x1F600, 0xFFFF, 0xE9, 0x41, 0x7F, 0x00)}) == _stdlib(
        {chr(c): c for c in (0x1F600, 0xFFFF, 0xE9, 0x41, 0x7F, 0x00)})


@pytest.mark.parametrize(
    "value",
    [
        {"lone": "\ud800"},
        {"big": 2**64},
        {"tiny": 1e-07},
        {"tiny": 2.5e-05},
        read_json_text('{"nan": NaN, "inf": [Infinity, -Infinity]}'),
    ],
    ids=["lone-surrogate", "beyond-64-bits", "exponent", "fixed-vs-exponent", "non-finite"],
)
def test_what_orjson_would_write_differently_is_left_to_the_stdlib(value):
    assert orjson_canonical(value) is None


def test_non_finite_numbers_are_read_as_non_finite_numbers():
    parsed = parse_json_body(_response(b'{"amount": NaN, "big": Infinity, "small": -Infinity, "ok": 1.5}'))
    assert [type(parsed[k]) for k in ("amount", "big", "small")] == [NonFiniteNumber] * 3
    assert type(parsed["ok"]) is float
    # And so they are stored losslessly (verbatim), never as the null orjson would write.
    raw = raw_document(1, {"id": 1, **parsed})
    assert raw.verbatim is not None and "NaN" in raw.verbatim and "Infinity" in raw.verbatim
