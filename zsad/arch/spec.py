"""Architecture files: YAML -> immutable, validated spec objects. No jax here.

The file format is the README's "Architecture files". Every field is checked before anything is traced;
errors are one line, ``FILE:LINE:COL: FIELD.PATH: expected X, got Y``.

The spec objects are those of :mod:`zsad.arch.layers` (re-exported here).
Scalars (initialization scales, residual scales, activation parameters and
shaping scalars) are plain floats here; ``zsad.arch.build`` turns them into a
pytree of traced arrays so that architectures differing only in scalars share
one compiled program.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Union

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from zsad._errors import SpecError, closest, locate
from zsad.arch.activation_names import ACTIVATION_NAMES, ACTIVATION_PARAMS
from zsad.arch.layers import (  # noqa: F401  (the spec objects, read and written here)
    Init, Input, Layer, Dense, Conv, AvgPool, MaxPool, GlobalAvgPool, Flatten, BatchNorm, LayerNorm, Shaping,
    Activation, Block, Residual, Architecture, expand, layer_label, named_layers, sub_prefix, activations_of,
    family_of,
)
from zsad.arch.shapes import infer_shapes

INIT_DISTS = ("normal", "truncated_normal", "uniform", "orthogonal", "delta_orthogonal")
DTYPES = ("float32", "float64")
LAYER_TYPES = (
    "dense", "conv", "avg_pool", "max_pool", "global_avg_pool", "flatten",
    "batch_norm", "layer_norm", "activation", "block", "residual",
)
ALIASES = {
    "linear": "dense", "conv2d": "conv", "conv1d": "conv", "avgpool": "avg_pool",
    "maxpool": "max_pool", "batchnorm": "batch_norm", "layernorm": "layer_norm",
    "global_average_pool": "global_avg_pool",
}


# --------------------------------------------------------------------------- spec objects

# --------------------------------------------------------------------------- YAML reading

class Context:
    """A position in the YAML document: file, dotted field path, line and column."""

    def __init__(self, file: str | None, path: str = "", line: int | None = None, col: int | None = None):
        self.file, self.path, self.line, self.col = file, path, line, col

    def child(self, node: Any, key: Any) -> "Context":
        path = f"{self.path}.{key}" if self.path else str(key)
        line = col = None
        try:
            if isinstance(node, CommentedMap):
                line, col = node.lc.value(key)
            elif isinstance(node, CommentedSeq):
                line, col = node.lc.item(key)
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        if line is None:
            return Context(self.file, path, self.line, self.col)
        return Context(self.file, path, line + 1, col + 1)

    def error(self, expected: str, got: Any = dataclasses.MISSING, hint: str = "") -> SpecError:
        where = locate(self.file, self.line, self.col)
        field_ = f" {self.path}:" if self.path else ""
        got_s = "" if got is dataclasses.MISSING else f"; got {_show(got)}"
        return SpecError(f"{where}:{field_} expected {expected}{got_s}{hint}")


class UnknownField(str):
    """Marks a field name in error messages."""


def _show(value: Any) -> str:
    if isinstance(value, UnknownField):
        return f"unknown field '{value}'"
    if isinstance(value, CommentedMap):
        return "a mapping"
    if isinstance(value, CommentedSeq):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return repr(value)


def check_mapping(node: Any, ctx: Context, allowed: tuple[str, ...], what: str) -> dict:
    if not isinstance(node, dict):
        raise ctx.error(f"a mapping ({what})", node)
    for key in node:
        if key not in allowed:
            kctx = ctx.child(node, key)
            try:
                kctx.line, kctx.col = (v + 1 for v in node.lc.key(key))
            except (AttributeError, KeyError, TypeError):
                pass
            raise kctx.error(
                f"a field of {what} ({', '.join(allowed)})", UnknownField(str(key)), closest(str(key), allowed),
            )
    return node


def _int(node: Any, ctx: Context, *, minimum: int = 1) -> int:
    if isinstance(node, bool) or not isinstance(node, int) or node < minimum:
        raise ctx.error(f"an integer >= {minimum}", node)
    return int(node)


def _float(node: Any, ctx: Context, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        raise ctx.error("a finite number", node)
    value = float(node)
    if positive and value <= 0:
        raise ctx.error("a number > 0", node)
    if minimum is not None and value < minimum:
        raise ctx.error(f"a number >= {minimum}", node)
    return value


def _bool(node: Any, ctx: Context) -> bool:
    if not isinstance(node, bool):
        raise ctx.error("true or false", node)
    return node


def _choice(node: Any, ctx: Context, valid: tuple[str, ...] | list[str]) -> str:
    if not isinstance(node, str) or node not in valid:
        hint = closest(node, valid) if isinstance(node, str) else ""
        raise ctx.error(f"one of {', '.join(valid)}", node, hint)
    return node


def _ints(node: Any, ctx: Context, rank: int | None, *, minimum: int = 1) -> tuple[int, ...]:
    """An int (broadcast to ``rank``) or a list of ``rank`` ints."""
    if isinstance(node, list):
        values = tuple(_int(v, ctx.child(node, i), minimum=minimum) for i, v in enumerate(node))
        if rank is not None and len(values) != rank:
            raise ctx.error(f"{rank} values (one per spatial axis)", list(node))
        return values
    value = _int(node, ctx, minimum=minimum)
    return (value,) * (rank or 1)


def _padding(node: Any, ctx: Context) -> Union[str, int]:
    if isinstance(node, str):
        return _choice(node.lower(), ctx, ("same", "valid"))
    return _int(node, ctx, minimum=0)


def _init(node: Any, ctx: Context, base: Init) -> Init:
    node = check_mapping(node, ctx, ("dist", "weight_std", "bias_std"), "initialization")
    values = {}
    if "dist" in node:
        values["dist"] = _choice(node["dist"], ctx.child(node, "dist"), INIT_DISTS)
    for key in ("weight_std", "bias_std"):
        if key in node:
            values[key] = _float(node[key], ctx.child(node, key), minimum=0.0)
    return dataclasses.replace(base, **values)


def parse_input(node: Any, ctx: Context) -> Input:
    node = check_mapping(node, ctx, ("shape", "data", "std", "dtype", "key"), "input")
    if "shape" not in node:
        raise ctx.error("a field 'shape' (list of positive integers)")
    shape_node = node["shape"]
    sctx = ctx.child(node, "shape")
    if isinstance(shape_node, int) and not isinstance(shape_node, bool):
        shape = (_int(shape_node, sctx),)
    elif isinstance(shape_node, list) and shape_node:
        shape = tuple(_int(v, sctx.child(shape_node, i)) for i, v in enumerate(shape_node))
    else:
        raise sctx.error("a non-empty list of positive integers", shape_node)
    data = node.get("data", "gaussian")
    if not isinstance(data, str) or not data:
        raise ctx.child(node, "data").error("'gaussian' or a path to a .npy/.npz file", data)
    if data != "gaussian" and not data.endswith((".npy", ".npz")):
        raise ctx.child(node, "data").error("'gaussian' or a path ending in .npy or .npz", data)
    std = _float(node["std"], ctx.child(node, "std"), positive=True) if "std" in node else 1.0
    dtype = _choice(node["dtype"], ctx.child(node, "dtype"), DTYPES) if "dtype" in node else "float32"
    key = node.get("key")
    if key is not None and not isinstance(key, str):
        raise ctx.child(node, "key").error("the name of an array in the .npz file", key)
    dctx = ctx.child(node, "data")
    at = locate(dctx.file, dctx.line, dctx.col) if "data" in node and dctx.line is not None else None
    return Input(shape=shape, data=data, std=std, dtype=dtype, key=key, at=at)


_LAYER_FIELDS = {
    "dense": ("features", "use_bias", "init"),
    "conv": ("features", "kernel", "stride", "padding", "use_bias", "init"),
    "avg_pool": ("window", "stride", "padding", "count_include_pad"),
    "max_pool": ("window", "stride", "padding"),
    "global_avg_pool": (),
    "flatten": (),
    "batch_norm": ("epsilon",),
    "layer_norm": ("epsilon",),
    "activation": ("fn", "params", "shaping"),
    "block": ("layers",),
    "residual": ("branch", "shortcut", "branch_scale", "shortcut_scale"),
}


def _layers(node: Any, ctx: Context, init: Init, *, spatial: int | None) -> tuple[Layer, ...]:
    if not isinstance(node, list) or not node:
        raise ctx.error("a non-empty list of layers", node)
    return tuple(_layer(item, ctx.child(node, i), init, spatial=spatial) for i, item in enumerate(node))


def _layer(node: Any, ctx: Context, init: Init, *, spatial: int | None) -> Layer:
    if not isinstance(node, dict):
        raise ctx.error("a layer mapping with a 'type' field", node)
    if "type" not in node:
        raise ctx.error(f"a field 'type' (one of {', '.join(LAYER_TYPES)})")
    tctx = ctx.child(node, "type")
    kind = node["type"]
    if isinstance(kind, str):
        kind = ALIASES.get(kind.lower(), kind.lower())
    kind = _choice(kind, tctx, LAYER_TYPES)
    extra = ("type", "repeat")
    if kind == "activation":
        fn_name = node.get("fn")
        extra += tuple(ACTIVATION_PARAMS.get(fn_name, {})) if isinstance(fn_name, str) else ()
    check_mapping(node, ctx, _LAYER_FIELDS[kind] + extra, f"{kind} layer")
    repeat = _int(node["repeat"], ctx.child(node, "repeat")) if "repeat" in node else 1
    at = locate(ctx.file, ctx.line, ctx.col) if ctx.line is not None else None
    layer = dataclasses.replace(_build_layer(kind, node, ctx, init, spatial=spatial), at=at)
    if kind != "block" and repeat != 1:
        return Block(layers=(layer,), repeat=repeat, path=ctx.path, at=at)
    if kind == "block":
        return dataclasses.replace(layer, repeat=repeat)
    return layer


def _required(node: dict, key: str, ctx: Context, expected: str) -> Any:
    if key not in node:
        raise ctx.error(f"a field '{key}' ({expected})")
    return node[key]


def _build_layer(kind: str, node: dict, ctx: Context, init: Init, *, spatial: int | None) -> Layer:
    c = lambda key: ctx.child(node, key)  # noqa: E731
    path = ctx.path
    if kind in ("dense", "conv"):
        features = _int(_required(node, "features", ctx, "a positive integer"), c("features"))
        use_bias = _bool(node["use_bias"], c("use_bias")) if "use_bias" in node else True
        layer_init = _init(node["init"], c("init"), init) if "init" in node else init
        if kind == "dense":
            return Dense(features=features, use_bias=use_bias, init=layer_init, path=path)
        kernel = _ints(_required(node, "kernel", ctx, "kernel size"), c("kernel"), spatial)
        rank = len(kernel)
        stride = _ints(node["stride"], c("stride"), rank) if "stride" in node else (1,) * rank
        padding = _padding(node["padding"], c("padding")) if "padding" in node else "same"
        return Conv(features=features, kernel=kernel, stride=stride, padding=padding,
                    use_bias=use_bias, init=layer_init, path=path)
    if kind in ("avg_pool", "max_pool"):
        window = _ints(_required(node, "window", ctx, "window size"), c("window"), spatial)
        stride = _ints(node["stride"], c("stride"), len(window)) if "stride" in node else window
        padding = _padding(node["padding"], c("padding")) if "padding" in node else "valid"
        if kind == "max_pool":
            return MaxPool(window=window, stride=stride, padding=padding, path=path)
        include = _bool(node["count_include_pad"], c("count_include_pad")) if "count_include_pad" in node else False
        return AvgPool(window=window, stride=stride, padding=padding, count_include_pad=include, path=path)
    if kind == "global_avg_pool":
        return GlobalAvgPool(path=path)
    if kind == "flatten":
        return Flatten(path=path)
    if kind in ("batch_norm", "layer_norm"):
        eps = _float(node["epsilon"], c("epsilon"), positive=True) if "epsilon" in node else 1e-5
        return (BatchNorm if kind == "batch_norm" else LayerNorm)(epsilon=eps, path=path)
    if kind == "activation":
        fn = _choice(_required(node, "fn", ctx, "an activation name"), c("fn"), ACTIVATION_NAMES)
        defaults = ACTIVATION_PARAMS.get(fn, {})
        params = dict(defaults)
        if "params" in node:
            pnode = check_mapping(node["params"], c("params"), tuple(defaults) or ("(none)",), f"parameters of {fn}")
            for key in pnode:
                params[key] = _float(pnode[key], c("params").child(pnode, key))
        for key in defaults:
            if key in node:
                params[key] = _float(node[key], c(key))
        shaping = Shaping()
        if "shaping" in node:
            snode = check_mapping(node["shaping"], c("shaping"), ("alpha", "beta", "gain"), "shaping scalars")
            values = {k: _float(snode[k], c("shaping").child(snode, k)) for k in snode}
            if values.get("beta", 1.0) == 0.0:
                raise c("shaping").child(snode, "beta").error("a number != 0", 0.0)
            shaping = Shaping(**values)
        return Activation(fn=fn, params=tuple(sorted(params.items())), shaping=shaping, path=path)
    if kind == "block":
        layers = _layers(_required(node, "layers", ctx, "a list of layers"), c("layers"), init, spatial=spatial)
        return Block(layers=layers, path=path)
    if kind == "residual":
        branch = _layers(_required(node, "branch", ctx, "a list of layers"), c("branch"), init, spatial=spatial)
        shortcut = _layers(node["shortcut"], c("shortcut"), init, spatial=spatial) if node.get("shortcut") else ()
        bs = _float(node["branch_scale"], c("branch_scale")) if "branch_scale" in node else 1.0
        ss = _float(node["shortcut_scale"], c("shortcut_scale")) if "shortcut_scale" in node else 1.0
        return Residual(branch=branch, shortcut=shortcut, branch_scale=bs, shortcut_scale=ss, path=path)
    raise AssertionError(kind)  # unreachable: kind was validated


TOP_FIELDS = ("name", "input", "init", "layers", "module")


def parse_architecture(node: Any, *, file: str | None = None, default_name: str = "arch",
                       ctx: Context | None = None) -> Architecture:
    """Validates a loaded YAML mapping (ruamel round-trip nodes or plain dicts) into an Architecture."""
    ctx = ctx or Context(file)
    node = check_mapping(node, ctx, TOP_FIELDS, "architecture")
    name = node.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ctx.child(node, "name").error("a non-empty string", name)
    if "input" not in node:
        raise ctx.error("a field 'input' (e.g. {shape: [256]})")
    inp = parse_input(node["input"], ctx.child(node, "input"))
    init = _init(node["init"], ctx.child(node, "init"), Init()) if "init" in node else Init()
    module = node.get("module")
    if module is not None:
        entry = module[len("torch:"):] if isinstance(module, str) and module.startswith("torch:") else module
        if not isinstance(entry, str) or entry.count(":") != 1:
            raise ctx.child(node, "module").error("'package.module:factory' (flax) or 'torch:package.module:factory'",
                                                  module)
        if "layers" in node:
            raise ctx.child(node, "layers").error("either 'layers' or 'module', not both")
        mctx = ctx.child(node, "module")
        return Architecture(name=name, input=inp, init=init, module=module, source=file, init_set="init" in node,
                            module_at=locate(mctx.file, mctx.line, mctx.col) if mctx.line is not None else None)
    if "layers" not in node:
        raise ctx.error("a field 'layers' (a list of layers) or 'module' ('package.module:factory')")
    spatial = len(inp.shape) - 1 if len(inp.shape) > 1 else None
    layers = _layers(node["layers"], ctx.child(node, "layers"), init, spatial=spatial)
    arch = Architecture(name=name, input=inp, init=init, layers=layers, source=file)
    infer_shapes(arch)  # raises SpecError naming the layer and both shapes
    return arch


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def read_yaml(path: str | Path) -> Any:
    """Reads a YAML file into round-trip nodes (which remember line and column)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SpecError(f"{path}: cannot read file: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise SpecError(f"{locate(str(path), line, col)}: file: expected UTF-8 text (YAML); got byte "
                        f"0x{data[err.start]:02x}, not a text file") from None
    try:
        return _yaml().load(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = locate(str(path), mark.line + 1, mark.column + 1) if mark else str(path)
        problem = (err.problem or err.context or "invalid YAML").strip()
        raise SpecError(f"{where}: malformed YAML: {problem}") from None
    except YAMLError as err:
        raise SpecError(f"{path}: malformed YAML: {str(err).splitlines()[0]}") from None


def load_architecture(path: str | Path) -> Architecture:
    """Reads and validates an architecture file.

    Raises:
      SpecError: one line naming the file, line, column and field.
    """
    node = read_yaml(path)
    return parse_architecture(node, file=str(path), default_name=Path(path).stem)


def architecture_to_dict(arch: Architecture) -> dict:
    """The canonical mapping of an architecture; ``parse_architecture`` reads it back equal."""
    out: dict[str, Any] = {"name": arch.name}
    inp = arch.input
    data = {"shape": list(inp.shape), "data": inp.data}
    if inp.data == "gaussian":
        data["std"] = inp.std
    if inp.dtype != "float32":
        data["dtype"] = inp.dtype
    if inp.key is not None:
        data["key"] = inp.key
    out["input"] = data
    if arch.module:
        if arch.init_set:
            out["init"] = dataclasses.asdict(arch.init)
        out["module"] = arch.module
        return out
    out["init"] = dataclasses.asdict(arch.init)
    out["layers"] = [_layer_to_dict(layer, arch.init) for layer in arch.layers]
    return out


def _layer_to_dict(layer: Layer, init: Init) -> dict:
    d: dict[str, Any] = {"type": layer.kind}
    if isinstance(layer, (Dense, Conv)):
        d["features"] = layer.features
        if isinstance(layer, Conv):
            d.update(kernel=list(layer.kernel), stride=list(layer.stride), padding=layer.padding)
        if not layer.use_bias:
            d["use_bias"] = False
        override = {k: v for k, v in dataclasses.asdict(layer.init).items() if getattr(init, k) != v}
        if override:
            d["init"] = override
    elif isinstance(layer, (AvgPool, MaxPool)):
        d.update(window=list(layer.window), stride=list(layer.stride), padding=layer.padding)
        if isinstance(layer, AvgPool) and layer.count_include_pad:
            d["count_include_pad"] = True
    elif isinstance(layer, (BatchNorm, LayerNorm)):
        d["epsilon"] = layer.epsilon
    elif isinstance(layer, Activation):
        d["fn"] = layer.fn
        if layer.params:
            d["params"] = dict(layer.params)
        if not layer.shaping.is_identity:
            d["shaping"] = dataclasses.asdict(layer.shaping)
    elif isinstance(layer, Block):
        d["repeat"] = layer.repeat
        d["layers"] = [_layer_to_dict(sub, init) for sub in layer.layers]
    elif isinstance(layer, Residual):
        d["branch"] = [_layer_to_dict(sub, init) for sub in layer.branch]
        if layer.shortcut:
            d["shortcut"] = [_layer_to_dict(sub, init) for sub in layer.shortcut]
        d["branch_scale"] = layer.branch_scale
        d["shortcut_scale"] = layer.shortcut_scale
    return d


def dump_architecture(arch: Architecture, path: str | Path) -> None:
    """Writes ``arch`` as a canonical architecture file."""
    yaml = YAML()
    yaml.default_flow_style = None
    with open(path, "w") as fh:
        yaml.dump(architecture_to_dict(arch), fh)
