#!/usr/bin/env python3
"""Writes the Parquet fixtures of src/data/parquet_rows.rs (tests/fixtures/parquet/).

    python3 -m venv /tmp/venv-pq && /tmp/venv-pq/bin/pip install pyarrow
    /tmp/venv-pq/bin/python scripts/make_parquet_fixture.py [OUT_DIR]

Files written by pyarrow, as Hugging Face datasets' shards are, a few KB each:
  chat.parquet           messages: list<struct<role, content>> + id: int64, row groups of 2
                         rows, snappy (pyarrow's default, and HF's)
  chat_zstd.parquet      the same rows, zstd
  chat_gzip.parquet      the same rows, gzip
  chat_lz4.parquet       the same rows, lz4 (pyarrow writes LZ4_RAW)
  chat_plain.parquet     the same rows, uncompressed, no dictionary, data page v2
  nulls.parquet          a null in each kind of place: a null string, int, list, list element,
                         struct field
  types.parquet          the other types, one column each
  text/shard-00000.parquet, text/shard-00001.parquet    text: string, for the glob
and the hostile ones, made from chat.parquet:
  truncated.parquet      its first 60% (no footer)
  huge_footer.parquet    its footer length field set to 0x7fffffff
  random.parquet         1,000 random bytes
  corrupt_pages.parquet  its column data overwritten with random bytes, footer intact

expected.json: for each readable file, its rows as pyarrow's `Table.to_pylist()` gives them
(an independent reference), made JSON the way parquet_rows maps types: bytes -> str when UTF-8
(else a list of byte values), date/time/datetime -> isoformat, Decimal -> str, map -> object.
"""
import datetime
import decimal
import json
import os
import random
import sys

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "tests", "fixtures", "parquet")

MSG = pa.struct([("role", pa.string()), ("content", pa.string())])

CHAT = [
    {"id": 0, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}]},
    {"id": 1, "messages": [
        {"role": "user", "content": "Unicode: café ☕ 日本語 🚀, a \"quote\", a\nnewline, a tab\t."},
        {"role": "assistant", "content": "Noted."}]},
    {"id": 2, "messages": []},
    {"id": 3, "messages": [
        {"role": "user", "content": "Count: " + " ".join(str(i) for i in range(60))},
        {"role": "assistant", "content": "That is sixty numbers. " * 4}]},
    {"id": 4, "messages": [{"role": "user", "content": ""}]},
    {"id": 5, "messages": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"}]},
    {"id": 6, "messages": [{"role": "assistant", "content": "Last row, alone in its row group."}]},
]
CHAT_SCHEMA = pa.schema([("messages", pa.list_(MSG)), ("id", pa.int64())])

NULLS = [
    {"id": 0, "text": "first", "score": 1.5, "flag": True,
     "messages": [{"role": "user", "content": "ok"}]},
    {"id": None, "text": None, "score": None, "flag": None, "messages": None},
    {"id": 2, "text": "third", "score": -0.25, "flag": False,
     "messages": [None, {"role": "user", "content": None}, {"role": None, "content": "x"}]},
    {"id": 3, "text": "", "score": 0.0, "flag": None, "messages": []},
]
NULLS_SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string()), ("score", pa.float64()),
                          ("flag", pa.bool_()), ("messages", pa.list_(MSG))])

TYPES_SCHEMA = pa.schema([
    ("i8", pa.int8()), ("i16", pa.int16()), ("i32", pa.int32()), ("i64", pa.int64()),
    ("u8", pa.uint8()), ("u16", pa.uint16()), ("u32", pa.uint32()), ("u64", pa.uint64()),
    ("f32", pa.float32()), ("f64", pa.float64()), ("b", pa.bool_()),
    ("bin", pa.binary()), ("large", pa.large_string()),
    ("dict", pa.dictionary(pa.int32(), pa.string())),
    ("ints", pa.list_(pa.int64())), ("nested", pa.list_(pa.list_(pa.string()))),
    ("st", pa.struct([("a", pa.int32()), ("inner", pa.struct([("c", pa.string())]))])),
    ("date", pa.date32()), ("ts_ms", pa.timestamp("ms")), ("ts_us", pa.timestamp("us")),
    ("t_ms", pa.time32("ms")), ("t_us", pa.time64("us")),
    ("dec", pa.decimal128(10, 2)), ("dec_big", pa.decimal128(38, 3)),
    ("map", pa.map_(pa.string(), pa.int64())),
])
TYPES = [
    {"i8": -128, "i16": -32768, "i32": -2147483648, "i64": -9223372036854775808,
     "u8": 255, "u16": 65535, "u32": 4294967295, "u64": 18446744073709551615,
     "f32": 0.5, "f64": 3.141592653589793, "b": True,
     "bin": b"plain bytes", "large": "large string", "dict": "red",
     "ints": [1, 2, 3], "nested": [["a", "b"], [], ["c"]],
     "st": {"a": 7, "inner": {"c": "deep"}},
     "date": datetime.date(2024, 2, 29), "ts_ms": datetime.datetime(2024, 1, 2, 3, 4, 5, 678000),
     "ts_us": datetime.datetime(1969, 12, 31, 23, 59, 59, 999999),
     "t_ms": datetime.time(13, 14, 15, 16000), "t_us": datetime.time(0, 0, 0, 1),
     "dec": decimal.Decimal("-0.05"), "dec_big": decimal.Decimal("-12345678901234567890123456789012345.678"),
     "map": [("k1", 1), ("k2", 2)]},
    {"i8": 127, "i16": 32767, "i32": 2147483647, "i64": 9223372036854775807,
     "u8": 0, "u16": 0, "u32": 0, "u64": 0,
     "f32": -2.25, "f64": -1e300, "b": False,
     "bin": b"\xff\xfe not utf-8", "large": "", "dict": "red",
     "ints": [], "nested": [],
     "st": {"a": None, "inner": None},
     "date": datetime.date(1970, 1, 1), "ts_ms": datetime.datetime(2000, 1, 1),
     "ts_us": datetime.datetime(2262, 4, 11, 23, 47, 16, 854775),
     "t_ms": datetime.time(0, 0), "t_us": datetime.time(23, 59, 59, 999999),
     "dec": decimal.Decimal("12345678.90"), "dec_big": decimal.Decimal("0.001"),
     "map": []},
    {"i8": 0, "i16": 1, "i32": 2, "i64": 3, "u8": 4, "u16": 5, "u32": 6, "u64": 7,
     "f32": 1e-3, "f64": 1e-300, "b": None,
     "bin": b"", "large": "x", "dict": "blue",
     "ints": None, "nested": [None, ["d"]],
     "st": None,
     "date": datetime.date(1900, 3, 1), "ts_ms": None, "ts_us": datetime.datetime(1900, 1, 1, 0, 0, 0, 1),
     "t_ms": None, "t_us": None,
     "dec": decimal.Decimal("100.00"), "dec_big": None,
     "map": None},
]

