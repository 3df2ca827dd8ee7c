"""Free Spoken Digit Dataset, and audio-visual digits (FSDD recordings paired with digit images)."""

# SPDX-License-Identifier: BSD-3-Clause

import os
import re
from importlib import resources

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

__all__ = ["load_audio_visual_digits", "load_spoken_digits"]

_DIR = "data/fsdd"
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
N_TEST_TAKES = 5  # FSDD's official split: takes 0-4 are test, 5-49 train


def _fsdd_dir():
    return resources.files("skfusion.datasets").joinpath(_DIR)


def load_spoken_digits(*, return_X_y=False):
    """Load the Free Spoken Digit Dataset (3,000 WAV recordings of the digits 0-9).

    Six English speakers say each digit 50 times (8 kHz mono WAV, 0.14-2.3 s). The
    recordings ship inside skfusion (CC BY-SA 4.0, snapshot of FSDD v1.0.9); the ``path``
    column holds absolute file paths that :class:`~skfusion.encoders.AudioEncoder` reads.
    The official split (FSDD README) puts takes 0-4 of every speaker and digit in the test set
    (300 recordings) and takes 5-49 in the training set (2,700).

    Read more in the :ref:`User Guide <audio>`.

    Parameters
    ----------
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        - ``data``: DataFrame (3,000 x 1), column ``path`` (str).
        - ``target``: Series ``digit`` (int 0-9).
        - ``split``: Series of ``"train"`` (2,700) and ``"test"`` (300).
        - ``frame``: DataFrame with ``path``, ``digit``, ``speaker``, ``take``, ``split``,
          sorted by digit, speaker and take.
        - ``speakers``: DataFrame of the speakers' gender and accent.
        - ``DESCR``: the data's README, with its provenance and licence.

    (data, target) : tuple if ``return_X_y`` is True
        The DataFrame and the target Series.

    Examples
    --------
    >>> from skfusion.datasets import load_spoken_digits
    >>> fsdd = load_spoken_digits()
    >>> fsdd.frame.shape
    (3000, 5)
    >>> fsdd.split.value_counts().to_dict()
    {'train': 2700, 'test': 300}
    >>> fsdd.frame.loc[0, ["digit", "speaker", "take", "split"]].astype(str).tolist()
    ['0', 'george', '0', 'test']
    """
    folder = _fsdd_dir()
    rows = []
    for entry in folder.joinpath("recordings").iterdir():
        match = _NAME.match(entry.name)
        if match:
            digit, speaker, take = match.groups()
            rows.append((os.fspath(entry), int(digit), speaker, int(take)))
    frame = pd.DataFrame(rows, columns=["path", "digit", "speaker", "take"])
    frame = frame.sort_values(["digit", "speaker", "take"], ignore_index=True)
    frame["split"] = np.where(frame["take"] < N_TEST_TAKES, "test", "train")
    with folder.joinpath("speakers.tsv").open("r", encoding="utf-8") as f:
        speakers = pd.read_csv(f, sep="\t")
    data, target = frame[["path"]], frame["digit"]
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        split=frame["split"],
        frame=frame,
        speakers=speakers,
        target_name="digit",
        DESCR=folder.joinpath("README.md").read_text(encoding="utf-8"),
    )


def load_audio_visual_digits(*, random_state=0, return_X_y=False):
    """FSDD recordings paired with scikit-learn's 8x8 digit images of the same label.

    A two-modality task built from two real data sets: every spoken-digit recording (see
    :func:`load_spoken_digits`) is paired with one handwritten-digit image of
    :func:`sklearn.datasets.load_digits` showing the same digit. The pairing keeps the split
    honest: for each digit, as many images as there are test recordings (30) are drawn at
    random as test images and never paired with a training recording; each training recording
    gets one of the remaining images, cycling through a random permutation so every image is
    used as evenly as possible (about 1.8 times). The pairing is a deterministic function of
    ``random_state``.

    Read more in the :ref:`User Guide <audio>`.

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=0
        Seeds the pairing; an int gives the same pairing on every call.

    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        - ``data``: DataFrame (3,000 x 2): ``audio`` (file path) and ``image`` (an 8x8
          float array of grey levels 0-16 per row).
        - ``target``: Series ``digit``.
        - ``split``: Series of ``"train"`` (2,700) and ``"test"`` (300), FSDD's official split.
        - ``frame``: ``audio``, ``image``, ``digit``, ``speaker``, ``take``, ``split`` and
          ``image_index`` (the row of ``load_digits``).
        - ``DESCR``: how the pairing is made, then the FSDD README.

    (data, target) : tuple if ``return_X_y`` is True
        The DataFrame and the target Series.

    Examples
    --------
    >>> from skfusion.datasets import load_audio_visual_digits
    >>> digits = load_audio_visual_digits(random_state=0)
    >>> digits.data.columns.tolist()
    ['audio', 'image']
    >>> digits.data["image"].iloc[0].shape
    (8, 8)
    """
    from sklearn.datasets import load_digits

    rng = check_random_state(random_state)
    fsdd = load_spoken_digits()
    images = load_digits()
    frame = fsdd.frame.rename(columns={"path": "audio"})
    image_index = np.empty(len(frame), dtype=np.intp)
    for digit in range(10):
        candidates = rng.permutation(np.flatnonzero(images.target == digit))
        for split in ("test", "train"):
            rows = np.flatnonzero((frame["digit"] == digit) & (frame["split"] == split))
            if split == "test":
                pool, candidates = candidates[: len(rows)], candidates[len(rows) :]
            else:
                pool = candidates
            order = rng.permutation(len(rows))
            image_index[rows[order]] = pool[np.arange(len(rows)) % len(pool)]
    column = np.empty(len(frame), dtype=object)
    for i, j in enumerate(image_index):
        column[i] = images.images[j]
    frame.insert(1, "image", column)
    frame["image_index"] = image_index
    data, target = frame[["audio", "image"]], frame["digit"]
    if return_X_y:
        return data, target
    descr = (
        "Audio-visual digits: each Free Spoken Digit Dataset recording paired with a "
        "scikit-learn load_digits image of the same digit; test recordings get images that no "
        f"training recording sees (pairing seeded by random_state={random_state!r}).\n\n"
        + fsdd.DESCR
    )
    return Bunch(
        data=data,
        target=target,
        split=frame["split"],
        frame=frame,
        target_name="digit",
        DESCR=descr,
    )
