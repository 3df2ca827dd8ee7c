"""ONNX Runtime sessions: device → execution providers, thread settings, and their holder.

Three steps from bytes to a running session, each for one reason:

* :func:`make_session` builds an ``InferenceSession`` with skfusion's settings (providers,
  threads, optimisers, CUDA libraries);
* :class:`LazySession` holds the bytes and the settings: it builds its session on first use
  (thread-safe), never pickles it, shares it with the holders of the same bytes object and
  settings in the process, and runs CUDA sessions through an IOBinding (:func:`run_session`);
* :func:`lazy_session` keeps each encoder's current :class:`LazySession`, keyed by the
  settings that shape it (a new one when one changes), checks the bytes against the SHA-256
  recorded at fit, and keeps nothing on the encoder (nothing to pickle or to copy).
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import io
import os
import sys
import threading
import weakref

from .._utils import import_optional_dependency, in_worker_process
from ..exceptions import ModelBytesMismatchError
from ..storage._hashing import sha256_hex

__all__ = [
    "FLOAT16_SETTINGS",
    "LazySession",
    "clear_session",
    "default_intra_op_threads",
    "float16_model",
    "held_session",
    "lazy_session",
    "make_session",
    "resolve_providers",
    "run_session",
    "uses_io_binding",
]

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


def _ort():
    return import_optional_dependency("onnxruntime", purpose="running ONNX models")


def _parse_device(device):
    """Return ``(kind, device_id)`` for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a str, got {type(device).__name__}")
    text = device.strip().lower()
    if text in ("auto", "cpu"):
        return text, None
    if text == "cuda":
        return "cuda", 0
    if text.startswith("cuda:"):
        index = text[len("cuda:") :]
        if index.isdigit():
            return "cuda", int(index)
    raise ValueError(
        f"device={device!r} is not understood; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
    )


def cuda_devices_hidden():
    """Whether ``CUDA_VISIBLE_DEVICES`` hides every GPU from this process.

    ``CUDA_VISIBLE_DEVICES=""`` (or ``"-1"``, or a list that starts with an entry that names
    no device) is the usual way to keep a process off the GPUs. The CUDA build of onnxruntime
    lists its CUDA provider all the same (the list says what the build has, not what the
    machine has), so ``device="auto"`` reads the variable too.

    Returns
    -------
    hidden : bool
        True when the variable is set and names no device.

    Examples
    --------
    >>> from skfusion.runtime._session import cuda_devices_hidden
    >>> isinstance(cuda_devices_hidden(), bool)
    True
    """
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return False
    first = value.split(",")[0].strip()
    return not (first.isdigit() or first.startswith(("GPU-", "MIG-")))


def resolve_providers(device="auto"):
    """ONNX Runtime execution providers for a ``device`` string.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        ``"auto"`` picks the CUDA provider when the installed onnxruntime exposes it and
        ``CUDA_VISIBLE_DEVICES`` does not hide every GPU, else the CPU one; ``"cpu"`` always
        uses the CPU; ``"cuda"``/``"cuda:N"`` require the CUDA provider and raise a
        ``RuntimeError`` when this onnxruntime build has none.

    Returns
    -------
    providers : list of str
        Provider names, best first; the CPU provider is always last as a fallback.

    Examples
    --------
    >>> from skfusion.runtime import resolve_providers
    >>> resolve_providers("cpu")
    ['CPUExecutionProvider']
    >>> resolve_providers("auto")[-1]
    'CPUExecutionProvider'
    """
    kind, _ = _parse_device(device)
    if kind == "cpu":
        return [_CPU]
    available = _ort().get_available_providers()
    if _CUDA in available and (kind == "cuda" or not cuda_devices_hidden()):
        return [_CUDA, _CPU]
    if kind == "cuda":
        raise RuntimeError(
            f"device={device!r} was requested, but this onnxruntime build has no "
            f"CUDAExecutionProvider (available: {available}). Install `onnxruntime-gpu` on a "
            "machine with a CUDA GPU, or use device='auto' or 'cpu'."
        )
    return [_CPU]


def _provider_entries(device):
    """Providers with their options for ``InferenceSession``.

    The CUDA provider gets its device id and ``use_tf32=0``: float32 products then run in
    float32, not in TF32 (10-bit mantissa, ONNX Runtime's default on Ampere and later GPUs),
    so that a float32 model gives the CPU's answer to float32 rounding. Speed on a GPU is what
    float16 models are for (``quantize="fp16"``).
    """
    _, device_id = _parse_device(device)
    entries = []
    for name in resolve_providers(device):
        if name == _CUDA:
            entries.append((name, {"device_id": str(device_id or 0), "use_tf32": "0"}))
        else:
            entries.append(name)
    return entries


