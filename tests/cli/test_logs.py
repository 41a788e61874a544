"""Log formatting and size parsing used by the long-running processes."""

from __future__ import annotations

import json
import logging

import pytest

from dcnr.cli.logs import JsonFormatter, parse_size


@pytest.mark.parametrize("text, want", [("4GiB", 4 * 2**30), ("512MiB", 512 * 2**20), ("2G", 2 * 10**9),
                                        ("1000", 1000), (" 1.5 kib ", 1536), ("3TB", 3 * 10**12)])
def test_sizes(text: str, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "GiB", "-1GiB", "0", "4XB", "four"])
def test_bad_sizes_are_clear_errors(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_json_lines_carry_extra_fields() -> None:
    record = logging.LogRecord("dcnr.orchestrator", logging.INFO, __file__, 1, "PNode %s registered", ("p1",), None)
    record.pnode = "p1"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "PNode p1 registered" and doc["pnode"] == "p1" and doc["level"] == "info"
    assert doc["logger"] == "dcnr.orchestrator" and doc["ts"].endswith("Z")
