"""Global configuration of skfusion: the embedding cache and progress bars.

The configuration is process-wide (every thread sees it, so dask or threading workers in the
same process share it) and is mirrored into environment variables, so that worker processes
started afterwards (joblib/loky, multiprocessing, dask nanny processes) inherit it:

========================  =================================  ===================================
key                       environment variable               meaning
========================  =================================  ===================================
``cache``                 ``SKFUSION_CACHE``                 ``"0"``/``"false"``/``"off"`` turns
                                                             the embedding cache off
``cache_dir``             ``SKFUSION_CACHE_DIR``             folder of the on-disk layer (unset:
                                                             no disk layer)
``cache_max_bytes``       ``SKFUSION_CACHE_MAX_BYTES``       memory budget of the in-memory
                                                             layer (``"512MB"``, ``"2G"`` or
                                                             bytes)
``cache_disk_max_bytes``  ``SKFUSION_CACHE_DISK_MAX_BYTES``  size bound of the on-disk layer,
                                                             per cache folder (default 4 GiB;
                                                             least recently used chunks go
                                                             first)
``show_progress``         ``SKFUSION_SHOW_PROGRESS``         ``"1"``/``"true"``/``"on"`` shows
                                                             progress bars while encoding
                                                             (default off)
========================  =================================  ===================================

Precedence: :func:`set_config` / :func:`config_context` in this process, then the environment,
then the defaults.
"""

# SPDX-License-Identifier: BSD-3-Clause

import os
import re
import sys
import threading
from contextlib import contextmanager

__all__ = ["config_context", "get_config", "set_config"]

_DEFAULTS = {
    "cache": True,
    "cache_dir": None,
    "cache_max_bytes": 512 * 2**20,
    "cache_disk_max_bytes": 4 * 2**30,
    "show_progress": False,
}

_ENV = {
    "cache": "SKFUSION_CACHE",
    "cache_dir": "SKFUSION_CACHE_DIR",
    "cache_max_bytes": "SKFUSION_CACHE_MAX_BYTES",
    "cache_disk_max_bytes": "SKFUSION_CACHE_DISK_MAX_BYTES",
    "show_progress": "SKFUSION_SHOW_PROGRESS",
}

_explicit = {}  # values set in this process with set_config / config_context
_lock = threading.RLock()

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30}


_BOOL_KEYS = ("cache", "show_progress")
_BYTES_KEYS = ("cache_max_bytes", "cache_disk_max_bytes")


def _parse_bool(text, name="SKFUSION_CACHE"):
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be 0/1/true/false/on/off; got {text!r}.")


def _parse_bytes(text, name="cache_max_bytes"):
    if isinstance(text, bool):
        raise ValueError(f"{name} must be a number of bytes; got {text!r}.")
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"{name} must be a number of bytes or a size like '512MB' or '2G'; "
                f"got {text!r}."
            )
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {text!r}.")
    return value


_PARSE = {
    "cache": _parse_bool,
    "cache_dir": lambda text: text or None,
    "cache_max_bytes": _parse_bytes,
    "cache_disk_max_bytes": lambda text: _parse_bytes(text, "SKFUSION_CACHE_DISK_MAX_BYTES"),
    "show_progress": lambda text: _parse_bool(text, "SKFUSION_SHOW_PROGRESS"),
}


def _check(key, value):
    """Validate a value given to set_config and return it normalised."""
    if value is None:
        if key in _BOOL_KEYS:
            raise ValueError(f"{key} must be True or False, not None.")
        if key in _BYTES_KEYS:
            raise ValueError(f"{key} must be a number of bytes, not None.")
        return None
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise TypeError(f"{key} must be True or False; got {value!r}.")
        return value
    if key == "cache_dir":
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a str, a path or None; got {value!r}.")
        return os.path.abspath(os.path.expanduser(os.fspath(value)))
    return _parse_bytes(value, key)


def _to_env(key, value):
    if value is None:
        return None
    if key in _BOOL_KEYS:
        return "1" if value else "0"
    return str(value)


def get_config():
    """The current skfusion configuration.

    Returns
    -------
    config : dict
        ``cache`` (bool), ``cache_dir`` (str or None), ``cache_max_bytes`` (int),
        ``cache_disk_max_bytes`` (int) and ``show_progress`` (bool), resolved from
        :func:`set_config`, the environment and the defaults, in that order.

    See Also
    --------
    set_config : Change the configuration.
    config_context : Change it temporarily.

    Examples
    --------
    >>> import skfusion
    >>> sorted(skfusion.get_config())
    ['cache', 'cache_dir', 'cache_disk_max_bytes', 'cache_max_bytes', 'show_progress']
    """
    with _lock:
        explicit = dict(_explicit)
    config = {}
    for key, default in _DEFAULTS.items():
        if key in explicit:
            config[key] = explicit[key]
            continue
        text = os.environ.get(_ENV[key])
        config[key] = default if text is None else _PARSE[key](text)
    return config


