"""A split's features written for other tools (``selfsup embed``): ``FILE.npy`` (float32 (N, D))
with ``FILE.json`` (ids, labels, class names and where the features came from), or one Parquet
table (columns ``id``, ``label``, ``class``, ``feature``: a fixed-size list of D float32, the
rest of the metadata in the schema's ``selfsup`` key) when ``FILE`` ends in ``.parquet``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from selfsup.analysis.index import Embedded
from selfsup.atomic import atomic_path, write_atomic, write_json_atomic
from selfsup.errors import SelfsupError

NUMPY_SUFFIXES = (".npy", ".json")


def pyarrow_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def write_features(emb: Embedded, out: Path) -> list[Path]:
    """Write ``emb`` to ``out``; returns the files written."""
    out = Path(out)
    if out.suffix == ".parquet":
        return [_write_parquet(emb, out)]
    stem = out.with_suffix("") if out.suffix in NUMPY_SUFFIXES else out
    npy, side = stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".json")
    npy.parent.mkdir(parents=True, exist_ok=True)
    features = emb.features.numpy().astype(np.float32)
    write_atomic(npy, lambda f: np.save(f, features))
    write_json_atomic(side, {"features": npy.name, **emb.meta})
    return [npy, side]


def _write_parquet(emb: Embedded, out: Path) -> Path:
    if not pyarrow_available():
        raise SelfsupError(
            f"writing {out} needs pyarrow: pip install pyarrow (or give --out a name without "
            ".parquet for FILE.npy + FILE.json)"
        )
    import pyarrow as pa  # optional dependency, checked above
    import pyarrow.parquet as pq

    meta = emb.meta
    classes = meta["classes"]
    features = emb.features.numpy().astype(np.float32)
    feature = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])
    table = pa.table(
        {
            "id": pa.array([str(i) for i in meta["ids"]]),
            "label": pa.array(meta["labels"], type=pa.int64()),
            "class": pa.array(
                [classes[x] if 0 <= x < len(classes) else None for x in meta["labels"]],
                type=pa.string(),
            ),
            "feature": feature,
        }
    )
    rest = {k: v for k, v in meta.items() if k not in ("ids", "labels")}
    table = table.replace_schema_metadata({"selfsup": json.dumps(rest)})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return out
