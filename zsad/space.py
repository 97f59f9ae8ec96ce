"""Search-space files: YAML -> a re-iterable sequence of architectures (README, "Search-space files").

Four forms, told apart by their top-level field:

1. ``archs:`` an explicit list of architecture files (paths relative to the
   space file) or inline architecture mappings;
2. ``base:`` an architecture (a path or an inline mapping) and ``choices:``
   (dotted field path -> list of values), the cartesian product, with an
   optional seeded ``sample: N`` (``seed:``, default 0);
3. ``space: NAME``, a built-in space (:mod:`zsad.spaces`: ``nas-bench-201``,
   ``transnas-micro`` ...), with ``archs:`` one of ``all``, ``{sample: N,
   seed: S}`` or a list of architectures in the space's notation, the space's
   own option fields (``task:`` ...), and optionally ``input:`` (as in an
   architecture file; NAS-Bench-201: shape [32, 32, 3]) or ``data:``
   (shorthand for ``input: {data: ...}``);
4. ``generator: module:function``; ``function()`` yields architecture mappings
   or :class:`~zsad.arch.spec.Architecture` objects (the space file's folder is
   importable).

Every form may also carry ``name:``. Iterating a :class:`Space` yields
:class:`SpaceItem` ``(id, arch, error)``: ``id`` is the architecture's name
(form 2: the base's name followed by the chosen values, e.g.
``mlp[layers.1.fn=relu,init.weight_std=1.41]``; form 3: the normalized
NAS-Bench-201 string), ``arch`` an ``Architecture`` or a NAS-Bench-201
operation tuple, and ``error`` a one-line reason when this one architecture is
invalid (a combination of individually valid choices that does not fit
together; a generator's bad item). Whole-file problems raise
:class:`~zsad._errors.SpecError` with ``FILE:LINE:COL: FIELD.PATH: expected X;
got Y`` before anything is computed. A space is streamed: architectures are
made one at a time, never all held at once.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np

from zsad._entry import import_callable
from zsad.spaces import NAMES, SPACES, canonical_name, suggestion
from zsad.spaces import nasbench201 as nb201
from zsad._errors import SpecError, ZsadError, locate
from zsad.field_paths import plain, set_path, split_path, value_text
from zsad.arch.spec import (
    Architecture, Input, Context, parse_input, check_mapping, architecture_to_dict, load_architecture,
    parse_architecture, read_yaml,
)

FORMS = ("list", "product", "nas-bench-201", "generator")
NB201_NAMES = ("nas-bench-201",)
NB201_ALIASES = {"nasbench201": "nas-bench-201", "nas_bench_201": "nas-bench-201", "nb201": "nas-bench-201"}

Nb201Ops = tuple[str, ...]


@dataclass(frozen=True)
class SpaceItem:
    """One architecture of a space.

    Attributes:
      id: unique name within the space (the ``arch`` column of the results).
      arch: an ``Architecture``, a NAS-Bench-201 operation tuple, a :class:`BuiltinArch`, or None when
        ``error`` is set.
      error: one-line reason this architecture could not be made, else None.
    """

    id: str
    arch: Union[Architecture, Nb201Ops, None]
    error: str | None = None

    @property
    def is_nb201(self) -> bool:
        return isinstance(self.arch, tuple)

    @property
    def is_builtin(self) -> bool:
        """An architecture of a built-in space other than NAS-Bench-201 (a :class:`BuiltinArch`)."""
        return isinstance(self.arch, BuiltinArch)


@dataclass(frozen=True)
class BuiltinArch:
    """One architecture of a configured built-in space (:class:`zsad.spaces.BuiltinSpace`).

    Attributes:
      space: the configured space (its options and input shape).
      arch: the canonical architecture (``space.parse`` of its notation).
    """

    space: Any
    arch: Any


@dataclass(frozen=True)
class Space:
    """A parsed search space: re-iterable, streamed.

    Attributes:
      form: one of ``list``, ``product``, ``nas-bench-201``, ``generator``.
      name: display name (``name:`` of the file, else the file's stem).
      source: the space file, if any.
      size: number of architectures, or None when unknown (a generator).
      fingerprint: SHA-256 of the space's canonical description; equal
        fingerprints mean the same architectures in the same order (for a
        generator: the same entry point).
      input: the NAS-Bench-201 input specification (form 3 only).
    """

    form: str
    name: str
    source: str | None
    size: int | None
    fingerprint: str
    input: Input | None = None
    items: Callable[[], Iterator[SpaceItem]] = field(default=lambda: iter(()), repr=False, compare=False)

    def __iter__(self) -> Iterator[SpaceItem]:
        return self.items()

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source else Path.cwd()


# --------------------------------------------------------------------------- entry points

def load_space(path: str | Path) -> Space:
    """Reads and validates a search-space file.

    Raises:
      SpecError: one line naming the file, line, column and field.
    """
    node = read_yaml(path)
    return parse_space(node, file=str(path))


def file_name(node, ctx: Context, file: str | None, default: str) -> str:
    """The file's ``name:`` (a non-empty string), else the file's stem, else ``default``."""
    name = node.get("name", Path(file).stem if file else default)
    if not isinstance(name, str) or not name:
        raise ctx.child(node, "name").error("a non-empty string", name)
    return name


def parse_space(node: Any, *, file: str | None = None) -> Space:
    """Validates a loaded YAML mapping (ruamel nodes or plain dicts) into a :class:`Space`."""
    ctx = Context(file)
    if not isinstance(node, dict):
        raise ctx.error("a mapping with one of the fields archs, base, space, generator", node)
    name = file_name(node, ctx, file, "space")
    base_dir = Path(file).resolve().parent if file else Path.cwd()
    if "space" in node:
        canon = canonical_name(node["space"]) if isinstance(node["space"], str) else None
        if canon is not None and canon not in NB201_NAMES:
            return _builtin_space(node, ctx, name, file, canon)
        return _nb201_space(node, ctx, name, file, base_dir)
    if "generator" in node:
        return _generator_space(node, ctx, name, file, base_dir)
    if "base" in node or "choices" in node:
        return _product_space(node, ctx, name, file, base_dir)
    if "archs" in node:
        return _list_space(node, ctx, name, file, base_dir)
    raise ctx.error("one of the search-space forms: 'archs:' (a list), 'base:' + 'choices:', "
                    "'space: nas-bench-201', or 'generator: module:function'",
                    f"fields {', '.join(map(str, node)) or '(none)'}" if node else node)


def fingerprint_of(doc: Any) -> str:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _loc(ctx: Context) -> str:
    return locate(ctx.file, ctx.line, ctx.col)


# --------------------------------------------------------------------------- form 1: explicit list

def _arch_entry(item: Any, ctx: Context, file: str | None, base_dir: Path, default_name: str) -> Architecture:
    if isinstance(item, str):
        path = Path(item) if Path(item).is_absolute() else base_dir / item
        if not path.is_file():
            raise ctx.error("an architecture file (path relative to the space file) that exists", item)
        return load_architecture(path)
    if isinstance(item, dict):
        return parse_architecture(item, file=file, default_name=default_name, ctx=ctx)
    raise ctx.error("an architecture file path or an inline architecture mapping", item)


def _list_space(node, ctx, name, file, base_dir) -> Space:
    check_mapping(node, ctx, ("name", "archs"), "search space (explicit list)")
    archs_node = node["archs"]
    actx = ctx.child(node, "archs")
    if not isinstance(archs_node, list) or not archs_node:
        raise actx.error("a non-empty list of architecture files or inline architectures", archs_node)
    stem = Path(file).stem if file else "arch"
    archs: list[Architecture] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(archs_node):
        ictx = actx.child(archs_node, i)
        arch = _arch_entry(item, ictx, file, base_dir, f"{stem}-{i}")
        if arch.name in seen:
            raise ictx.error(f"a unique architecture name (archs.{seen[arch.name]} is also named "
                             f"{arch.name!r}; set 'name:' in one of them)", arch.name)
        seen[arch.name] = i
        archs.append(arch)
    fp = fingerprint_of({"form": "list", "archs": [architecture_to_dict(a) for a in archs]})
    items = tuple(SpaceItem(a.name, a) for a in archs)
    return Space("list", name, file, len(items), fp, items=lambda: iter(items))


# --------------------------------------------------------------------------- form 2: base + choices


def _product_space(node, ctx, name, file, base_dir) -> Space:
    check_mapping(node, ctx, ("name", "base", "choices", "sample", "seed"), "search space (base + choices)")
    if "base" not in node:
        raise ctx.error("a field 'base' (an architecture file or an inline architecture) beside 'choices'")
    if "choices" not in node:
        raise ctx.error("a field 'choices' (dotted field path -> list of values) beside 'base'")
    bctx = ctx.child(node, "base")
    base_node = node["base"]
    if isinstance(base_node, str):
        path = Path(base_node) if Path(base_node).is_absolute() else base_dir / base_node
        if not path.is_file():
            raise bctx.error("an architecture file (path relative to the space file) that exists", base_node)
        base_file: str | None = str(path)
        base_node = read_yaml(path)
        base_ctx = Context(base_file)
    elif isinstance(base_node, dict):
        base_file, base_ctx = file, bctx
    else:
        raise bctx.error("an architecture file path or an inline architecture mapping", base_node)
    default_name = Path(base_file).stem if isinstance(node["base"], str) else "base"
    base = parse_architecture(copy.deepcopy(base_node), file=base_file, default_name=default_name, ctx=base_ctx)

    fields = _product_choices(node, ctx, base_node, base_file, default_name, base_ctx)

    sizes = [len(v) for _, v in fields]
    total = math.prod(sizes)
    seed = 0
    if "seed" in node:
        seed = node["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ctx.child(node, "seed").error("an integer >= 0", seed)
    indices: list[int] | None = None
    if "sample" in node:
        sample = node["sample"]
        sctx = ctx.child(node, "sample")
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
            raise sctx.error("an integer >= 1", sample)
        if sample > total:
            raise sctx.error(f"at most {total} (the size of the product of the choices)", sample)
        indices = sorted(int(i) for i in np.random.default_rng(seed).choice(total, size=sample, replace=False))
    size = total if indices is None else len(indices)

    def combo(index: int) -> list[tuple[str, Any]]:
        out = []
        for (key, values), n in zip(reversed(fields), reversed(sizes)):
            index, r = divmod(index, n)
            out.append((key, values[r]))
        return out[::-1]

    def items() -> Iterator[SpaceItem]:
        for index in (range(total) if indices is None else indices):
            chosen = combo(index)
            ident = f"{base.name}[{','.join(f'{k}={value_text(v)}' for k, v in chosen)}]"
            trial = copy.deepcopy(base_node)
            for key, value in chosen:
                set_path(trial, split_path(key), copy.deepcopy(value), create=True)
            try:
                arch = parse_architecture(trial, file=base_file, default_name=default_name, ctx=base_ctx)
            except ZsadError as err:
                yield SpaceItem(ident, None, f"invalid combination of choices: {err}")
                continue
            yield SpaceItem(ident, dataclasses.replace(arch, name=ident))

    fp = fingerprint_of({"form": "product", "base": architecture_to_dict(base),
                       "choices": [[k, plain(v)] for k, v in fields], "indices": indices})
    return Space("product", name, file, size, fp, items=items)


def _product_choices(node, ctx, base_node, base_file, default_name, base_ctx) -> list[tuple[str, list]]:
    """The ``choices:`` of a product space as ``[(dotted path, values)]``, each value checked on the base."""
    cnode = node["choices"]
    cctx = ctx.child(node, "choices")
    if not isinstance(cnode, dict) or not cnode:
        raise cctx.error("a non-empty mapping of dotted field paths to lists of values", cnode)
    fields: list[tuple[str, list]] = []
    for key, values in cnode.items():
        fctx = cctx.child(cnode, key)
        try:
            fctx.line, fctx.col = (v + 1 for v in cnode.lc.key(key))
        except (AttributeError, KeyError, TypeError):
            pass
        if not isinstance(key, str) or not key or any(not p for p in str(key).split(".")):
            raise fctx.error("a dotted field path such as layers.1.fn or init.weight_std", key)
        if not isinstance(values, list) or not values:
            raise cctx.child(cnode, key).error("a non-empty list of values", values)
        texts = [value_text(v) for v in values]
        for i, text in enumerate(texts):
            if text in texts[:i]:
                raise cctx.child(cnode, key).child(values, i).error(
                    f"distinct values (item {texts.index(text)} is the same)", values[i])
        parts = split_path(key)
        for i, value in enumerate(values):
            trial = copy.deepcopy(base_node)
            try:
                existed = set_path(trial, parts, copy.deepcopy(value), create=True)
            except LookupError as err:
                raise fctx.error(f"a field that exists in the base architecture ({err})", key) from None
            try:
                parse_architecture(trial, file=base_file, default_name=default_name, ctx=base_ctx)
            except ZsadError as err:
                if not existed:
                    raise fctx.error(f"a field that exists in the base architecture "
                                     f"({locate(base_file)} has no {key!r}: {err})", key) from None
                vctx = cctx.child(cnode, key).child(values, i)
                raise SpecError(f"{_loc(vctx)}: choices.{key}.{i}: value {value_text(value)!r} makes the base "
                                f"architecture invalid: {err}") from None
        fields.append((str(key), list(values)))
    return fields


# --------------------------------------------------------------------------- form 3: NAS-Bench-201

def _nb201_space(node, ctx, name, file, base_dir) -> Space:
    sctx = ctx.child(node, "space")
    kind = node["space"]
    if isinstance(kind, str):
        kind = NB201_ALIASES.get(kind.lower(), kind.lower())
    if kind not in NB201_NAMES:
        raise sctx.error(f"one of {', '.join(NAMES)}", node["space"], suggestion(str(node["space"])))
    check_mapping(node, ctx, ("name", "space", "archs", "input", "data"), "search space (built in)")
    inp = nb201_input(node, ctx)
    if "archs" not in node:
        raise ctx.error("a field 'archs' (all, {sample: N, seed: S}, or a list of architecture strings)")
    anode = node["archs"]
    actx = ctx.child(node, "archs")
    if anode == "all":
        spec: Any = "all"
        size = nb201.NUM_ARCHS

        def ops_iter():
            return iter(nb201.all_archs())
    elif isinstance(anode, dict):
        check_mapping(anode, actx, ("sample", "seed"), "NAS-Bench-201 sample")
        if "sample" not in anode:
            raise actx.error("a field 'sample' (how many architectures to draw)")
        n = anode["sample"]
        nctx = actx.child(anode, "sample")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise nctx.error("an integer >= 1", n)
        if n > nb201.NUM_ARCHS:
            raise nctx.error(f"at most {nb201.NUM_ARCHS} (the size of NAS-Bench-201)", n)
        seed = anode.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise actx.child(anode, "seed").error("an integer >= 0", seed)
        spec = {"sample": n, "seed": seed}
        size = n

        def ops_iter():
            return iter(nb201.sample_archs(n, seed))
    elif isinstance(anode, list) and anode:
        parsed: list[Nb201Ops] = []
        seen: dict[Nb201Ops, int] = {}
        for i, s in enumerate(anode):
            ictx = actx.child(anode, i)
            if not isinstance(s, str):
                raise ictx.error("a NAS-Bench-201 architecture string '|a~0|+|b~0|c~1|+|d~0|e~1|f~2|'", s)
            try:
                ops = nb201.parse_arch(s)
            except SpecError as err:
                raise SpecError(f"{_loc(ictx)}: archs.{i}: {err}") from None
            if ops in seen:
                raise ictx.error(f"distinct architectures (archs.{seen[ops]} is the same)", s)
            seen[ops] = i
            parsed.append(ops)
        spec = [nb201.format_arch(o) for o in parsed]
        size = len(parsed)
        frozen = tuple(parsed)

        def ops_iter():
            return iter(frozen)
    else:
        raise actx.error("all, {sample: N, seed: S}, or a non-empty list of architecture strings", anode)

    def items() -> Iterator[SpaceItem]:
        for ops in ops_iter():
            yield SpaceItem(nb201.format_arch(ops), tuple(ops))

    fp = fingerprint_of({"form": "nas-bench-201", "archs": spec,  # where `input.data` was written is not the space
                       "input": {k: v for k, v in dataclasses.asdict(inp).items() if k != "at"}})
    return Space("nas-bench-201", name, file, size, fp, input=inp, items=items)


# --------------------------------------------------------------------------- form 3: other built-in spaces

def configured_space(node, ctx, canon: str, fields: tuple[str, ...]):
    """The built-in space ``canon`` configured by ``node``'s option fields, on ``node``'s input."""
    sctx = ctx.child(node, "space")
    try:
        cls = SPACES[canon]
    except ImportError:
        raise sctx.error(f"a built-in space available in this installation ({canon} is not)", node["space"]) from None
    check_mapping(node, ctx, (*fields, *cls.option_fields), f"{canon} space")
    options = copy.copy(node)  # the option fields, with their positions in the file
    for key in [k for k in options if k not in cls.option_fields]:
        del options[key]
    space = cls.configure(options, ctx)
    inp = _builtin_input(node, ctx, space)
    return space.with_input(inp.shape), inp


def _builtin_input(node, ctx, space) -> Input:
    """``input:`` / ``data:`` of a built-in space's file; the shape defaults to the space's and is checked."""
    shape = list(space.input_shape)
    inode = node.get("input", {})
    ictx = ctx.child(node, "input") if "input" in node else ctx
    if not isinstance(inode, dict):
        raise ictx.error("a mapping (input)", inode)
    if "data" in node and "data" in inode:
        raise ctx.child(node, "data").error("either 'data:' or 'input.data:', not both")
    inode = {"shape": shape, **copy.deepcopy(inode), **({"data": node["data"]} if "data" in node else {})}
    inp = parse_input(inode, ictx)
    why = space.check_input(list(inp.shape))
    if why is not None:
        raise ictx.child(node["input"], "shape").error(f"{why} ({space.name} inputs)", list(inp.shape))
    return inp


def _builtin_space(node, ctx, name, file, canon: str) -> Space:
    space, inp = configured_space(node, ctx, canon, ("name", "space", "archs", "input", "data"))
    if "archs" not in node:
        raise ctx.error(f"a field 'archs' (all, {{sample: N, seed: S}}, or a list of {space.notation})")
    anode, actx = node["archs"], ctx.child(node, "archs")
    if anode == "all":
        if space.size is None:
            raise actx.error(f"{{sample: N, seed: S}} or a list ({canon} is too large to enumerate)", anode)
        spec: Any = "all"
        size, archs = space.size, space.all
    elif isinstance(anode, dict):
        check_mapping(anode, actx, ("sample", "seed"), f"{canon} sample")
        if "sample" not in anode:
            raise actx.error("a field 'sample' (how many architectures to draw)")
        n, seed = anode["sample"], anode.get("seed", 0)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= (space.size or n):
            raise actx.child(anode, "sample").error(
                f"an integer from 1 to {space.size} (the size of {canon})" if space.size else "an integer >= 1", n)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise actx.child(anode, "seed").error("an integer >= 0", seed)
        spec, size = {"sample": n, "seed": seed}, n
        archs = lambda: iter(space.sample(n, seed))  # noqa: E731
    elif isinstance(anode, list) and anode:
        seen: dict[Any, int] = {}
        for i, text in enumerate(anode):
            try:
                arch = space.parse(text)
            except SpecError as err:
                raise SpecError(f"{_loc(actx.child(anode, i))}: archs.{i}: {err}") from None
            if arch in seen:
                raise actx.child(anode, i).error(f"distinct architectures (archs.{seen[arch]} is the same)", text)
            seen[arch] = i
        frozen = tuple(seen)
        spec, size = [space.format(a) for a in frozen], len(frozen)
        archs = lambda: iter(frozen)  # noqa: E731
    else:
        raise actx.error(f"all, {{sample: N, seed: S}}, or a non-empty list of {space.notation}", anode)

    def items() -> Iterator[SpaceItem]:
        for arch in archs():
            yield SpaceItem(space.format(arch), BuiltinArch(space, arch))

    fp = fingerprint_of({"form": canon, "options": space.options(), "archs": spec,
                       "input": {k: v for k, v in dataclasses.asdict(inp).items() if k != "at"}})
    return Space(canon, name, file, size, fp, input=inp, items=items)


def nb201_input(node, ctx) -> Input:
    shape = list(nb201.INPUT_SHAPE)
    if "input" in node:
        inode = node["input"]
        ictx = ctx.child(node, "input")
        if not isinstance(inode, dict):
            raise ictx.error("a mapping (input)", inode)
        if "data" in node and "data" in inode:
            raise ctx.child(node, "data").error("either 'data:' or 'input.data:', not both")
        inode = copy.deepcopy(inode)
        if "shape" not in inode:
            inode["shape"] = shape
        if "data" in node:
            inode["data"] = node["data"]
        inp = parse_input(inode, ictx)
    else:
        inp = parse_input({"shape": shape, **({"data": node["data"]} if "data" in node else {})}, ctx)
    if list(inp.shape) != shape:
        raise ctx.child(node, "input").child(node["input"], "shape").error(
            f"{shape} (NAS-Bench-201 inputs are 32x32 RGB images)", list(inp.shape))
    return inp


# --------------------------------------------------------------------------- form 4: generator

def _generator_space(node, ctx, name, file, base_dir) -> Space:
    check_mapping(node, ctx, ("name", "generator"), "search space (generator)")
    entry = node["generator"]
    gctx = ctx.child(node, "generator")
    if not isinstance(entry, str) or entry.count(":") != 1 or not all(entry.split(":")):
        raise gctx.error("'package.module:function'", entry)
    module_name, attr = entry.split(":")
    where = f"{_loc(gctx)}: generator"
    fn = import_callable(module_name, attr, base_dir, where)

    def items() -> Iterator[SpaceItem]:
        base = str(base_dir)
        seen: set[str] = set()
        i = 0
        try:
            produced = iter(fn())
            while True:
                added = base not in sys.path
                if added:
                    sys.path.insert(0, base)
                try:
                    item = next(produced)
                except StopIteration:
                    return
                finally:
                    if added:
                        sys.path.remove(base)
                yield _generated(item, i, attr, entry, seen)
                i += 1
        except ZsadError:
            raise
        except Exception as err:  # the user's generator failed
            raise SpecError(f"{where}: {entry}() failed after {i} architectures: {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}") from None

    fp = fingerprint_of({"form": "generator", "entry": entry})
    return Space("generator", name, file, None, fp, items=items)





def _generated(item: Any, i: int, attr: str, entry: str, seen: set[str]) -> SpaceItem:
    default = f"{attr}-{i}"
    if isinstance(item, Architecture):
        arch, error = item, None
    elif isinstance(item, dict):
        try:
            arch, error = parse_architecture(copy.deepcopy(item), file=f"{entry}[{i}]", default_name=default), None
        except ZsadError as err:
            arch, error = None, str(err)
    else:
        arch, error = None, f"{entry}[{i}]: expected an architecture mapping or Architecture; got {type(item).__name__}"
    ident = arch.name if arch is not None else (
        str(item.get("name")) if isinstance(item, dict) and isinstance(item.get("name"), str) else default)
    if ident in seen:
        raise SpecError(f"{entry}: item {i}: expected unique architecture names; got {ident!r} twice")
    seen.add(ident)
    return SpaceItem(ident, arch, error)
