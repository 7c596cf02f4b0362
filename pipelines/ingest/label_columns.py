"""A labels table read with pyarrow (CSV or Parquet), and its typed columns, each error naming the file and row."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from schemas.errors import SetupError

CLASS_SEPARATOR = ";"  # multilabel cells: class names separated by it; an empty cell is no class


def read_table(path: str, string_columns: list[str]) -> pa.Table:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems
    try:
        with FileSystems.open(path) as f:
            data = f.read()
    except Exception as e:  # noqa: BLE001 - any filesystem's "cannot open" becomes one message
        raise SetupError(f"cannot read labels file {path}: {e}") from None
    try:
        if data[:4] == b"PAR1":
            return pq.read_table(pa.BufferReader(data))
        opts = pcsv.ConvertOptions(column_types={c: pa.string() for c in string_columns})
        return pcsv.read_csv(pa.BufferReader(data), convert_options=opts)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        raise SetupError(f"labels file {path} is not readable CSV or Parquet: {e}") from None


def numbers(table: pa.Table, name: str, path: str, allow_empty: bool) -> np.ndarray:
    """A column as float64; raises SetupError naming the first row that is not a number."""
    col = table[name]
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        arr = col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    else:
        values = col.to_pylist()
        arr = np.empty(len(values), np.float64)
        for i, v in enumerate(values):
            try:
                if isinstance(v, bool):
                    raise TypeError
                arr[i] = np.nan if v is None or v == "" else float(v)
            except (TypeError, ValueError):
                raise SetupError(f"labels file {path} row {i + 1}: column {name!r} holds {v!r}, "
                                 f"expected a number") from None
    if not allow_empty:
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise SetupError(f"labels file {path} row {bad[0] + 1}: column {name!r} is "
                             f"{table[name][int(bad[0])].as_py()!r}, expected a finite number of seconds")
    return arr


def strings(table: pa.Table, name: str, path: str) -> list[str]:
    values = table[name].cast(pa.string()).to_pylist()
    for i, v in enumerate(values):
        if v is None or v == "":
            raise SetupError(f"labels file {path} row {i + 1}: column {name!r} is empty")
    return values


def class_order(names: set[str]) -> tuple[str, ...]:
    try:
        return tuple(sorted(names, key=int))
    except ValueError:
        return tuple(sorted(names))


def class_sets(table: pa.Table, name: str, path: str) -> list[list[str]]:
    """A column of `;`-separated class names as lists; raises SetupError naming a bad row."""
    out = []
    for i, v in enumerate(table[name].to_pylist()):
        if v is None:
            out.append([])
            continue
        if not isinstance(v, str):
            raise SetupError(f"labels file {path} row {i + 1}: column {name!r} holds {v!r}, expected class "
                             f"names separated by {CLASS_SEPARATOR!r} (or an empty cell for no class)")
        if not v.strip():
            out.append([])
            continue
        names = [n.strip() for n in v.split(CLASS_SEPARATOR)]
        if any(not n for n in names):
            raise SetupError(f"labels file {path} row {i + 1}: column {name!r} is {v!r}: a class name is empty "
                             f"after trimming (class names separated by {CLASS_SEPARATOR!r})")
        out.append(sorted(set(names)))
    return out


def normalize_id(value) -> str:
    """A labels cell as a video id: / separators, no leading ./."""
    v = str(value).replace("\\", "/")
    while v.startswith("./"):
        v = v[2:]
    return v
