"""The ``skfusion`` command line."""

# SPDX-License-Identifier: BSD-3-Clause

import argparse

__all__ = ["main"]


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
    parser = argparse.ArgumentParser(prog="skfusion", description="Multimodal fusion for scikit-learn.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="compare text-only, tabular-only, early and late fusion on real reviews",
    )
    demo.add_argument("--quick", action="store_true", help="train on a 1,500-row subsample")
    demo.add_argument("--cv", type=int, default=None, help="grid-search folds (default 5; 3 with --quick)")
    demo.add_argument("--n-jobs", type=int, default=None, help="parallel jobs of the grid search")
    demo.add_argument(
        "--output", default="skfusion_demo_model.joblib", help="where to save the best model"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        results = run_demo(quick=args.quick, cv=args.cv, n_jobs=args.n_jobs, output=args.output)
        return 0 if results["reloaded_same"] else 1
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
