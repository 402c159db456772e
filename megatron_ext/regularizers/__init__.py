"""Regularisers as plug-ins: one file in this folder per regulariser, found by name (``REG=``).

A regulariser is a per-token function of a layer's input and output, ``fn(h_in, h_out)`` with
``[..., h]`` tensors (Megatron's ``[s, b, h]``) returning ``[...]`` (``[s, b]``); training adds
``lambda * sum_l w_l * mean_tokens(fn(h_{l-1}, h_l))`` to the LM loss (``megatron_ext.reg``).
A module here registers it::

    @register("name", help="one line for the launcher and README")
    def name(h_in, h_out): ...

Every module of this folder (but ``_*.py``) is imported by ``discover()``, so dropping a file in is
enough for ``REG=name`` to work in the launcher, ``train.py``, the tracker and the analysis.
``register``'s arguments must be literals: the launcher and ``python -m megatron_ext.regularizers``
read the names and help texts from the files without importing them (no torch), and a test checks
that this scan and the imported registry agree. ``none`` (no penalty) is not a registration.

``fused`` names an optional fused twin (``"module:attr"``, imported on first use, so CPU-only code
never imports Triton), used for CUDA tensors in bf16/fp16/fp32 (``impl="auto"``) or when forced
(``impl="triton"``); it must compute the same values and gradients as ``fn``.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

NONE = "none"
"""REG=none: nothing attached; D_l and the regulariser's loss are still logged (on Psi)."""
PSI = "jreg"
"""The registration whose function is Psi, the displacement every run tracks as D_l."""
SELFDISTILL = "selfdistill"
"""REG=selfdistill: the self-distillation paper's loss (``megatron_ext.selfdistill``). Not a
per-token plug-in: it needs every layer's hidden state and the output layer, so it is attached
where the model's output is (``megatron_ext.selfdistill_train``); D_l is still Psi."""
NO_R = (NONE, PSI, SELFDISTILL)
"""REG values with no per-layer R of their own apart from D_l (Psi)."""
IMPLS = ("auto", "eager", "triton")
_FOLDER = Path(__file__).resolve().parent


class RegistryError(ValueError):
    """A plug-in that cannot be used (duplicate name, import failure): one line, names the file."""


