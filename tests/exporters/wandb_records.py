"""Reads an offline W&B run's ``run-<id>.wandb`` back: the records wandb wrote, in order.

The file is a 7-byte W&B header then LevelDB's log format (32 KiB blocks of records, each with a
7-byte header: CRC32C, little-endian length, type FULL/FIRST/MIDDLE/LAST), each record payload a
``wandb_internal_pb2.Record``. wandb ships no Python reader of its own any more.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """Every record in the file."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's trailer, too short for a header
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zero padding: the rest of the file is unwritten
            break
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        parts = payload if kind in (FULL, FIRST) else parts + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(parts)
            yield record


def history(path: Path) -> list[dict[str, Any]]:
    """The rows ``run.log`` wrote, as {key: value}."""
    return [
        {_key(item): json.loads(item.value_json) for item in record.history.item}
        for record in records(path)
        if record.WhichOneof("record_type") == "history"
    ]


def summary(path: Path) -> dict[str, Any]:
    """The summary as its updates left it."""
    values: dict[str, Any] = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            values.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    return values


def config(path: Path) -> dict[str, Any]:
    """The config as its updates left it."""
    values: dict[str, Any] = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "config":
            values.update({_key(i): json.loads(i.value_json) for i in record.config.update})
    return values


def _key(item: Any) -> str:
    return str(item.key) if item.key else "/".join(item.nested_key)
