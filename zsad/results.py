"""Results files of :func:`zsad.rank.rank_space`: formats, atomic writes, the resume journal.

A results file is CSV, JSONL or Parquet by its extension (:data:`FORMATS`),
one row per architecture, with a ``FILE.meta.json`` sidecar (:func:`meta_path`)
that records what the rows were computed from: the space's fingerprint, the
options, every column's direction and description, the score formula, and
whether the file is complete. While a run computes, rows are appended and
flushed one at a time to the *journal*: the file itself for CSV and JSONL,
``FILE.partial.jsonl`` for Parquet (which cannot be appended to). At the end the
file is rewritten atomically (a unique temporary name, then a rename) with the
final rows. Resuming reads the journal back, dropping a torn last line, after
checking the sidecar against this space and these options.

>>> from zsad.results import meta_path
>>> meta_path("runs/nb201.csv").name
'nb201.csv.meta.json'
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from zsad._errors import SpecError
from zsad._files import atomic_write, check_writable, unique_temp

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def meta_path(path: str | Path) -> Path:
    """The metadata sidecar of a results file: ``FILE.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def _fmt_csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse_value(column: str, text: str) -> Any:
    if text == "" or text is None:
        return None
    if column in ("arch", "status", "reason"):
        return text
    if column in ("params", "flops", "rank"):
        return int(text)
    return float(text)


def _option_flag(key: str, value: Any) -> str | None:
    """The ``zsad rank`` option that gives the option ``key`` of a results file's metadata the ``value``."""
    if value is None:
        return None
    if key in ("seeds", "batch", "tangents", "seed"):
        return f"--{key} {value}"
    if key == "metrics":
        return f"--metrics {','.join(value)}"
    if key == "dtype":
        return "--x64" if value == "float64" else "without --x64"
    return None


