"""A dependency-free writer and reader of the tf.train.Example wire format.

Beam workers build records without importing TensorFlow (seconds of start-up and a GB of
image per worker); the layout follows tensorflow/core/example/{example,feature}.proto and
round-trip tests check it against tf.io.parse_single_example.
"""
from __future__ import annotations

import struct
from typing import Iterable, Iterator, Mapping, Sequence, Union

import numpy as np

FeatureValue = Union[Sequence[bytes], Sequence[float], Sequence[int], np.ndarray]


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 values are written as their two's complement uint64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def bytes_feature(values: Iterable[bytes]) -> bytes:
    return _field(1, b"".join(_field(1, bytes(v)) for v in values))


def float_feature(values: Iterable[float]) -> bytes:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype="<f4")
    return _field(2, _field(1, arr.tobytes()) if arr.size else b"")


def int64_feature(values: Iterable[int]) -> bytes:
    packed = b"".join(_varint(int(v)) for v in values)
    return _field(3, _field(1, packed) if packed else b"")


def serialize_example(features: Mapping[str, bytes]) -> bytes:
    """Serializes an Example from {key: an encoded Feature from the *_feature functions}."""
    entries = b"".join(_field(1, _field(1, k.encode("utf-8")) + _field(2, v))
                       for k, v in sorted(features.items()))
    return _field(1, entries)


# ---- reader (tests and `clipforge validate` use it to read shards without TensorFlow) ----

def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview):
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            n, pos = _read_varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field")
            yield number, wire, buf[pos:pos + n]
            pos += n
        elif wire == 0:
            v, pos = _read_varint(buf, pos)
            yield number, wire, v
        elif wire == 5:
            yield number, wire, buf[pos:pos + 4]
            pos += 4
        elif wire == 1:
            yield number, wire, buf[pos:pos + 8]
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _entries(data: bytes) -> Iterator[tuple[str, memoryview]]:
    """(key, serialized Feature) of every entry of a serialized Example's feature map."""
    for num, _, features in _fields(memoryview(data)):
        if num != 1:
            continue
        for fnum, _, entry in _fields(features):
            if fnum != 1:
                continue
            key, value = None, memoryview(b"")
            for enum, _, payload in _fields(entry):
                if enum == 1:
                    key = bytes(payload).decode("utf-8")
                elif enum == 2:
                    value = payload
            yield key, value


def parse_example(data: bytes) -> dict[str, list]:
    """Parses a serialized Example into {key: list of bytes | float | int}."""
    return {key: _parse_feature(memoryview(value)) for key, value in _entries(data)}


def _parse_feature(buf: memoryview) -> list:
    for kind, _, lst in _fields(buf):
        vals: list = []
        for num, wire, payload in _fields(lst):
            if num != 1:
                continue
            if kind == 1:
                vals.append(bytes(payload))
            elif kind == 2:
                vals.extend(np.frombuffer(bytes(payload), "<f4").tolist() if wire == 2
                            else struct.unpack("<f", bytes(payload)))
            elif kind == 3:
                if wire == 2:
                    p = 0
                    while p < len(payload):
                        v, p = _read_varint(payload, p)
                        vals.append(v - (1 << 64) if v >= 1 << 63 else v)
                else:
                    vals.append(payload - (1 << 64) if payload >= 1 << 63 else payload)
        return vals
    return []


def replace_features(data: bytes, features: Mapping[str, bytes]) -> bytes:
    """A serialized Example with some features replaced (or added): {key: encoded Feature}; the
    others are kept byte for byte, so the result equals serializing the new feature set."""
    return serialize_example({**{key: bytes(value) for key, value in _entries(data)}, **features})
