"""PyTorch modules as zsad networks, through torchax.

An architecture file's ``module: "torch:package.module:factory"`` names a
``factory()`` that returns a ``torch.nn.Module``. It is converted once: its
forward becomes a pure JAX function of (state, x) by running it on torchax
tensors (``torch.func.functional_call`` inside torchax's environment, each
PyTorch operation lowered to ``jax.numpy``/``jax.lax``), so every metric runs in
one compiled JAX program as for zsad's own layers.

The :class:`~zsad._types.Network`:

* variables ``{"params": {name: array}, "buffers": {name: array},
  "batch_stats": {bn name: {"mean", "var"}}}``, names as ``named_parameters()``
  and ``named_buffers()`` give them (PyTorch layouts: a weight is
  ``[out, in, *kernel]``, inputs are channels first);
* ``init(key, scalars)``: the module's own PyTorch initialization, drawn per
  seed. ``jax.random.key_data(key)`` (two 32-bit words ``hi, lo``) gives the
  seed ``s = hi * 2**32 + lo``; ``factory()`` runs again after
  ``torch.manual_seed(s)`` (in a forked RNG state: the caller's torch RNG is
  untouched), on the host (``jax.pure_callback``), so the same zsad seed gives the
  same weights, and ``--seed``/``--seeds`` mean what they mean elsewhere. With
  ``init:`` in the file, zsad's distributions replace it (:func:`_override`);
* ``apply``: the intermediates are the outputs of the module's top-level
  children (``named_children()``), in call order (a child called again is
  ``name#2``, ...), then ``output`` where the forward's result is not the last
  child's output;
* batch norm (``_BatchNorm`` subclasses in training mode, or without running
  statistics) uses the scoring batch's statistics, frozen as zsad freezes its own
  layers (:mod:`zsad.arch.build`): the batch mean and the biased batch variance,
  held constant (``stop_gradient``) while differentiating. The running buffers are
  neither used nor updated. A batch norm in eval mode uses its running buffers,
  as PyTorch does.

The registry's torch 2.13 CPU build and torchax 0.0.13 need two shims at
import (:func:`_import`): torchax names aten overloads of named tensors
(``prod.dim_Dimname``, ``std.names_dim``, ...) that torch 2.13 removed; while
torchax imports they resolve to inert placeholders that match no operation (no
model calls them: named tensors cannot be traced). The registry's torchvision
is built against CUDA torch, so its C++ operators do not load; torchvision's
import registers abstract implementations of ``torchvision::nms`` and ``qnms``
unconditionally, so their schemas are declared first: its models (pure PyTorch)
import and run, its detection operators stay unavailable.
"""

from __future__ import annotations

import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np

from zsad._entry import import_callable
from zsad._errors import SpecError, locate
from zsad._types import Network
from zsad.arch.weights import unit_weights

PREFIX = "torch:"
EXTRA = "pip install 'zsad[torch]'"


def is_torch_entry(module: str | None) -> bool:
    """Whether an architecture's ``module:`` names a PyTorch factory (``torch:package.module:factory``)."""
    return module is not None and module.startswith(PREFIX)


# --------------------------------------------------------------------------- imports

_IMPORT_LOCK = threading.Lock()
_TORCHVISION_OPS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_libs: list = []  # keeps the declared torchvision schemas alive


class _RemovedOverload:
    """Stands for an aten overload that torchax names and this torch no longer has; matches no operation."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<removed overload {self.name}>"


@functools.lru_cache(maxsize=1)
def _import():
    """``(torch, torchax, its environment)``, with the shims of the module docstring; raises ImportError."""
    import importlib.util

    import torch
    import torch._ops

    with _IMPORT_LOCK:
        if importlib.util.find_spec("torchvision") is not None and not _torchvision_ops_load(torch):
            lib = torch.library.Library("torchvision", "DEF")
            for schema in _TORCHVISION_OPS:
                lib.define(schema)
            _libs.append(lib)
        packet = torch._ops.OpOverloadPacket
        original = packet.__getattr__

        def getattr_(self, key):
            try:
                return original(self, key)
            except AttributeError:
                if "dimname" in key.lower() or "names" in key:  # named-tensor overloads, removed in torch 2.13
                    return _RemovedOverload(f"{self._qualified_op_name}.{key}")
                raise

        packet.__getattr__ = getattr_
        try:
            import torchax

            env = torchax.default_env()  # loads torchax's operation tables (they name the overloads)
        finally:
            packet.__getattr__ = original
    return torch, torchax, env


def _torchvision_ops_load(torch) -> bool:
    """Whether torchvision's C++ operators load into this torch (without importing torchvision)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torchvision")
    libs = sorted(Path(spec.origin).parent.glob("_C*.so")) if spec and spec.origin else []
    if not libs:
        return False
    try:
        torch.ops.load_library(str(libs[0]))
        return True
    except (OSError, RuntimeError):
        return False


