"""The ``skfusion`` command line: ``demo`` and ``predict``.

``predict`` parses its arguments and runs :meth:`skfusion.batch.BatchPredictor.predict_files`;
it shows that method's messages on stderr, turns its errors into one line and exit status 1,
and Ctrl-C or SIGTERM into a hint to ``--resume`` and exit status 130 or 143.
"""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import logging
import signal
import sys
from contextlib import contextmanager

__all__ = ["main"]


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


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python runs next, so that the command stops as on Ctrl-C."""


def _raise_terminated(signum, frame):
    raise _Terminated()


@contextmanager
def _sigterm_as_interrupt():
    """While the command runs, SIGTERM (what schedulers send) raises :class:`_Terminated`;
    the previous handler is put back after."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except (AttributeError, ValueError, OSError):  # not the main thread, or no SIGTERM
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextmanager
def _messages(quiet):
    """Show the ``skfusion.batch`` log records on stderr, as ``skfusion predict: ...`` lines
    (only the warnings with --quiet)."""
    from .batch import logger

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("skfusion predict: %(message)s"))
    level = logger.level
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run_predict(args):
    from .batch import OptionNames
    from .exceptions import ModelFileError

    try:
        with _sigterm_as_interrupt(), _messages(args.quiet):
            _predict(args)
        return 0
    except KeyboardInterrupt as exc:
        if isinstance(exc, _Terminated):
            _say("terminated (SIGTERM); run the same command with --resume to continue.")
            return 128 + signal.SIGTERM
        _say("interrupted; run the same command with --resume to continue.")
        return 130
    except (ModelFileError, OSError, ValueError, ImportError) as exc:
        if isinstance(exc, OptionNames):
            text = exc.for_options("--overwrite", "--resume")
        else:
            text = str(exc)
        text = " ".join(text.split()) or type(exc).__name__
        _say(f"error: {text}")
        return 1


def _predict(args):
    from .batch import BatchPredictor

    predictor = BatchPredictor(
        args.model,
        method=args.method,
        id_columns=args.id_cols,
        keep_columns=args.keep_cols,
        batch_size=args.batch_size,
        sha256=args.sha256,  # --sha256, else the file's sidecar
        trusted=args.trust or None,
        device=args.device,
        on_error=args.on_error,
    )
    predictor.predict_files(
        args.input,
        args.output,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        resume=args.resume,
        cache=args.cache,
        progress=not args.quiet and sys.stderr.isatty(),
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
