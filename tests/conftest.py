"""Shared fixtures. Tests run on the CPU; float64 where exactness is checked."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Enables float64 for one test and restores the previous setting."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """For tests that run the ``zsad`` command in-process: a private compilation cache,
    and ``--x64`` (a process-wide switch) undone afterwards."""
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    previous = jax.config.jax_enable_x64
    yield tmp_path
    jax.config.update("jax_enable_x64", previous)
