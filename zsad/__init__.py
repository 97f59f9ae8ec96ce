"""zsad: zero-shot architecture design.

Metrics of a network at random initialization that predict whether it will
train well: the nonlinearity coefficient (NLC), Jacobian spectra and mean-field
signal propagation.
"""

from zsad._errors import DataError as DataError
from zsad._errors import NumericsError as NumericsError
from zsad._errors import SpecError as SpecError
from zsad._errors import ZsadError as ZsadError
from zsad._types import Network as Network
from zsad.arch.build import build as build
from zsad.arch.spec import Architecture as Architecture
from zsad.arch.spec import dump_architecture as dump_architecture
from zsad.arch.spec import load_architecture as load_architecture
from zsad.cache import enable_compilation_cache as enable_compilation_cache
from zsad.data import load_inputs as load_inputs
from zsad.nlc import NLCResult as NLCResult
from zsad.nlc import nlc as nlc
from zsad.nlc import nlc_profile as nlc_profile
from zsad.nlc import nlc_of_linearization as nlc_of_linearization
from zsad.nlc import nlc_of_tangents as nlc_of_tangents
from zsad.nlc import push_tangents as push_tangents
from zsad.score import ScoreOptions as ScoreOptions
from zsad.score import ScoreReport as ScoreReport
from zsad.score import plot_score_spectrum as plot_score_spectrum
from zsad.score import score_architecture as score_architecture
from zsad.spectrum import JacobianSpectrum as JacobianSpectrum
from zsad.spectrum import hutchinson as hutchinson
from zsad.spectrum import jacobian_singular_values as jacobian_singular_values
from zsad.spectrum import jacobian_spectrum as jacobian_spectrum
from zsad.spectrum import make_spectrum_fn as make_spectrum_fn
from zsad.spectrum import slq_density as slq_density

__version__ = "0.1.0"