TEXT_SHARDS = [
    [{"text": "shard zero, row zero"}, {"text": "shard zero, row one"}],
    [{"text": "shard one, row zero"}, {"text": "Ünïcödé ✓"}, {"text": ""}],
]


def to_json(v, t):
    """A to_pylist() value `v` of arrow type `t` made JSON as parquet_rows maps it."""
    if v is None:
        return None
    if pa.types.is_map(t):
        return {str(k): to_json(x, t.item_type) for k, x in v}
    if pa.types.is_struct(t):
        return {t.field(i).name: to_json(v[t.field(i).name], t.field(i).type)
                for i in range(t.num_fields)}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [to_json(x, t.value_type) for x in v]
    if pa.types.is_dictionary(t):
        return to_json(v, t.value_type)
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return list(v)
    if isinstance(v, (datetime.date, datetime.time)):  # a datetime is a date
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    return v


def write(name, table, **kw):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, **kw)
    return path


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    def record(name, path, columns=None):
        table = pq.read_table(path, columns=columns)  # read back: the reference
        expected[name] = [{f.name: to_json(r[f.name], f.type) for f in table.schema}
                          for r in table.to_pylist()]

    chat = pa.Table.from_pylist(CHAT, schema=CHAT_SCHEMA)
    chat_path = write("chat.parquet", chat, row_group_size=2, compression="snappy")
    record("chat.parquet", chat_path)
    assert pq.ParquetFile(chat_path).metadata.num_row_groups == 4
    for name, comp in [("chat_zstd.parquet", "zstd"), ("chat_gzip.parquet", "gzip"),
                       ("chat_lz4.parquet", "lz4")]:
        record(name, write(name, chat, row_group_size=3, compression=comp))
    record("chat_plain.parquet", write("chat_plain.parquet", chat, compression="none",
                                       use_dictionary=False, data_page_version="2.0"))

    record("nulls.parquet", write("nulls.parquet", pa.Table.from_pylist(NULLS, schema=NULLS_SCHEMA),
                                  row_group_size=2))
    record("types.parquet", write("types.parquet", pa.Table.from_pylist(TYPES, schema=TYPES_SCHEMA)))

    text_schema = pa.schema([("text", pa.string())])
    for i, rows in enumerate(TEXT_SHARDS):
        name = f"text/shard-{i:05d}.parquet"
        record(name, write(name, pa.Table.from_pylist(rows, schema=text_schema)))

    # Hostile files, from chat.parquet.
    data = open(chat_path, "rb").read()
    rng = random.Random(1234)
    with open(os.path.join(OUT, "truncated.parquet"), "wb") as f:
        f.write(data[: len(data) * 6 // 10])
    with open(os.path.join(OUT, "huge_footer.parquet"), "wb") as f:
        f.write(data[:-8] + (0x7FFFFFFF).to_bytes(4, "little") + b"PAR1")
    with open(os.path.join(OUT, "random.parquet"), "wb") as f:
        f.write(bytes(rng.randrange(256) for _ in range(1000)))
    footer_len = int.from_bytes(data[-8:-4], "little")
    body_end = len(data) - 8 - footer_len
    corrupt = bytearray(data)
    for i in range(4, body_end):
        corrupt[i] = rng.randrange(256)
    with open(os.path.join(OUT, "corrupt_pages.parquet"), "wb") as f:
        f.write(bytes(corrupt))

    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    total = 0
    for root, _, files in os.walk(OUT):
        for n in files:
            total += os.path.getsize(os.path.join(root, n))
    print(f"wrote {OUT} ({total} bytes), pyarrow {pa.__version__}")


if __name__ == "__main__":
    main()