class ResultsFile:
    """A results file (CSV, JSONL or Parquet by extension) with its ``.meta.json`` sidecar.

    CSV and JSONL rows are appended and flushed one at a time; Parquet, which
    cannot be appended to, collects rows in ``FILE.partial.jsonl`` until
    :meth:`finish` writes the Parquet file (needs ``pyarrow``).
    """

    def __init__(self, path: str | Path, columns_: Sequence[str], meta: dict):
        self.path = Path(path)
        self.columns = list(columns_)
        self.meta = meta
        fmt = self.check(self.path)
        self.format = fmt
        self.journal = self.path.with_name(self.path.name + ".partial.jsonl") if fmt == "parquet" else self.path
        self._fh: io.TextIOBase | None = None

    @staticmethod
    def check(path: str | Path) -> str:
        """The format of a results file at ``path``; a one-line SpecError if it has no known extension,
        needs a missing library, or cannot be written there (see :func:`zsad._files.check_writable`)."""
        path = Path(path)
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise SpecError(f"{path}: expected a results file ending in .csv, .jsonl or .parquet; "
                            f"got {path.suffix or 'no extension'!r}")
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise SpecError(f"{path}: writing Parquet needs pyarrow, which is not installed "
                                "(pip install pyarrow), or use .csv or .jsonl") from None
        check_writable(path, "--out")
        return fmt

    # ---- reading

    def exists(self) -> bool:
        return self.path.exists() or (self.format == "parquet" and self.journal.exists())

    def check_resumable(self) -> None:
        """Raises a one-line SpecError if the existing file does not belong to this space and these options."""
        mpath = meta_path(self.path)
        try:
            meta = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise SpecError(f"{self.path}: --resume: no metadata {mpath.name} beside it, so it cannot be checked "
                            "against this space; use another --out, or --overwrite to replace it") from None
        except (OSError, ValueError) as err:
            raise SpecError(f"{mpath}: --resume: unreadable metadata ({err})") from None
        space, theirs = self.meta["space"], meta.get("space", {})
        if theirs.get("fingerprint") != space["fingerprint"]:
            theirs_name = theirs.get("file") or theirs.get("name")
            raise SpecError(f"{self.path}: --resume: the file holds results of a different search space "
                            f"({theirs_name!r}, not {space.get('file') or space['name']!r}); "
                            "use another --out, or --overwrite to replace it")
        mine, old = self.meta["options"], meta.get("options", {})
        diff = [k for k in mine if mine.get(k) != old.get(k)]
        if diff:
            said = "; ".join(f"{k} = {old.get(k)!r}, now {mine[k]!r}" for k in diff)
            flags = " ".join(f for f in (_option_flag(k, old.get(k)) for k in diff) if f is not None)
            raise SpecError(f"{self.path}: --resume: the file was computed with other options ({said}); rerun with "
                            f"the same options{f' ({flags})' if flags else ''}, or use another --out")

    def read_rows(self) -> list[dict]:
        """Complete rows already in the file (a torn last line is dropped)."""
        if self.format == "parquet" and not self.journal.exists():
            import pyarrow.parquet as pq

            table = pq.read_table(self.path)
            return [{c: r.get(c) for c in self.columns} for r in table.to_pylist()]
        text = self.journal.read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        rows = []
        if self.format == "csv":
            lines = list(csv.reader(io.StringIO(text)))
            if not lines:
                return []
            header = lines[0]
            if header != self.columns:
                raise SpecError(f"{self.path}: --resume: expected the columns {','.join(self.columns)}; "
                                f"got {','.join(header)}")
            for rec in lines[1:]:
                if len(rec) != len(header):
                    continue
                try:
                    rows.append({c: _parse_value(c, v) for c, v in zip(header, rec)})
                except ValueError:
                    continue
        else:
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "arch" in rec:
                    rows.append({c: rec.get(c) for c in self.columns})
        return rows

    # ---- writing

    def _text(self, rows: Iterable[dict], *, header: bool) -> str:
        buf = io.StringIO()
        if self.format == "csv":
            writer = csv.writer(buf, lineterminator="\n")
            if header:
                writer.writerow(self.columns)
            for row in rows:
                writer.writerow([_fmt_csv(row.get(c)) for c in self.columns])
        else:
            for row in rows:
                buf.write(json.dumps({c: row.get(c) for c in self.columns}, allow_nan=False) + "\n")
        return buf.getvalue()

    def _write_meta(self, complete: bool) -> None:
        atomic_write(meta_path(self.path), json.dumps({**self.meta, "complete": complete}, indent=2) + "\n")

    def start(self, rows: list[dict]) -> None:
        """Writes the header and ``rows`` (atomically), then opens the file for appending."""
        self._write_meta(False)
        atomic_write(self.journal, self._text(rows, header=True))
        self._fh = open(self.journal, "a", newline="")

    def append(self, row: dict) -> None:
        self._fh.write(self._text([row], header=False))
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def finish(self, rows: list[dict]) -> None:
        """Rewrites the file atomically with the final rows (score and rank filled)."""
        self.close()
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist([{c: r.get(c) for c in self.columns} for r in rows])
            tmp = unique_temp(self.path)
            try:
                pq.write_table(table, tmp)
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)
            self.journal.unlink(missing_ok=True)
        else:
            atomic_write(self.path, self._text(rows, header=True))
        self._write_meta(True)


def check_out(out: str | Path | None, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuses, before any work, options that do not go together and a results file that cannot be
    written (an unknown extension, a missing folder, a folder that takes no new file)."""
    if resume and overwrite:
        raise SpecError("--resume, --overwrite: expected one of them (continue the results file, or replace "
                        "it); got both")
    if out is None:
        if resume:
            raise SpecError("--resume: expected --out FILE, the results file to continue; got no --out")
        return
    ResultsFile.check(out)


def open_results(out: str | Path | None, columns_: Sequence[str], meta: dict, *, resume: bool = False,
                 overwrite: bool = False) -> tuple[ResultsFile | None, dict[str, dict]]:
    """The results file at ``out`` (None for no file) and the rows it holds already, by architecture.

    Raises:
      SpecError: ``out`` exists and neither ``resume`` nor ``overwrite`` is given, or (``resume``) it
        belongs to another space or other options.
    """
    results = ResultsFile(out, columns_, meta) if out is not None else None
    done: dict[str, dict] = {}
    if results is not None and results.exists():
        if resume:
            results.check_resumable()
            for row in results.read_rows():
                done.setdefault(row["arch"], row)
        elif not overwrite:
            raise SpecError(f"{results.path}: the results file exists; pass --resume to continue it or "
                            "--overwrite to replace it")
    return results, done
