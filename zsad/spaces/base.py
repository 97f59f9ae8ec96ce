"""The interface every built-in search space implements.

A built-in space (``space: NAME`` in a space file, ``zsad.space``) is a class
registered in :data:`zsad.spaces.SPACES`. The space file's option fields
(``task:``, ``width:``, ``depth:`` ...) configure one instance
(:meth:`BuiltinSpace.configure`); the instance then turns the space's own
notation into canonical, hashable architectures and builds their networks.

The contract:

* ``name``, ``aliases``: the registry name (``nas-bench-101``) and the other
  spellings accepted (``nb101``).
* ``notation``: what one architecture looks like, quoted in error messages.
* ``option_fields``: the extra fields of a space file this space reads.
* :meth:`configure` ``(options, ctx)``: validates the option fields (a mapping
  from field name to its YAML value, only fields of ``option_fields``
  present); errors are one line, made with ``ctx.child(options, field).error(...)``.
* ``input_shape``: the default input ``(H, W, C)``; a space file's ``input:``
  may override it where :meth:`check_input` accepts the shape.
* ``size``: the number of architectures, or None where the space is not
  enumerable (then ``archs: all`` is refused).
* ``features``: the layer name where the default ``sigma2`` segment ends (the
  last feature map, before global pooling and the classifier).
* :meth:`parse` ``(node) -> arch``: the notation (a string or a mapping) to the
  canonical architecture (hashable; equal architectures compare equal); raises
  :class:`~zsad._errors.SpecError` with a one-line reason (no file position:
  the caller adds it).
* :meth:`format` ``(arch) -> str``: the architecture in the space's notation
  (the ``arch`` column of results); ``parse(format(a)) == a``.
* :meth:`all`: every architecture (only where ``size`` is not None).
* :meth:`sample` ``(n, seed)``: ``n`` distinct architectures, deterministic in ``seed``.
* :meth:`params`, :meth:`flops`: the exact parameter count of the benchmark's
  own network and its FLOPs by the space's documented convention.
* :meth:`degenerate`: the reason the network's output is constant, else None.
* :meth:`group`, :meth:`program`, :meth:`scalars`: architectures with equal
  ``group(arch)`` share one compiled program ``program(group)``; the
  architecture is data, ``scalars(arch)`` (traced: operation codes, edge
  masks, ``weight_std``, ``bias_std``).
* :meth:`network` ``(arch)``: the network of one architecture built directly,
  computing only its own operations. On the same weights (the program's
  variables restricted to the direct network's tree: :func:`restrict`) both
  give the same outputs.
* :meth:`code_layers`: the outputs whose signs give NASWOT's activation codes.

Networks are :class:`zsad._types.Network`. They are built on the input shape
the instance was configured with (``input_shape`` after :meth:`with_input`).
This module imports no jax: parsing a space file loads none.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Hashable, Iterator, Sequence

from zsad._errors import SpecError

Arch = Hashable


class BuiltinSpace(abc.ABC):
    """One built-in search space, configured by the space file's options (task, width, depth, ...)."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    notation: ClassVar[str]
    option_fields: ClassVar[tuple[str, ...]] = ()

    input_shape: tuple[int, ...]
    size: int | None = None
    features: str

    # ---- configuration

    @classmethod
    def configure(cls, options: dict, ctx: Any) -> "BuiltinSpace":
        """An instance configured by ``options`` (the space file's option fields present)."""
        del options, ctx
        return cls()

    def check_input(self, shape: Sequence[int]) -> str | None:
        """Why ``shape`` (``H, W, C``) cannot be this space's input (an ``expected ...`` phrase), else None."""
        if list(shape) != list(self.input_shape):
            return f"{list(self.input_shape)}"
        return None

    def with_input(self, shape: Sequence[int]) -> "BuiltinSpace":
        """This space on inputs of ``shape`` (accepted by :meth:`check_input`)."""
        if tuple(shape) == tuple(self.input_shape):
            return self
        raise SpecError(f"{self.name}: input shape {list(shape)}: expected {self.check_input(shape)}")

    def options(self) -> dict:
        """The configuration, as plain data (part of the space's fingerprint)."""
        return {}

    # ---- notation

    @abc.abstractmethod
    def parse(self, node: Any) -> Arch:
        """The space's notation -> canonical hashable architecture; SpecError(reason) on bad input."""

    @abc.abstractmethod
    def format(self, arch: Arch) -> str:
        """The architecture in the space's own notation."""

    def all(self) -> Iterator[Arch]:
        """Every architecture, in the space's order (only where ``size`` is not None)."""
        raise SpecError(f"{self.name}: the space is too large to enumerate; use {{sample: N, seed: S}} or a list")

    @abc.abstractmethod
    def sample(self, n: int, seed: int) -> list[Arch]:
        """``n`` distinct architectures, seeded and deterministic."""

    # ---- counts

    @abc.abstractmethod
    def params(self, arch: Arch) -> int:
        """Exact parameter count of the benchmark's own network."""

    @abc.abstractmethod
    def flops(self, arch: Arch) -> int:
        """FLOPs of one sample's forward pass, by the space's documented convention."""

    def degenerate(self, arch: Arch) -> str | None:
        """Why the network's output does not depend on its input, else None."""
        del arch
        return None

    # ---- networks

    @abc.abstractmethod
    def group(self, arch: Arch) -> Hashable:
        """Architectures with equal groups share one compiled program."""

    @abc.abstractmethod
    def program(self, group: Hashable) -> Any:
        """The shared :class:`~zsad._types.Network` of a group: the architecture is data in its scalars."""

    @abc.abstractmethod
    def scalars(self, arch: Arch) -> dict:
        """Traced scalars selecting ``arch`` in ``program(group(arch))``."""

    @abc.abstractmethod
    def network(self, arch: Arch) -> Any:
        """The :class:`~zsad._types.Network` of one architecture, built directly."""

    def code_layers(self, group: Hashable) -> tuple[str, ...]:
        """Outputs of ``program(group)`` whose signs are NASWOT's activation codes: every output but the logits."""
        return tuple(self.program(group).layer_names[:-1])


def restrict(tree: Any, like: Any) -> Any:
    """The part of the nested dict ``tree`` whose keys are those of ``like`` (a program's variables, restricted
    to the variables of a directly built network)."""
    if not isinstance(like, dict):
        return tree
    return {k: restrict(tree[k], v) for k, v in like.items()}
