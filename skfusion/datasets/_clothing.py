"""Women's Clothing E-Commerce Reviews: text + tabular, with a published fusion benchmark split."""

# SPDX-License-Identifier: BSD-3-Clause

from importlib import resources

import pandas as pd
from sklearn.utils import Bunch

__all__ = ["load_clothing_reviews"]

_DIR = "data/womens_clothing_reviews"
TEXT_COLUMNS = ["Title", "Review Text"]
NUMERICAL_COLUMNS = ["Age", "Rating", "Positive Feedback Count"]
CATEGORICAL_COLUMNS = ["Division Name", "Department Name", "Class Name"]
TARGET = "Recommended IND"


def _path(name):
    return resources.files("skfusion.datasets").joinpath(_DIR, name)


def load_clothing_reviews(*, return_X_y=False):
    """Load the Women's Clothing E-Commerce Reviews (23,486 rows, text + tabular).

    Real customer reviews of a clothing retailer (CC0 1.0), shipped inside skfusion with the
    train/val/test split of the Multimodal-Toolkit benchmark (Gu & Budhkar, 2021), whose
    published test F1 / PR-AUC figures are in ``DESCR``. The target, ``Recommended IND``,
    is 1 when the reviewer recommends the product (82% of rows). Titles are missing in 3,810
    rows and review texts in 845: real missing modalities.

    Read more in the :ref:`User Guide <datasets>`.

    Parameters
    ----------
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        - ``data``: DataFrame (23,486 x 9): text columns ``Title``, ``Review Text``; numerical
          ``Age``, ``Rating``, ``Positive Feedback Count``; categorical ``Division Name``,
          ``Department Name``, ``Class Name``; and ``Clothing ID``.
        - ``target``: Series, ``Recommended IND`` (0/1).
        - ``split``: Series of ``"train"`` (18,788), ``"val"`` (2,349), ``"test"`` (2,349).
        - ``frame``: the data, target and split in one DataFrame, indexed by ``row_id``.
        - ``text_columns``, ``numerical_columns``, ``categorical_columns``: column lists.
        - ``DESCR``: the data's README, with its provenance, licence and published results.

    (data, target) : tuple if ``return_X_y`` is True
        The DataFrame and the target Series.

    Examples
    --------
    >>> from skfusion.datasets import load_clothing_reviews
    >>> reviews = load_clothing_reviews()
    >>> reviews.data.shape
    (23486, 9)
    >>> reviews.split.value_counts().to_dict()
    {'train': 18788, 'val': 2349, 'test': 2349}
    """
    with _path("reviews.csv.gz").open("rb") as f:
        frame = pd.read_csv(f, compression="gzip", index_col="row_id")
    with _path("split_multimodal_toolkit.csv.gz").open("rb") as f:
        split = pd.read_csv(f, compression="gzip", index_col="row_id")["split"]
    frame["split"] = split.reindex(frame.index)
    target = frame[TARGET]
    data = frame.drop(columns=[TARGET, "split"])
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        split=frame["split"],
        frame=frame,
        text_columns=list(TEXT_COLUMNS),
        numerical_columns=list(NUMERICAL_COLUMNS),
        categorical_columns=list(CATEGORICAL_COLUMNS),
        target_name=TARGET,
        DESCR=_path("README.md").read_text(encoding="utf-8"),
    )