def _usable_cpus():
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not on Linux
        return max(os.cpu_count() or 1, 1)


def default_intra_op_threads():
    """Intra-op thread count that does not oversubscribe the machine.

    ``OMP_NUM_THREADS`` wins when set: joblib sets it to ``cpu_count // n_jobs`` in its loky
    workers, and users set it to share a machine. Otherwise a worker process of joblib/loky or
    multiprocessing gets 1 thread, and the main process gets all the CPUs it may run on.

    Returns
    -------
    n_threads : int
        A positive thread count.

    Examples
    --------
    >>> from skfusion.runtime import default_intra_op_threads
    >>> default_intra_op_threads() >= 1
    True
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), _usable_cpus())
    if in_worker_process():
        return 1
    return _usable_cpus()


_preload_lock = threading.Lock()
_preload_messages = None


def _preload_cuda_libraries(ort):
    """Load the CUDA, cuBLAS and cuDNN libraries of the ``nvidia-*`` wheels, once a process.

    ``onnxruntime-gpu`` finds its CUDA libraries on the loader path or, when they come from
    pip (``onnxruntime-gpu[cuda,cudnn]`` and ``nvidia-cublas``), only after
    ``onnxruntime.preload_dlls()`` (or an ``import torch`` built for the same CUDA) has
    loaded them. :func:`make_session` calls this when a CUDA session could not be made, then
    tries again; a setup that works without it is left alone. What it prints about libraries
    it could not load is kept for the error message of a CUDA session that still fails.
    """
    global _preload_messages
    with _preload_lock:
        if _preload_messages is None:
            preload = getattr(ort, "preload_dlls", None)
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    if preload is not None:
                        preload()
            except Exception as exc:  # a failed preload is reported if the session fails
                out.write(f"preload_dlls failed: {type(exc).__name__}: {exc}")
            _preload_messages = out.getvalue().strip()
    return _preload_messages


def _load_error(exc):
    return ValueError(
        "the bytes given are not a valid ONNX model that ONNX Runtime can load "
        f"({type(exc).__name__}: {str(exc).strip()[:300]}). Check that the file is an .onnx "
        "model and is not truncated."
    )


def make_session(model_bytes, *, device="auto", intra_op_num_threads=None, disabled_optimizers=()):
    """Build an ``onnxruntime.InferenceSession`` with skfusion's settings.

    Graph optimisation is fully on, execution is sequential (one intra-op thread pool, no
    inter-op pool) and the CPU provider is always the last fallback.

    Parameters
    ----------
    model_bytes : bytes or path-like
        A serialized ONNX model, or the path of an ``.onnx`` file.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Mapped to execution providers by :func:`resolve_providers`.
    intra_op_num_threads : int, default=None
        Threads of the intra-op pool. ``None`` uses :func:`default_intra_op_threads`, which
        gives 1 thread inside joblib workers so that parallel encoders do not oversubscribe.
    disabled_optimizers : sequence of str, default=()
        Names of ONNX Runtime graph optimisers to turn off (e.g. a fusion whose kernel is
        slower than the ops it replaces).

    Returns
    -------
    session : onnxruntime.InferenceSession
        The loaded model.

    Raises
    ------
    ValueError
        When the bytes are not an ONNX model (corrupt, truncated, another format).
    RuntimeError
        When a CUDA device is requested and ONNX Runtime cannot use CUDA.

    Examples
    --------
    >>> from skfusion.runtime import make_session
    >>> make_session(b"not an onnx model", device="cpu")
    Traceback (most recent call last):
    ...
    ValueError: the bytes given are not a valid ONNX model ...
    """
    ort = _ort()
    if isinstance(model_bytes, (str, os.PathLike)):
        with open(model_bytes, "rb") as fh:
            model_bytes = fh.read()
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise TypeError(f"model_bytes must be bytes or a path, got {type(model_bytes).__name__}")
    model_bytes = bytes(model_bytes)
    if not model_bytes:
        raise ValueError("the ONNX model is empty (0 bytes).")
    kind, _ = _parse_device(device)
    providers = _provider_entries(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    threads = intra_op_num_threads or default_intra_op_threads()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    if threads < _usable_cpus():
        # sharing the machine: do not burn cores spin-waiting between ops
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only

    def create():
        try:
            return ort.InferenceSession(
                model_bytes,
                sess_options=options,
                providers=providers,
                disabled_optimizers=list(disabled_optimizers) or None,
            )
        except Exception as exc:  # ORT raises its own pybind exception types
            return exc

    session = create()
    preloaded = ""
    wants_cuda = any(isinstance(p, tuple) and p[0] == _CUDA for p in providers)
    if wants_cuda and (isinstance(session, Exception) or _CUDA not in session.get_providers()):
        # the CUDA libraries may come from the nvidia-* wheels, which are not on the loader
        # path: load them (once a process) and try again
        preloaded = _preload_cuda_libraries(ort)
        session = create()
    if isinstance(session, Exception):
        exc, message = session, str(session)
        if "CUDA" in message and kind == "cuda":
            raise RuntimeError(
                f"ONNX Runtime could not use CUDA: {message}" + _cuda_hint(preloaded)
            ) from exc
        raise _load_error(exc) from exc
    if kind == "cuda" and _CUDA not in session.get_providers():
        raise RuntimeError(
            f"device={device!r} was requested but ONNX Runtime fell back to "
            f"{session.get_providers()} (the CUDA libraries could not be loaded)."
            + _cuda_hint(preloaded)
        )
    return session


def _cuda_hint(preloaded):
    hint = (
        " onnxruntime-gpu 1.31 needs CUDA 13, cuDNN 9 and cuBLAS: `pip install "
        "'skfusion[gpu]'` installs them from PyPI (see the installation page)."
    )
    return hint + (f" preload_dlls said: {preloaded[-500:]}" if preloaded else "")


def uses_io_binding(session):
    """Whether :func:`run_session` runs ``session`` through an IOBinding.

    Only sessions whose first provider is CUDA do: their outputs are bound on the GPU and
    copied back once, after the run. CPU sessions keep the plain ``session.run``, which
    already writes into host memory.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        A built session.

    Returns
    -------
    bound : bool
        True for a CUDA session.

    Examples
    --------
    >>> from skfusion.runtime._session import uses_io_binding
    >>> class CpuSession:
    ...     def get_providers(self):
    ...         return ["CPUExecutionProvider"]
    >>> uses_io_binding(CpuSession())
    False
    """
    providers = session.get_providers()
    return bool(providers) and providers[0] == _CUDA


def run_session(session, output_names, feeds, device_id=0):
    """Run ``session``: IOBinding on CUDA, ``session.run`` elsewhere.

    On CUDA the host inputs are bound with ``bind_cpu_input`` (copied to the GPU by the run),
    the requested outputs are allocated on the GPU (``bind_output(name, "cuda")``), and only
    those are copied to the host after ``run_with_iobinding``: a model that pools inside its
    graph sends nothing but the pooled vectors back. No torch is involved.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        A built session.
    output_names : list of str or None
        Outputs to compute; ``None`` computes all.
    feeds : dict of str to ndarray
        Input arrays by input name.
    device_id : int, default=0
        The CUDA device the session runs on.

    Returns
    -------
    outputs : list of ndarray
        One host array per requested output.
    """
    if not uses_io_binding(session):
        return session.run(output_names, feeds)
    if output_names is None:
        output_names = [node.name for node in session.get_outputs()]
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for name in output_names:
        binding.bind_output(name, device_type="cuda", device_id=int(device_id))
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()


# Everything that changes float16_model's bytes; part of the model-store keys of fp16 graphs
# and of the embedding-cache fingerprints of their encoders.
FLOAT16_SETTINGS = "fp16=ort-transformers-float16|keep_io_types|v1"


def float16_model(model_bytes, op_block_list=None):
    """The float16 version of an ONNX model, with float32 inputs and outputs.

    ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``: float
    weights become float16, the graph computes in float16, and a ``Cast`` at each float input
    and output keeps the model's interface float32. Made for the CUDA provider (tensor cores,
    half the memory traffic). The CPU provider runs such a graph too (ONNX Runtime casts around
    the nodes it has no float16 kernel for), slower than the float32 graph: that is how a
    model fitted on a GPU scores on a CPU-only host, and how tests check it without a GPU.

    Parameters
    ----------
    model_bytes : bytes
        A float32 ONNX model.
    op_block_list : list of str, default=None
        Operator types to keep in float32; ``None`` uses the converter's default list.

    Returns
    -------
    model_bytes : bytes
        The float16 model.
    """
    onnx = import_optional_dependency("onnx", purpose="converting ONNX models to float16")
    _ort()
    before = list(sys.path)
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - shipped with every onnxruntime wheel
        raise ImportError(
            "float16 conversion needs onnxruntime's `onnxruntime.transformers.float16` "
            f"module ({exc}); reinstall onnxruntime (or onnxruntime-gpu)."
        ) from exc
    finally:
        # the package's __init__ appends its own folder to sys.path: undo that
        folder = os.path.join("onnxruntime", "transformers")
        sys.path[:] = [p for p in sys.path if p in before or not p.rstrip(os.sep).endswith(folder)]
    model = onnx.load_from_string(bytes(model_bytes))
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=op_block_list, disable_shape_infer=False
    )
    return converted.SerializeToString()


class LazySession:
    """A picklable holder of ONNX model bytes that builds its session on first use.

    The ``InferenceSession`` itself cannot be pickled, so it is dropped by ``__getstate__``
    and rebuilt from the bytes after unpickling (e.g. in a joblib worker, or after
    ``joblib.load``). Building is thread-safe, and holders of the same bytes object with the
    same settings share one session in a process (see :attr:`session`).

    Parameters
    ----------
    model_bytes : bytes
        A serialized ONNX model.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        See :func:`resolve_providers`.
    intra_op_num_threads : int, default=None
        See :func:`make_session`.
    disabled_optimizers : sequence of str, default=()
        See :func:`make_session`.

    Attributes
    ----------
    session : onnxruntime.InferenceSession
        Built on first access.
    input_names : list of str
        Names of the model's inputs.
    output_names : list of str
        Names of the model's outputs.

    Examples
    --------
    >>> import pickle
    >>> from skfusion.runtime import LazySession
    >>> lazy = LazySession(b"bytes of an .onnx file", device="cpu")
    >>> pickle.loads(pickle.dumps(lazy)).device  # no session was built
    'cpu'
    """

    # Built sessions by (process, bytes object, settings), alive while a holder keeps them.
    # The key holds the bytes object's id: a holder keeps its bytes alive as long as its
    # session lives, so the id cannot be reused by other bytes meanwhile (and an entry is
    # checked against the object all the same).
    _shared = weakref.WeakValueDictionary()
    _shared_bytes = {}
    _shared_lock = threading.Lock()

    def __init__(
        self, model_bytes, device="auto", intra_op_num_threads=None, disabled_optimizers=()
    ):
        self.model_bytes = bytes(model_bytes)
        self.device = device
        self.intra_op_num_threads = intra_op_num_threads
        self.disabled_optimizers = tuple(disabled_optimizers)
        self._session = None
        self._lock = threading.Lock()

    @property
    def session(self):
        """The ``onnxruntime.InferenceSession``, built on first access.

        Holders of the same bytes object with the same settings share one session in a
        process (two TextEncoders of one pipeline, clones, a model and its copy loaded by
        ``joblib.load``, which keeps one bytes object for both): it is built once, and
        ``InferenceSession.run`` may be called from several threads.
        """
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._shared_session()
        return self._session

    def _shared_session(self):
        model_bytes, threads = self.model_bytes, self.intra_op_num_threads
        key = (
            os.getpid(),
            id(model_bytes),
            len(model_bytes),
            self.device,
            threads,
            self.disabled_optimizers,
        )
        shared, shared_bytes = LazySession._shared, LazySession._shared_bytes
        with LazySession._shared_lock:
            session = shared.get(key)
            if session is not None and shared_bytes.get(key) is model_bytes:
                return session
            session = make_session(
                model_bytes,
                device=self.device,
                intra_op_num_threads=threads,
                disabled_optimizers=self.disabled_optimizers,
            )
            shared[key] = session
            shared_bytes[key] = model_bytes
            weakref.finalize(session, shared_bytes.pop, key, None)
        return session

    @property
    def input_names(self):
        """Names of the model inputs."""
        return [node.name for node in self.session.get_inputs()]

    @property
    def output_names(self):
        """Names of the model outputs."""
        return [node.name for node in self.session.get_outputs()]

    def run(self, output_names, feeds):
        """Run the model: ``session.run(output_names, feeds)``, or an IOBinding on CUDA.

        See :func:`run_session`: on the CUDA provider the outputs are bound on the GPU and
        only the requested ones are copied to the host.

        Parameters
        ----------
        output_names : list of str or None
            Outputs to compute; ``None`` computes all.
        feeds : dict of str to ndarray
            Input arrays by input name.

        Returns
        -------
        outputs : list of ndarray
            One array per requested output.
        """
        _, device_id = _parse_device(self.device)
        return run_session(self.session, output_names, feeds, device_id or 0)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self):
        return (
            f"LazySession(<{len(self.model_bytes)} bytes>, device={self.device!r}, "
            f"intra_op_num_threads={self.intra_op_num_threads!r})"
        )


# Each owner's current session: owner -> (the bytes object, the settings, its LazySession).
# Kept beside the owner, not on it, so nothing of it is pickled, copied or cloned with the
# owner, and it goes when the owner goes.
_held = weakref.WeakKeyDictionary()
_held_lock = threading.Lock()


def lazy_session(
    owner,
    model_bytes,
    *,
    device="auto",
    intra_op_num_threads=None,
    disabled_optimizers=(),
    expected_sha256=None,
    check=None,
):
    """The owner's :class:`LazySession` for ``model_bytes`` with these settings.

    Each encoder that runs ONNX gets its session here. The owner keeps one session at a time,
    keyed by everything that shapes it: the bytes object, the device and the execution
    providers it maps to now, the intra-op thread count, the disabled graph optimisers and
    the recorded SHA-256. The same values return the held session; another value of any of
    them (``set_params(intra_op_num_threads=2)``, new bytes after a refit) gives a new one.
    Thread-safe: threads that ask at once get the same one. Nothing is stored on the owner,
    so a session never travels in a pickle; an unpickled owner builds its own on first use.

    Parameters
    ----------
    owner : object
        The encoder that owns the session (hashable and weak-referenceable, as estimators
        are).
    model_bytes : bytes
        The serialized ONNX model.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        See :func:`resolve_providers`.
    intra_op_num_threads : int, default=None
        See :func:`make_session`.
    disabled_optimizers : sequence of str, default=()
        See :func:`make_session`.
    expected_sha256 : str, default=None
        The SHA-256 recorded when the bytes were fitted. Before a new session is made the
        bytes are hashed and compared with it: a difference raises
        :class:`~skfusion.exceptions.ModelBytesMismatchError` naming the owner's class. None
        skips the check.
    check : callable, default=None
        ``check(lazy)`` is called once on each new :class:`LazySession` (e.g. to check its
        inputs and outputs); what it raises is raised, and nothing is kept.

    Returns
    -------
    lazy : LazySession
        Its ``.session`` builds on first access (shared with other holders of the same
        bytes object and settings in this process).

    Examples
    --------
    >>> from skfusion.runtime._session import held_session, lazy_session
    >>> class Encoder:
    ...     model_bytes_ = b"not an onnx model"
    >>> enc = Encoder()
    >>> lazy = lazy_session(enc, enc.model_bytes_, device="cpu", intra_op_num_threads=1)
    >>> lazy is lazy_session(enc, enc.model_bytes_, device="cpu", intra_op_num_threads=1)
    True
    >>> lazy is lazy_session(enc, enc.model_bytes_, device="cpu", intra_op_num_threads=2)
    False
    >>> held_session(enc).intra_op_num_threads
    2
    """
    device = str(device)
    threads = None if intra_op_num_threads is None else int(intra_op_num_threads)
    settings = (
        resolve_providers(device),
        device,
        threads,
        tuple(disabled_optimizers),
        expected_sha256,
    )
    held = _held.get(owner)
    if held is not None and held[0] is model_bytes and held[1] == settings:
        return held[2]
    with _held_lock:
        held = _held.get(owner)
        if held is not None and held[0] is model_bytes and held[1] == settings:
            return held[2]
        if expected_sha256 is not None:
            digest = sha256_hex(model_bytes)
            if digest != expected_sha256:
                raise ModelBytesMismatchError(
                    f"{type(owner).__name__}'s ONNX model bytes do not match the SHA-256 "
                    f"recorded at fit (recorded {expected_sha256[:16]}..., found "
                    f"{digest[:16]}...): the model was altered after fitting. Refit the "
                    "encoder, or load the model you saved."
                )
        lazy = LazySession(model_bytes, device, threads, settings[3])
        if check is not None:
            check(lazy)
        _held[owner] = (model_bytes, settings, lazy)
        return lazy


def held_session(owner):
    """The :class:`LazySession` that :func:`lazy_session` holds for ``owner`` now, or None."""
    held = _held.get(owner)
    return None if held is None else held[2]


def clear_session(owner):
    """Drop ``owner``'s session (e.g. at the start of ``fit``, to free it early).

    Parameters
    ----------
    owner : object
        The encoder.
    """
    with _held_lock:
        _held.pop(owner, None)
