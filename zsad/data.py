"""Input batches for scoring: i.i.d. Gaussian samples or samples from a .npy/.npz file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zsad._errors import DataError, locate
from zsad.arch.spec import Input


def load_inputs(inp: Input, batch: int, *, seed: int = 0, base_dir: str | Path = ".",
                source: str | None = None) -> np.ndarray:
    """A batch of ``batch`` samples of shape ``inp.shape`` (float32 or float64 as ``inp.dtype``).

    ``gaussian``: i.i.d. N(0, std²) entries from ``numpy.random.default_rng(seed)``.
    A file: ``batch`` samples drawn without replacement with the same generator; the
    file must hold an array of shape ``[N, *shape]`` with ``N >= batch`` (a .npz needs
    ``key`` unless it holds one array).

    Raises:
      DataError: the file is missing, unreadable, not an array file, of the wrong shape,
        or holds fewer samples than ``batch``.
    """
    if batch < 2:
        raise DataError(f"batch size must be at least 2 (the NLC needs a spread of inputs), got {batch}")
    rng = np.random.default_rng(seed)
    dtype = np.dtype(inp.dtype)
    if inp.data == "gaussian":
        return (inp.std * rng.standard_normal((batch, *inp.shape))).astype(dtype)
    where = f"{inp.at or locate(source)}: input.data"
    path = Path(inp.data)
    if not path.is_absolute():
        path = Path(base_dir) / path
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as err:
        raise DataError(f"{where}: cannot read {str(path)!r}: {err.strerror or err}") from None
    if not (magic.startswith(b"\x93NUMPY") or magic.startswith(b"PK\x03\x04")):
        raise DataError(f"{where}: expected a NumPy array file (.npy or .npz); got {str(path)!r}, which is not "
                        "one (save arrays with numpy.save or numpy.savez)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        raise DataError(f"{where}: cannot read {str(path)!r}: {reason}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        names = list(loaded.files)
        if inp.key is not None:
            if inp.key not in names:
                raise DataError(f"{where}: {str(path)!r} has no array {inp.key!r}; it holds {', '.join(names)}")
            array = loaded[inp.key]
        elif len(names) == 1:
            array = loaded[names[0]]
        else:
            raise DataError(f"{where}: {str(path)!r} holds several arrays ({', '.join(names)}); "
                            "name one with input.key")
    else:
        array = loaded
    if array.ndim < 1 or tuple(array.shape[1:]) != tuple(inp.shape):
        raise DataError(f"{where}: expected samples of shape [N, {', '.join(map(str, inp.shape))}], "
                        f"got an array of shape {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{where}: expected a numeric array, got dtype {array.dtype}")
    if array.shape[0] < 2:
        raise DataError(f"{where}: expected at least 2 samples, got {array.shape[0]}")
    if array.shape[0] < batch:  # never a smaller batch than the one reported
        raise DataError(f"{where}: expected at least {batch} samples (the batch); got {array.shape[0]} in "
                        f"{str(path)!r}: pass --batch {array.shape[0]} or fewer")
    if array.shape[0] > batch:
        array = array[np.sort(rng.choice(array.shape[0], batch, replace=False))]
    array = np.asarray(array, dtype=dtype)
    if not np.all(np.isfinite(array)):
        raise DataError(f"{where}: the samples contain NaN or infinite values")
    return array
