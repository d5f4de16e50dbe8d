"""Reading caudal's Kinesis records from the shell tests: a record is one envelope, or a packed
record in the KPL aggregated format (docs/CONTRACTS.md section 1a). `user_records` returns the
(partition key, data) pairs a record holds; the Rust reader (caudal_core::pack) is the strict
one, this one only needs to read what ingest wrote and fail loudly otherwise.
"""

import hashlib

MAGIC = b"\xf3\x89\x9a\xc2"


def _varint(b, i):
    v, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7


def _fields(b):
    """(field number, wire type, value) of one protobuf message; value is bytes or an int."""
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 2:
            n, i = _varint(b, i)
            v, i = b[i : i + n], i + n
        elif wire == 1:
            v, i = b[i : i + 8], i + 8
        elif wire == 5:
            v, i = b[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield field, wire, v


def user_records(data, partition_key):
    """[(partition key, data)] of one Kinesis record."""
    if not data.startswith(MAGIC):
        return [(partition_key, data)]
    body, digest = data[4:-16], data[-16:]
    if hashlib.md5(body).digest() != digest:
        raise ValueError("packed record with a wrong MD5")
    keys, out = [], []
    for field, wire, v in _fields(body):
        if field == 1 and wire == 2:
            keys.append(v.decode())
        elif field == 3 and wire == 2:
            index = data_ = None
            for f, w, x in _fields(v):
                if f == 1 and w == 0:
                    index = x
                elif f == 3 and w == 2:
                    data_ = x
            out.append((index, data_))
    return [(keys[i], d) for i, d in out]
