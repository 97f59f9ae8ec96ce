"""JAX's persistent compilation cache in a per-user cache directory."""

from __future__ import annotations

import os
from pathlib import Path

import jax


def cache_dir() -> Path:
    """``$ZSAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/zsad/jax``, else ``~/.cache/zsad/jax``."""
    if os.environ.get("ZSAD_CACHE_DIR"):
        return Path(os.environ["ZSAD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zsad" / "jax"


def enable_compilation_cache(path: str | Path | None = None) -> Path:
    """Stores compiled programs on disk so a second run starts warm. Returns the directory."""
    path = Path(path) if path is not None else cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
