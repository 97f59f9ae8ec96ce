"""zsad: zero-shot architecture design.

Metrics of a network at random initialization that predict whether it will
train well: the nonlinearity coefficient (NLC), Jacobian spectra and mean-field
signal propagation.

The public names below load their modules on first use, so ``import zsad``
(and parsing an architecture file) does not import jax.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "DataError": "zsad._errors",
    "NumericsError": "zsad._errors",
    "SpecError": "zsad._errors",
    "ZsadError": "zsad._errors",
    "Network": "zsad._types",
    "build": "zsad.arch.build",
    "Architecture": "zsad.arch.spec",
    "dump_architecture": "zsad.arch.spec",
    "load_architecture": "zsad.arch.spec",
    "enable_compilation_cache": "zsad.cache",
    "load_inputs": "zsad.data",
    "NLCResult": "zsad.nlc",
    "nlc": "zsad.nlc",
    "nlc_profile": "zsad.nlc",
    "nlc_of_linearization": "zsad.nlc",
    "nlc_of_tangents": "zsad.nlc",
    "push_tangents": "zsad.nlc",
    "ScoreOptions": "zsad.score",
    "ScoreReport": "zsad.score",
    "plot_score_spectrum": "zsad.plotting",
    "score_architecture": "zsad.score",
    "JacobianSpectrum": "zsad.spectrum",
    "hutchinson": "zsad.spectrum",
    "jacobian_singular_values": "zsad.spectrum",
    "jacobian_spectrum": "zsad.spectrum",
    "make_spectrum_fn": "zsad.spectrum",
    "slq_density": "zsad.spectrum",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zsad' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps a public function whose name is also a submodule's (``zsad.nlc``): importing the submodule
    would otherwise replace the package attribute with the module (which stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # the same names, for type checkers and editors
    from zsad._errors import DataError, NumericsError, SpecError, ZsadError
    from zsad._types import Network
    from zsad.arch.build import build
    from zsad.arch.spec import Architecture, dump_architecture, load_architecture
    from zsad.cache import enable_compilation_cache
    from zsad.data import load_inputs
    from zsad.nlc import NLCResult, nlc, nlc_of_linearization, nlc_of_tangents, nlc_profile, push_tangents
    from zsad.plotting import plot_score_spectrum
    from zsad.score import ScoreOptions, ScoreReport, score_architecture
    from zsad.spectrum import (JacobianSpectrum, hutchinson, jacobian_singular_values, jacobian_spectrum,
                               make_spectrum_fn, slq_density)
