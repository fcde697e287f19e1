"""Golden files: the bytes other languages' tests decode and must re-encode identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format, symbol_database
from shop.orders.v1 import orders_pb2  # noqa: F401  (registers the types)
from shop.payments.v1 import payments_pb2  # noqa: F401

from tests.golden.generate import manifest, messages

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
ENTRIES = json.loads((GOLDEN / "manifest.json").read_text())


def test_committed_golden_files_match_what_python_writes_today():
    assert json.loads(json.dumps(manifest())) == ENTRIES
    for stem, message in messages():
        assert (GOLDEN / f"{stem}.binpb").read_bytes() == message.SerializeToString(
            deterministic=True
        ), f"{stem}: run `python tests/golden/generate.py`"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_each_golden_file_decodes_to_its_manifest_and_re_encodes_byte_for_byte(entry):
    cls = symbol_database.Default().GetSymbol(entry["type"])
    data = (GOLDEN / entry["file"]).read_bytes()
    message = cls.FromString(data)
    assert json_format.MessageToDict(message) == entry["json"]
    assert message.SerializeToString(deterministic=True) == data