@dataclass(frozen=True, kw_only=True)
class Regularizer:
    """One registered regulariser; call it as ``reg(h_in, h_out, impl="auto")``."""

    name: str
    """The ``REG=`` value."""
    fn: Callable
    """The eager per-token function ``(h_in [..., h], h_out [..., h]) -> [...]``."""
    help: str = ""
    """One line: what it computes (launcher help, ``python -m megatron_ext.regularizers``)."""
    fused: str | Callable | None = None
    """Fused twin of ``fn``: a callable or ``"module:attr"`` (dotted attr, e.g. ``Cls.apply``)."""
    module: str = ""
    """The module that registered it."""

    def __call__(self, h_in, h_out, *, impl: str = "auto"):
        if h_in.shape != h_out.shape:
            raise ValueError(
                f"{self.name}: shapes differ, {tuple(h_in.shape)} vs {tuple(h_out.shape)}"
            )
        if self._use_fused(h_in, impl):
            return self._fused_fn()(h_in, h_out)
        return self.fn(h_in, h_out)

    def _use_fused(self, a, impl: str) -> bool:
        """``auto``: the fused twin for CUDA tensors in bf16/fp16/fp32 (float64 stays eager, for
        gradcheck), eager on CPU; ``eager``; ``triton``: the fused twin, forced."""
        import torch

        dtypes = (torch.bfloat16, torch.float16, torch.float32)
        if impl == "auto":
            return self.fused is not None and a.is_cuda and a.dtype in dtypes
        if impl == "eager":
            return False
        if impl != "triton":
            raise ValueError(f"{self.name}: unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
        if self.fused is None:
            raise ValueError(f"{self.name}: has no fused implementation; use impl='eager'")
        if a.dtype not in dtypes:
            raise ValueError(
                f"{self.name}: impl='triton' takes bf16/fp16/fp32 inputs, got {a.dtype}"
            )
        interpreted = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
        if not a.is_cuda and not interpreted:
            raise ValueError(
                f"{self.name}: impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before "
                "triton is imported, for CPU tensors); use impl='eager' on CPU"
            )
        return True

    def _fused_fn(self) -> Callable:
        if callable(self.fused):
            return self.fused
        module, _, attrs = self.fused.partition(":")
        obj = importlib.import_module(module)
        for attr in attrs.split("."):
            obj = getattr(obj, attr)
        return obj


_REGISTRY: dict[str, Regularizer] = {}
_discovered = False


def register(name: str, *, help: str = "", fused: str | Callable | None = None):
    """Decorator: register ``fn(h_in, h_out) -> per-token values`` as ``REG=name``."""
    if not name.isidentifier() or name == NONE:
        raise RegistryError(f"regulariser name {name!r} must be an identifier other than {NONE!r}")

    module = sys._getframe(1).f_globals.get("__name__", "")  # the plug-in calling register

    def decorator(fn: Callable) -> Callable:
        old = _REGISTRY.get(name)
        if old is not None and old.module != module:
            raise RegistryError(f"REG {name!r} is registered twice: in {old.module} and {module}")
        _REGISTRY[name] = Regularizer(name=name, fn=fn, help=help, fused=fused, module=module)
        return fn

    return decorator


def _module_names() -> list[str]:
    return sorted(
        p.stem for p in _FOLDER.glob("*.py") if not p.stem.startswith("_") and p.stem.isidentifier()
    )


def discover() -> dict[str, Regularizer]:
    """Import every module of this folder (once); returns the registry, name -> Regularizer."""
    global _discovered
    if not _discovered:
        for stem in _module_names():
            try:
                importlib.import_module(f"{__name__}.{stem}")
            except RegistryError:
                raise
            except Exception as err:
                raise RegistryError(
                    f"regulariser plug-in {_FOLDER / stem}.py failed to import: "
                    f"{type(err).__name__}: {err}"
                ) from err
        _discovered = True
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Regularizer | None:
    """The registration of ``REG=name`` (None for ``none`` and ``selfdistill``); raises
    ValueError if unknown."""
    if name in (NONE, SELFDISTILL):
        return None
    if _discovered and name in _REGISTRY:
        return _REGISTRY[name]
    registry = discover()
    if name not in registry:
        raise _unknown(name, registry)
    return registry[name]


def check(name: str) -> None:
    """Raise ValueError (as ``get`` does) unless ``name`` is a ``REG=`` value; the plug-ins'
    names are read without importing them (no torch)."""
    names = scan()
    if name not in (NONE, SELFDISTILL) and name not in names:
        raise _unknown(name, names)


def _unknown(name: str, names) -> ValueError:
    return ValueError(f"unknown REG {name!r}; valid: {', '.join([*names, NONE, SELFDISTILL])}")


def scan() -> dict[str, str]:
    """Name -> help of every ``register("name", help="...")`` in this folder's files, sorted,
    read without importing them (no torch): what the launcher accepts before anything starts."""
    found: dict[str, str] = {}
    for stem in _module_names():
        tree = ast.parse((_FOLDER / f"{stem}.py").read_text(), filename=f"{stem}.py")
        for node in ast.walk(tree):
            func = getattr(node, "func", None)
            called = getattr(func, "id", None) or getattr(func, "attr", None)
            if not isinstance(node, ast.Call) or called != "register" or not node.args:
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                helps = [k.value for k in node.keywords if k.arg == "help"]
                text = helps[0].value if helps and isinstance(helps[0], ast.Constant) else ""
                found[first.value] = text
    return dict(sorted(found.items()))


def choices() -> list[str]:
    """Every ``REG=`` value: ``none``, the regularisers of this folder (by name), then
    ``selfdistill``."""
    return [NONE, *scan(), SELFDISTILL]


def describe() -> list[str]:
    """One line per ``REG=`` value with its help text."""
    helps = {NONE: "no regulariser (D_l and the Psi loss are still logged, lambda 0)", **scan(),
             SELFDISTILL: "the self-distillation paper: lambda (zeta_1 + alpha zeta_2), the "
                          "logit lens of every layer distilled from the output (SD_* settings)"}  # fmt: skip
    width = max(map(len, helps))
    return [f"REG={name:<{width}}  {text}" for name, text in helps.items()]
