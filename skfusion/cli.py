"""The ``skfusion`` command line: ``demo`` and ``predict``."""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import glob
import json
import os
import shutil
import sys
import time

from .storage._files import file_lock, write_atomic

__all__ = ["main"]

MANIFEST = "_manifest.json"
_MANIFEST_VERSION = 1
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv")
_JSONL = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz")


class CommandError(Exception):
    """A failure the command reports as one line, without a traceback."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_predict_parser(sub):
    predict = sub.add_parser(
        "predict",
        help="score a Parquet, CSV or JSONL input with a saved model, in streaming chunks",
        description=(
            "Score INPUT with the model in MODEL (.skops or .joblib) and write OUTPUT: a folder "
            "of numbered part files (Parquet or CSV, by OUTPUT's extension) and a manifest, "
            "written in OUTPUT.partial and renamed into place at the end. INPUT is a Parquet, "
            "CSV or JSONL file, a folder of Parquet files or a glob of them; it is read in "
            "chunks, never whole."
        ),
    )
    predict.add_argument("model", help="the model file (.skops or .joblib)")
    predict.add_argument(
        "input", help="a .parquet/.csv/.jsonl file, a folder or a glob of .parquet files"
    )
    predict.add_argument(
        "-o", "--output", required=True, help="the output folder: NAME.parquet or NAME.csv"
    )
    predict.add_argument(
        "--method", choices=["predict", "predict_proba", "transform"], default="predict",
        help="the model's method (default: predict)",
    )
    predict.add_argument(
        "--id-col", action="append", default=[], dest="id_cols", metavar="COLUMN",
        help="an input column copied to the output, first (repeatable)",
    )
    predict.add_argument(
        "--keep-cols", action="store_true",
        help="copy every input column to the output (after the id columns)",
    )
    predict.add_argument(
        "--chunk-size", type=_positive_int, default=10_000,
        help="rows read, scored and written per part file (default: 10000)",
    )
    predict.add_argument(
        "--batch-size", type=_positive_int, default=1_000,
        help="rows per call of the model (default: 1000)",
    )
    predict.add_argument(
        "--device", default=None,
        help="device of the model's encoders: cpu, cuda, cuda:N or auto (default: the model's)",
    )
    predict.add_argument(
        "--sha256", default=None, help="refuse the model file unless its SHA-256 is this"
    )
    predict.add_argument(
        "--trust", action="append", default=[], metavar="TYPE",
        help="a type to trust in a .skops file, as the refusal message names it (repeatable)",
    )
    predict.add_argument(
        "--on-error", choices=["raise", "missing"], default=None,
        help="an unreadable image or audio item: stop with an error (raise) or score the row "
        "with that modality missing (missing) and count it (default: the model's setting)",
    )
    again = predict.add_mutually_exclusive_group()
    again.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT (and any interrupted run)"
    )
    again.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run from its last complete part",
    )
    predict.add_argument(
        "--cache", action="store_true",
        help="use the embedding cache (off by default: batch inputs are mostly distinct rows, "
        "and memory stays flat)",
    )
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


def main(argv=None):
    """Entry point of the ``skfusion`` console script.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        Exit status.
    """
    parser = argparse.ArgumentParser(
        prog="skfusion", description="Multimodal fusion for scikit-learn."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="compare text-only, tabular-only, early and late fusion on real reviews",
    )
    demo.add_argument("--quick", action="store_true", help="train on a 1,500-row subsample")
    demo.add_argument(
        "--cv", type=int, default=None, help="grid-search folds (default 5; 3 with --quick)"
    )
    demo.add_argument("--n-jobs", type=int, default=None, help="parallel jobs of the grid search")
    demo.add_argument(
        "--output", default="skfusion_demo_model.joblib", help="where to save the best model"
    )
    demo.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars or per-fold lines (TQDM_DISABLE=1 also hides the bars)",
    )
    _add_predict_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        results = run_demo(
            quick=args.quick,
            cv=args.cv,
            n_jobs=args.n_jobs,
            output=args.output,
            progress=not args.no_progress,
        )
        return 0 if results["reloaded_same"] else 1
    if args.command == "predict":
        return _run_predict(args)
    return 2  # pragma: no cover


# --------------------------------------------------------------------------- predict
def _say(message):
    print(f"skfusion predict: {message}", file=sys.stderr, flush=True)


def _run_predict(args):
    from .exceptions import ModelFileError

    try:
        return _predict(args)
    except KeyboardInterrupt:
        _say("interrupted; run the same command with --resume to continue.")
        return 130
    except (CommandError, ModelFileError, OSError, ValueError, ImportError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        _say(f"error: {text}")
        return 1


def _has_suffix(path, suffixes):
    return path.lower().endswith(suffixes)


def _input_files(spec):
    """(format, sorted list of files) of INPUT: a file, a folder or a glob of Parquet files."""
    if os.path.isdir(spec):
        files = [
            path for path in glob.glob(os.path.join(spec, "**", "*"), recursive=True)
            if os.path.isfile(path) and _has_suffix(path, _PARQUET)
            and not os.path.basename(path).startswith((".", "_"))
        ]
        if not files:
            raise CommandError(f"the input folder {spec} holds no .parquet files.")
        return "parquet", sorted(files)
    if os.path.isfile(spec):
        if _has_suffix(spec, _PARQUET):
            return "parquet", [spec]
        if _has_suffix(spec, _CSV):
            return "csv", [spec]
        if _has_suffix(spec, _JSONL):
            return "jsonl", [spec]
        raise CommandError(
            f"cannot tell the format of the input {spec} from its extension: use .parquet, "
            ".csv or .jsonl."
        )
    if glob.has_magic(spec):
        files = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not files:
            raise CommandError(f"no file matches the input pattern {spec}.")
        other = [p for p in files if not _has_suffix(p, _PARQUET)]
        if other:
            raise CommandError(
                f"a glob input must match .parquet files only; it also matches {other[0]}."
            )
        return "parquet", files
    raise CommandError(f"the input {spec} does not exist.")


class _Source:
    """Streams the rows of the input files as Arrow record batches of the chosen columns."""

    def __init__(self, fmt, files):
        import pyarrow as pa

        self.fmt = fmt
        self.files = files
        self._pa = pa
        self._types = {}
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.schema = pq.read_schema(files[0])
            self.total_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        else:
            self.schema = self._open_text(files[0]).schema
            # a column that is empty in the first block is typed "null": read it as text
            self._types = {f.name: pa.string() for f in self.schema if pa.types.is_null(f.type)}
            if self._types:
                self.schema = self._open_text(files[0]).schema
            self.total_rows = None
        self.columns = list(self.schema.names)

    def _open_text(self, path):
        pa = self._pa
        if self.fmt == "csv":
            import pyarrow.csv as pcsv

            delimiter = "\t" if _has_suffix(path, (".tsv",)) else ","
            return pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=8 << 20),
                parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                # an empty field is a missing value, as pandas reads it
                convert_options=pcsv.ConvertOptions(
                    column_types=self._types, strings_can_be_null=True
                ),
            )
        import pyarrow.json as pjson

        explicit = None
        if self._types:
            explicit = pa.schema([
                pa.field(f.name, self._types.get(f.name, f.type)) for f in self.schema
            ])
        return pjson.open_json(
            path,
            read_options=pjson.ReadOptions(block_size=8 << 20),
            parse_options=pjson.ParseOptions(
                explicit_schema=explicit, unexpected_field_behavior="infer"
            ),
        )

    def check_columns(self, needed):
        for path in self.files[1:] if self.fmt == "parquet" else []:
            import pyarrow.parquet as pq

            names = set(pq.read_schema(path).names)
            missing = [c for c in needed if c not in names]
            if missing:
                raise CommandError(f"the input file {path} has no column {missing[0]!r}.")

    def batches(self, columns, skip, batch_rows):
        """Record batches of ``columns``, starting after the first ``skip`` rows."""
        pa = self._pa
        target = pa.schema([self.schema.field(c) for c in columns])
        for path in self.files:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                handle = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
                meta = handle.metadata
                if skip >= meta.num_rows:
                    skip -= meta.num_rows
                    continue
                groups = []
                for g in range(meta.num_row_groups):
                    rows = meta.row_group(g).num_rows
                    if skip >= rows and not groups:
                        skip -= rows
                        continue
                    groups.append(g)
                stream = handle.iter_batches(
                    batch_size=batch_rows, row_groups=groups, columns=columns, use_threads=False
                )
            else:
                reader = self._open_text(path)
                stream = (batch.select(columns) for batch in reader)
            for batch in stream:
                if skip:
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    batch = batch.slice(skip)
                    skip = 0
                if batch.schema != target:
                    try:
                        batch = batch.cast(target)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise CommandError(
                            f"the input file {path} has columns of other types than the first "
                            f"file ({exc})."
                        ) from exc
                yield batch


def _chunks(batches, size):
    """Arrow tables of exactly ``size`` rows (the last may be shorter) from record batches."""
    import pyarrow as pa

    pending, rows = [], 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - rows, batch.num_rows)
            pending.append(batch.slice(0, take))
            rows += take
            batch = batch.slice(take)
            if rows == size:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
    if rows:
        yield pa.Table.from_batches(pending)


def _arrow_type(dtype):
    import numpy as np
    import pyarrow as pa

    if dtype == np.dtype(object):
        return pa.string()
    return pa.from_numpy_dtype(dtype)


def _write_manifest(folder, manifest):
    data = json.dumps(manifest, indent=1).encode()
    write_atomic(os.path.join(folder, MANIFEST), data, private=False)


def _read_manifest(folder):
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("skfusion_predict") != _MANIFEST_VERSION:
        return None
    return manifest


_SAME_RUN = ("model_sha256", "inputs", "method", "columns", "chunk_size", "format")


def _differences(old, new):
    return [key for key in _SAME_RUN if old.get(key) != new.get(key)]


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _prepare_partial(partial, plan, args):
    """Make ``partial`` ready and return its manifest (parts already done kept on --resume)."""
    if os.path.lexists(partial) and not args.resume:
        if not args.overwrite:
            raise CommandError(
                f"{partial} holds an interrupted run: continue it with --resume, or start again "
                "with --overwrite."
            )
        _remove(partial)
    manifest = _read_manifest(partial) if os.path.isdir(partial) else None
    if manifest is not None:
        changed = _differences(manifest, plan)
        if changed:
            raise CommandError(
                f"cannot resume {partial}: its {', '.join(changed)} differ from this command's; "
                "rerun with --overwrite to start again."
            )
        parts = []
        for part in manifest["parts"]:  # keep the listed parts while their files exist
            if not os.path.isfile(os.path.join(partial, part["file"])):
                break
            parts.append(part)
        manifest["parts"] = parts
        listed = {part["file"] for part in parts} | {MANIFEST}
        for name in os.listdir(partial):  # parts written after the last manifest, temp files
            if name not in listed:
                _remove(os.path.join(partial, name))
    else:
        if os.path.lexists(partial):
            _remove(partial)  # a run killed before its first manifest: nothing to keep
        os.makedirs(partial)
        manifest = dict(plan, parts=[], complete=False)
    manifest["complete"] = False
    _write_manifest(partial, manifest)
    return manifest


def _predict(args):
    import pyarrow as pa
    from filelock import Timeout

    from ._config import config_context
    from .batch import BatchPredictor
    from .io import check_sha256
    from .storage._hashing import file_sha256

    output = os.path.abspath(args.output.rstrip("/\\"))
    if _has_suffix(output, _PARQUET):
        out_format = "parquet"
    elif output.lower().endswith(".csv"):
        out_format = "csv"
    else:
        raise CommandError(
            f"cannot tell the output format of {args.output} from its extension: use NAME.parquet "
            "or NAME.csv (a folder of part files is written there)."
        )
    partial = output + ".partial"
    if os.path.lexists(output) and not (args.overwrite or args.resume):
        raise CommandError(
            f"the output {args.output} exists; pass --overwrite to replace it."
        )
    if not os.path.isfile(args.model):
        raise CommandError(f"the model file {args.model} does not exist.")
    fmt, files = _input_files(args.input)
    digest = file_sha256(args.model)
    check_sha256(args.model, digest, args.sha256)  # --sha256, else the file's sidecar
    predictor = BatchPredictor(
        args.model,
        method=args.method,
        id_columns=args.id_cols,
        keep_columns=args.keep_cols,
        batch_size=args.batch_size,
        sha256=digest,  # what was hashed here is what gets loaded
        trusted=args.trust or None,
        device=args.device,
        on_error=args.on_error,
    )
    source = _Source(fmt, files)
    model_columns = predictor.input_columns
    missing = [c for c in (model_columns or []) if c not in source.columns]
    if missing:
        more = f" (and {missing[1:]!r})" if len(missing) > 1 else ""
        raise CommandError(
            f"the input has no column {missing[0]!r}{more}, which the model needs; it has "
            f"columns {source.columns!r}."
        )
    passthrough = predictor._passthrough(source.columns)
    model_columns = model_columns if model_columns is not None else list(source.columns)
    read = list(dict.fromkeys(passthrough + model_columns))
    source.check_columns(read)
    names, dtypes = predictor._output_spec()
    plan = {
        "skfusion_predict": _MANIFEST_VERSION,
        "model_sha256": digest,
        "inputs": [
            {"path": os.path.abspath(f), "size": os.path.getsize(f),
             "mtime_ns": os.stat(f).st_mtime_ns}
            for f in files
        ],
        "method": args.method,
        "columns": passthrough + names,
        "chunk_size": args.chunk_size,
        "format": out_format,
    }
    schema = pa.schema(
        [source.schema.field(c) for c in passthrough]
        + [pa.field(n, _arrow_type(d)) for n, d in zip(names, dtypes)]
    )

    os.makedirs(os.path.dirname(output), exist_ok=True)
    lock_path = os.path.join(os.path.dirname(output), "." + os.path.basename(output) + ".lock")
    lock = file_lock(lock_path)  # skfusion's one inter-process lock
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise CommandError(f"another skfusion predict is writing {args.output}.") from None
    try:
        if os.path.lexists(output):
            done = _read_manifest(output) if os.path.isdir(output) else None
            if args.resume and done is not None and done.get("complete") and not _differences(
                done, plan
            ):
                if not args.quiet:
                    _say(f"{args.output} is already complete ({done['rows']} rows).")
                return 0
            if not args.overwrite:
                raise CommandError(
                    f"the output {args.output} exists and is not this run's finished output; "
                    "pass --overwrite to replace it."
                )
        manifest = _prepare_partial(partial, plan, args)
        with config_context(cache=True if args.cache else False):
            _score(predictor, source, read, passthrough, schema, manifest, partial, args)
        if os.path.lexists(output):
            _remove(output)  # --overwrite: the old output goes only once the new one is whole
        os.replace(partial, output)
    finally:
        lock.release()
        try:
            os.remove(lock_path)
        except OSError:
            pass
    lost = sum(part["lost_rows"] for part in manifest["parts"])
    if lost:
        _say(
            f"{lost} rows had an unreadable item (image or audio file) and were scored with that "
            "modality missing."
        )
    return 0


def _score(predictor, source, read, passthrough, schema, manifest, partial, args):
    import pyarrow as pa
    from tqdm import tqdm

    parts = manifest["parts"]
    done = sum(part["rows"] for part in parts)
    if parts and not args.quiet:
        _say(f"resuming after {done} rows already scored in {_parts(len(parts))}.")
    bar = tqdm(
        total=source.total_rows, initial=done, unit="rows", unit_scale=True, desc="scoring",
        file=sys.stderr, disable=args.quiet or not sys.stderr.isatty(), dynamic_ncols=True,
    )
    started = time.perf_counter()
    scored = 0
    suffix = ".parquet" if manifest["format"] == "parquet" else ".csv"
    with bar:
        batch_rows = min(args.chunk_size, 65_536)
        for chunk in _chunks(source.batches(read, done, batch_rows), args.chunk_size):
            # plain columns: a pandas index stored in the file is not restored as the index
            frame = chunk.to_pandas(ignore_metadata=True)
            frame.index = range(done, done + len(frame))  # errors name the input's row number
            predictions, lost = predictor._predictions(frame)
            arrays = [chunk.column(c) for c in passthrough] + [
                pa.array(predictions[name].to_numpy(), type=schema.field(name).type)
                for name in predictions.columns
            ]
            table = pa.Table.from_arrays(arrays, schema=schema)
            name = f"part-{len(parts):06d}{suffix}"
            write_atomic(
                os.path.join(partial, name), lambda fh: _write_table(table, fh, suffix),
                private=False,
            )
            parts.append({"file": name, "rows": table.num_rows, "lost_rows": int(lost)})
            done += table.num_rows
            scored += table.num_rows
            manifest["rows"] = done
            _write_manifest(partial, manifest)
            bar.update(table.num_rows)
    if not parts:  # an empty input still gives a readable output: one part with no rows
        name = f"part-000000{suffix}"
        empty = schema.empty_table()
        write_atomic(
            os.path.join(partial, name), lambda fh: _write_table(empty, fh, suffix),
            private=False,
        )
        parts.append({"file": name, "rows": 0, "lost_rows": 0})
    manifest["rows"] = done
    manifest["complete"] = True
    _write_manifest(partial, manifest)
    if not args.quiet:
        elapsed = time.perf_counter() - started
        rate = f", {scored / elapsed:,.0f} rows/s" if scored and elapsed > 0 else ""
        _say(
            f"{done} rows in {_parts(len(parts))} -> {args.output} ({scored} scored in "
            f"{elapsed:.1f} s{rate})."
        )


def _parts(n):
    return f"{n} part" if n == 1 else f"{n} parts"


def _write_table(table, fh, suffix):
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, fh)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, fh)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