def import_torch(where: str = "module"):
    """``(torch, torchax, env)``, or a one-line :class:`SpecError` naming the ``zsad[torch]`` extra."""
    try:
        return _import()
    except ImportError as err:
        raise SpecError(f"{where}: a PyTorch module needs torch and torchax ({type(err).__name__}: {err}); "
                        f"install them with: {EXTRA}") from None


# --------------------------------------------------------------------------- the call context

_LOCK = threading.RLock()  # one forward traced at a time: torch modules are reparametrized in place


class _Call:
    """What one traced forward reads and records: batch-norm mode and statistics, children's outputs."""

    def __init__(self, mode: str, stats: dict | None = None):
        self.mode = mode  # "batch": the batch's statistics (frozen); "stored": those in ``stats``
        self.stats_in = stats or {}
        self.stats_out: dict[str, dict[str, jax.Array]] = {}
        self.outs: dict[str, jax.Array] = {}
        self.last = None  # the last recorded child's output (a torch tensor)


_current = threading.local()


def _active() -> _Call | None:
    return getattr(_current, "call", None)


def _is_bn(torch, m) -> bool:
    return isinstance(m, torch.nn.modules.batchnorm._BatchNorm)


def _frozen_bn_forward(torch, interop, bn, name: str):
    """A forward for ``bn`` that freezes the batch's statistics (module docstring); falls back to the
    class's own forward outside zsad's calls and in eval mode with running statistics."""
    own = type(bn).forward

    def forward(x):
        call = _active()
        if call is None or not (bn.training or not bn.track_running_stats):
            return own(bn, x)
        xj = interop.jax_view(x)
        shape = (1, -1) + (1,) * (xj.ndim - 2)
        if call.mode == "batch":
            axes = (0, *range(2, xj.ndim))
            m = jnp.mean(xj, axes)
            v = jnp.mean(jnp.square(xj - m.reshape(shape)), axes)
            m, v = jax.lax.stop_gradient(m), jax.lax.stop_gradient(v)
            call.stats_out[name] = {"mean": m, "var": v}
        else:
            m, v = call.stats_in[name]["mean"], call.stats_in[name]["var"]
        mult = jax.lax.rsqrt(v + bn.eps)
        if bn.weight is not None:
            mult = mult * interop.jax_view(bn.weight)
        y = (xj - m.reshape(shape)) * mult.reshape(shape)
        if bn.bias is not None:
            y = y + interop.jax_view(bn.bias).reshape(shape)
        return interop.torch_view(y)

    return forward


def _record_hook(name: str):
    def hook(module, inputs, output):
        call = _active()
        if call is None or not hasattr(output, "shape"):
            return
        from torchax import interop

        key, k = name, 1
        while key in call.outs:
            k += 1
            key = f"{name}#{k}"
        call.outs[key] = interop.jax_view(output)
        call.last = output

    return hook


# --------------------------------------------------------------------------- conversion