_PARAMETERS = """\
    cache : bool, default=None
        Turn the embedding cache on or off.

    cache_dir : str or path-like, default=None
        Folder of the on-disk cache layer, shared by processes. Pass ``""`` to turn the disk
        layer off.

    cache_max_bytes : int or str, default=None
        Memory budget of the in-memory layer (least recently used rows are evicted), e.g.
        ``2**30`` or ``"1GB"``.

    cache_disk_max_bytes : int or str, default=None
        Size bound of the on-disk layer, per cache folder (one folder per encoder
        configuration): when a write takes a folder over it, the least recently used chunks are
        deleted. The default bound is 4 GiB.

    show_progress : bool, default=None
        Show progress bars (``tqdm``) while encoders work through long inputs. Off by default.
"""


def set_config(cache=None, cache_dir=None, cache_max_bytes=None, cache_disk_max_bytes=None,
               show_progress=None, **unset):
    """Change skfusion's configuration for this process and the processes it starts.

    Arguments left at ``None`` are not changed. Each value is also written to its environment
    variable, so worker processes started afterwards (joblib's loky workers, dask nannies,
    ``subprocess``) use the same settings; a change also shuts joblib's idle loky workers down
    (they would keep the old environment), so the next parallel call starts fresh ones.
    Processes that are already running elsewhere (a dask cluster's workers) keep theirs: export
    the environment variables before starting them.

    Read more in the :ref:`User Guide <embedding_cache>`.

    Parameters
    ----------
{parameters}
    **unset : dict
        Unknown keys raise a ``TypeError``.

    See Also
    --------
    get_config : The current configuration.
    config_context : A temporary change.

    Examples
    --------
    >>> import skfusion
    >>> skfusion.set_config(cache_max_bytes="64MB")
    >>> skfusion.get_config()["cache_max_bytes"]
    67108864
    >>> skfusion.set_config(cache_max_bytes=512 * 2**20)
    """
    if unset:
        raise TypeError(
            f"set_config got unknown keys {sorted(unset)!r}; known keys are {sorted(_DEFAULTS)!r}."
        )
    changes = {}
    if cache is not None:
        changes["cache"] = _check("cache", cache)
    if cache_dir is not None:
        changes["cache_dir"] = None if cache_dir == "" else _check("cache_dir", cache_dir)
    if cache_max_bytes is not None:
        changes["cache_max_bytes"] = _check("cache_max_bytes", cache_max_bytes)
    if cache_disk_max_bytes is not None:
        changes["cache_disk_max_bytes"] = _check("cache_disk_max_bytes", cache_disk_max_bytes)
    if show_progress is not None:
        changes["show_progress"] = _check("show_progress", show_progress)
    _apply(changes)


def _apply(changes):
    with _lock:
        before = {var: os.environ.get(var) for var in _ENV.values()}
        for key, value in changes.items():
            _explicit[key] = value
            _set_env(_ENV[key], _to_env(key, value))
        if before != {var: os.environ.get(var) for var in _ENV.values()}:
            _retire_idle_workers()


def _set_env(var, text):
    if text is None:
        os.environ.pop(var, None)
    else:
        os.environ[var] = text


def _retire_idle_workers():
    """Shut joblib's reusable loky workers down, so the next ones start with the new settings.

    loky keeps its worker processes between ``Parallel`` calls, and a running process does not
    see later changes of its parent's environment. The next parallel call starts fresh workers.
    """
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None)
    flags = getattr(executor, "_flags", None)
    if executor is not None and flags is not None and not flags.shutdown:
        executor.shutdown(wait=True)


@contextmanager
def config_context(*, cache=None, cache_dir=None, cache_max_bytes=None,
                   cache_disk_max_bytes=None, show_progress=None):
    """Change skfusion's configuration inside a ``with`` block, then restore it.

    The change is process-wide while the block runs (threads and worker processes started
    inside it see it), as with :func:`set_config`.

    Read more in the :ref:`User Guide <embedding_cache>`.

    Parameters
    ----------
{parameters}
    Yields
    ------
    None

    See Also
    --------
    set_config : A lasting change.

    Examples
    --------
    >>> import skfusion
    >>> with skfusion.config_context(cache=False):
    ...     skfusion.get_config()["cache"]
    False
    """
    with _lock:
        saved_explicit = dict(_explicit)
        saved_env = {key: os.environ.get(var) for key, var in _ENV.items()}
    set_config(cache=cache, cache_dir=cache_dir, cache_max_bytes=cache_max_bytes,
               cache_disk_max_bytes=cache_disk_max_bytes, show_progress=show_progress)
    try:
        yield
    finally:
        with _lock:
            changed = saved_env != {key: os.environ.get(var) for key, var in _ENV.items()}
            _explicit.clear()
            _explicit.update(saved_explicit)
            for key, var in _ENV.items():
                _set_env(var, saved_env[key])
            if changed:
                _retire_idle_workers()


set_config.__doc__ = set_config.__doc__.format(parameters=_PARAMETERS)
config_context.__doc__ = config_context.__doc__.format(parameters=_PARAMETERS)