class TorchModel:
    """A converted module: its state's names and shapes, and the pure forward."""

    def __init__(self, factory, entry: str, where: str):
        torch, torchax, env = import_torch(where)
        from torchax import interop

        self.torch, self.env, self.interop = torch, env, interop
        self.factory, self.entry, self.where = factory, entry, where
        module = self._make(None)
        self.module = module
        self.param_names = tuple(name for name, _ in module.named_parameters())
        self.buffer_names = tuple(name for name, _ in module.named_buffers())
        self.bn_names = tuple(name for name, m in module.named_modules() if _is_bn(torch, m)
                              and (m.training or not m.track_running_stats))
        for name, m in module.named_modules():
            if name in self.bn_names:
                m.forward = _frozen_bn_forward(torch, interop, m, name)
        for name, child in module.named_children():
            child.register_forward_hook(_record_hook(name))
        state = self._state(module)
        self.shapes = {group: {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in leaves.items()}
                       for group, leaves in state.items()}
        self.stats_shapes = {name: self._bn_shapes(module.get_submodule(name)) for name in self.bn_names}

    def _make(self, seed: int | None):
        torch = self.torch
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            try:
                module = self.factory()
            except Exception as err:
                raise SpecError(f"{self.where}: {self.entry}() failed: {type(err).__name__}: {err}") from None
        if not isinstance(module, torch.nn.Module):
            raise SpecError(f"{self.where}: {self.entry}() returned {type(module).__name__}, expected a "
                            "torch.nn.Module")
        return module

    def _state(self, module) -> dict[str, dict[str, np.ndarray]]:
        def arr(t):
            a = t.detach().cpu().numpy()
            return np.asarray(a, dtype=jax.dtypes.canonicalize_dtype(a.dtype))  # as JAX holds it (int64 -> int32)

        return {"params": {k: arr(v) for k, v in module.named_parameters()},
                "buffers": {k: arr(v) for k, v in module.named_buffers()}}

    def _bn_shapes(self, bn) -> dict[str, jax.ShapeDtypeStruct]:
        dtype = bn.weight.dtype if bn.weight is not None else self.torch.get_default_dtype()
        dt = jax.dtypes.canonicalize_dtype(np.dtype(str(dtype).removeprefix("torch.")))
        return {"mean": jax.ShapeDtypeStruct((bn.num_features,), dt),
                "var": jax.ShapeDtypeStruct((bn.num_features,), dt)}

    # ---- initialization

    def host_init(self, key_data: np.ndarray) -> dict:
        """The module's state for the seed of ``key_data`` (module docstring), as NumPy arrays."""
        hi, lo = (int(v) for v in np.asarray(key_data, dtype=np.uint32).reshape(-1)[:2])
        module = self._make((hi << 32) | lo)
        state = self._state(module)
        for group, leaves in self.shapes.items():
            got = {k: v.shape for k, v in state[group].items()}
            if got != {k: v.shape for k, v in leaves.items()}:
                raise SpecError(f"{self.where}: {self.entry}() returned modules of different structure on two "
                                "calls; it must build the same module every time")
        return state

    def init_state(self, key) -> dict:
        """``{"params", "buffers"}`` for ``key`` (jittable: the draw runs on the host)."""
        state = jax.pure_callback(self.host_init, self.shapes, jax.random.key_data(key),
                                  vmap_method="sequential")
        stats = {name: {"mean": jnp.zeros(s["mean"].shape, s["mean"].dtype),
                        "var": jnp.ones(s["var"].shape, s["var"].dtype)} for name, s in self.stats_shapes.items()}
        return {**state, "batch_stats": stats}

    # ---- forward

    def forward(self, variables: dict, x: jax.Array, mode: str) -> tuple[jax.Array, dict, dict]:
        """``(y, {child: output}, batch statistics)`` of one traced forward pass (``mode``: see :class:`_Call`)."""
        torch, env = self.torch, self.env
        with _LOCK:
            call = _Call(mode, variables.get("batch_stats"))
            _current.call = call
            try:
                params, buffers, xt = env.j2t_iso((variables["params"], variables["buffers"], x))
                with env, jax.numpy_rank_promotion("allow"):  # torchax's lowerings broadcast as NumPy does
                    y = torch.func.functional_call(self.module, (params, buffers), (xt,))
                if not hasattr(y, "shape"):
                    raise SpecError(f"{self.where}: {self.entry}(): forward returned {type(y).__name__}, "
                                    "expected one tensor")
                last_is_y = call.last is y
                yj = env.t2j_iso(y)
            finally:
                _current.call = None
        outs = dict(call.outs)
        if not last_is_y:
            outs["output"] = yj
        return yj, outs, call.stats_out


# --------------------------------------------------------------------------- zsad's distributions

def _override(params: dict, key, scalars: dict, dist: str) -> dict:
    """zsad's initialization in place of the module's own (``init:`` in the file).

    Every parameter of two or more dimensions (a PyTorch weight ``[out, in, *kernel]``) is drawn from
    ``dist`` with variance ``weight_std² / fan_in``, ``fan_in = in * prod(kernel)`` (zsad's
    :func:`~zsad.arch.weights.unit_weights`, drawn in zsad's layout ``[*kernel, in, out]`` and transposed, so
    ``orthogonal`` and ``delta_orthogonal`` mean what they mean for zsad's layers); the ``bias`` beside such
    a weight (``prefix.bias`` for ``prefix.weight``) is N(0, bias_std²). Every other parameter (normalization
    scales and shifts, ...) keeps the module's own initialization. Parameter ``i`` (``named_parameters()``
    order) draws under ``fold_in(key, i)``.
    """
    drawn = {name for name, p in params.items() if p.ndim >= 2}
    out = dict(params)
    for i, (name, p) in enumerate(params.items()):
        k = jax.random.fold_in(key, i)
        if name in drawn:
            n = p.ndim
            zshape = (*p.shape[2:], p.shape[1], p.shape[0])
            w = unit_weights(k, zshape, dist, p.dtype)
            out[name] = scalars["weight_std"] * jnp.transpose(w, (n - 1, n - 2, *range(n - 2)))
        elif name.endswith("bias") and name[: -len("bias")] + "weight" in drawn:
            out[name] = scalars["bias_std"] * jax.random.normal(k, p.shape, p.dtype)
    return out


def init_description(arch) -> dict:
    """Which initialization scoring ``arch`` uses, for the report."""
    if not getattr(arch, "init_set", False):
        return {"source": "pytorch", "summary": "the module's own PyTorch initialization, torch.manual_seed from "
                                                "each initialization key"}
    i = arch.init
    return {"source": "zsad", "dist": i.dist, "weight_std": i.weight_std, "bias_std": i.bias_std,
            "summary": f"zsad's {i.dist}, weight_std {i.weight_std:g}, bias_std {i.bias_std:g} on every weight "
                       "of 2+ dimensions and its bias (fan_in = in x prod(kernel)); other parameters PyTorch's"}


# --------------------------------------------------------------------------- the network

def _unsupported(err: Exception) -> str | None:
    """The operation an error of torchax says it cannot lower, if that is what it is."""
    text = str(err)
    if type(err).__name__ == "OperatorNotFound" and "Operator with name " in text:
        return text.split("Operator with name ", 1)[1].split(" has no lowering", 1)[0]
    return None


def build_torch(arch) -> Network:
    """The :class:`~zsad._types.Network` of ``arch`` (``module: "torch:package.module:factory"``)."""
    where = f"{locate(arch.source)}: module"
    import_torch(where)
    entry = arch.module[len(PREFIX):]
    module_name, _, attr = entry.partition(":")
    factory = import_callable(module_name, attr, arch.base_dir, where)
    model = _model(factory, entry, where)
    shape = tuple(arch.input.shape)
    zsad_init = bool(getattr(arch, "init_set", False))
    scalars = ({"weight_std": np.asarray(arch.init.weight_std, jnp.result_type(float)),
                "bias_std": np.asarray(arch.init.bias_std, jnp.result_type(float))} if zsad_init else {})
    dist = arch.init.dist

    def init(key, scalars):
        variables = model.init_state(key)
        if zsad_init:
            variables["params"] = _override(variables["params"], jax.random.fold_in(key, 1), scalars, dist)
        return variables

    def apply(variables, scalars, x):
        y, outs, _ = model.forward(variables, x, "stored")
        return y, outs

    def calibrate(variables, scalars, x):
        if not model.bn_names:
            return variables
        _, _, stats = model.forward(variables, x, "batch")
        return {**variables, "batch_stats": stats}

    def apply_calibrating(variables, scalars, x):
        y, outs, stats = model.forward(variables, x, "batch")
        return (y, outs), ({**variables, "batch_stats": stats} if model.bn_names else variables)

    order: list[str] = []  # the intermediates in call order (eval_shape's dict comes back sorted)

    def probe(variables, scalars, x):
        y, outs = apply(variables, scalars, x)
        order[:] = list(outs)
        return y, outs

    try:
        variables = jax.eval_shape(init, jax.random.key(0), scalars)
        jax.eval_shape(probe, variables, scalars, jax.ShapeDtypeStruct((2, *shape), jnp.float32))
    except SpecError:
        raise
    except Exception as err:
        op = _unsupported(err)
        if op is not None:
            raise SpecError(f"{where}: {entry}: torchax cannot lower the operation {op} that its forward "
                            "uses") from None
        raise SpecError(f"{where}: {entry}() does not run on inputs of shape {list(shape)} (one sample, channels "
                        f"first): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    return Network(init, apply, calibrate, scalars, tuple(order), shape, apply_calibrating=apply_calibrating)


_MODELS: dict = {}


def _model(factory, entry: str, where: str) -> TorchModel:
    """One conversion per factory (a space's architectures that name it share the module and its program)."""
    key = (factory, entry)
    if key not in _MODELS:
        _MODELS[key] = TorchModel(factory, entry, where)
    return _MODELS[key]
