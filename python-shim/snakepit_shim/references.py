"""Resolving ``"pkg.module:function"`` references and fitting arguments to signatures.

A plugin function receives keyword arguments only: the call's context merged with its
kwargs (kwargs win). A function with ``**kwargs`` receives everything; one without it
receives only the context keys it declares, and a kwarg it does not declare is an error.
Problems are :class:`ReferenceProblem`, reported as EXCEPTION kind ``reference``.
"""

from __future__ import annotations

import datetime
import importlib
import inspect
import re
import sys
import traceback
import types
import typing
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple

from .errors import CallCancelled

NoneType = type(None)


class ReferenceProblem(Exception):
    """A reference that cannot be called with the given arguments."""

    def __init__(self, type_name: str, message: str, tb: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.tb = tb


class Target(NamedTuple):
    """A resolved reference with its dispatch plan, computed once (``resolve`` caches it):
    a repeated call does no ``inspect`` work."""

    reference: str
    func: Callable[..., Any]
    display: str  # "billing.invoicing:run()" for messages
    names: Tuple[str, ...]  # parameters that can be passed by keyword
    required: Tuple[str, ...]  # of those, the ones without a default
    var_kw: bool
    params: Dict[str, inspect.Parameter]
    name_set: FrozenSet[str]  # names, for C-level subset checks
    required_set: FrozenSet[str]
    is_async: bool  # an ``async def``: its value is awaited without asking
    # (name, str or datetime.date) of the parameters annotated ``str`` or ``date``: a
    # date given to a ``str`` one arrives as its ISO text, an ISO day or month
    # ("2026-05-01", "2026-05") given to a ``date`` one as that day (a month's first).
    coerce: Tuple[Tuple[str, type], ...]
    # A plain Python function whose signature is its code's: called with the kwargs as
    # they are, since Python's own argument binding then refuses exactly what ``bind``
    # refuses (the caller runs ``bind`` to name the problem when the call fails there).
    direct: bool


_CACHE: Dict[str, Target] = {}


def resolve(reference: str) -> Target:
    """Import and inspect ``reference`` (cached once it resolved)."""
    target = _CACHE.get(reference)
    if target is None:
        target = _resolve(reference)
        _CACHE[reference] = target
    return target


def _resolve(reference: str) -> Target:
    module_name, sep, attr_path = reference.partition(":")
    module_name = module_name.strip()
    attr_path = attr_path.strip()
    if not sep or not module_name or not attr_path:
        raise ReferenceProblem(
            "ValueError",
            f"reference {reference!r} is not of the form 'package.module:function'",
        )
    module = _import(module_name)
    obj: Any = module
    walked = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ReferenceProblem(
                "AttributeError", f"{walked!r} has no attribute {part!r} (reference {reference!r})"
            ) from None
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
    if not callable(obj):
        raise ReferenceProblem(
            "TypeError", f"{reference!r} names a {type(obj).__name__}, which is not callable"
        )
    return _inspect(reference, obj)


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ReferenceProblem(
                "ModuleNotFoundError",
                f"no module named {missing!r} (searched the plugins dir, then {sys.executable}'s sys.path)",
            ) from None
        raise ReferenceProblem(
            "ModuleNotFoundError",
            f"importing {module_name!r} failed: {exc}",
            _format(exc),
        ) from None
    except CallCancelled:
        raise
    except BaseException as exc:  # SyntaxError, an error at import time, even SystemExit
        raise ReferenceProblem(
            qualified_name(type(exc)),
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}",
            _format(exc),
        ) from None


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def qualified_name(cls: type) -> str:
    """`module.QualName` of an exception class; builtins without the module."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", cls.__name__)
    if not module or module == "builtins":
        return qualname
    return f"{module}.{qualname}"


def _inspect(reference: str, func: Callable[..., Any]) -> Target:
    display = f"{reference}()"
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # some builtins: nothing to check, pass everything
        return Target(reference, func, display, (), (), True, {}, frozenset(), frozenset(),
                      _is_async(func), (), False)
    names: List[str] = []
    required: List[str] = []
    var_kw = False
    params: Dict[str, inspect.Parameter] = {}
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.VAR_POSITIONAL:
            continue
        elif p.kind is p.POSITIONAL_ONLY:
            if p.default is p.empty:
                raise ReferenceProblem(
                    "TypeError",
                    f"{display} has a positional-only parameter {p.name!r} without a default;"
                    " plugins are called with keyword arguments only",
                )
        else:
            names.append(p.name)
            params[p.name] = p
            if p.default is p.empty:
                required.append(p.name)
    direct = (
        type(func) is types.FunctionType
        and getattr(func, "__wrapped__", None) is None
        and getattr(func, "__signature__", None) is None
    )
    coerce = []
    for name, p in params.items():
        if p.annotation is not p.empty:
            kinds = annotation_kinds(p.annotation, func) or ()
            for kind in (str, datetime.date):
                if kind in kinds:
                    coerce.append((name, kind))
                    break
    return Target(reference, func, display, tuple(names), tuple(required), var_kw, params,
                  frozenset(names), frozenset(required), _is_async(func), tuple(coerce),
                  direct)


def _is_async(func: Callable[..., Any]) -> bool:
    try:
        return inspect.iscoroutinefunction(func)
    except Exception:
        return False


def bind(target: Target, kwargs: Dict[str, Any], context: Dict[str, Any]) -> Dict[str, Any]:
    """The keyword arguments for one call (ReferenceProblem when they do not fit).

    The checks are C-level set operations on the plan's precomputed name sets; the
    caller's ``kwargs`` dict is passed on as it is when there is nothing to merge."""
    if target.var_kw:
        if not context:
            args = kwargs
        else:
            args = dict(context)
            args.update(kwargs)
    else:
        name_set = target.name_set
        if kwargs and not name_set.issuperset(kwargs):
            for key in kwargs:
                if key not in name_set:
                    raise _unexpected(target, key)
        if context:
            args = {name: context[name] for name in target.names if name in context}
            if kwargs:
                args.update(kwargs)
        else:
            args = kwargs
    if target.required and not args.keys() >= target.required_set:
        for name in target.required:
            if name not in args:
                raise _missing(target, name)
    return args


def coerce(target: Target, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``kwargs`` with the dates and ISO texts that ``target.coerce`` names converted
    (the same dict when there is nothing to convert)."""
    out = kwargs
    for name, kind in target.coerce:
        value = kwargs.get(name)
        if kind is str:
            new = value.isoformat() if type(value) is datetime.date else value
        else:
            new = _iso_day(value) if type(value) is str else value
        if new is not value and new is not None:
            if out is kwargs:
                out = dict(kwargs)
            out[name] = new
    return out


def _iso_day(text: str) -> Optional[datetime.date]:
    """The day of ``"YYYY-MM-DD"``, the first of ``"YYYY-MM"``; None for other text."""
    try:
        if len(text) == 7:
            return datetime.date.fromisoformat(text + "-01")
        if len(text) == 10:
            return datetime.date.fromisoformat(text)
    except ValueError:
        pass
    return None


def check(target: Target, kwargs: Dict[str, Any], context_keys: Iterable[str]) -> None:
    """VALIDATE: names, required parameters and simple annotations, without calling."""
    keys = set(context_keys)
    if not target.var_kw:
        for key in kwargs:
            if key not in target.params:
                raise _unexpected(target, key)
    for name in target.required:
        if name not in kwargs and name not in keys:
            raise _missing(target, name)
    for key, value in kwargs.items():
        param = target.params.get(key)
        if param is None or param.annotation is param.empty:
            continue
        kinds = annotation_kinds(param.annotation, target.func)
        if kinds is not None and not _fits(value, kinds):
            shown = repr(value)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            raise ReferenceProblem(
                "TypeError",
                f"{target.display}: kwarg {key!r} = {shown} ({type(value).__name__})"
                f" does not match the annotation {_annotation_text(param.annotation)!r}",
            )


def _unexpected(target: Target, key: str) -> ReferenceProblem:
    accepted = ", ".join(target.names) or "no keyword arguments"
    return ReferenceProblem(
        "TypeError",
        f"{target.display} got an unexpected keyword argument {key!r} (it accepts: {accepted})",
    )


def _missing(target: Target, name: str) -> ReferenceProblem:
    return ReferenceProblem(
        "TypeError",
        f"{target.display} is missing the required parameter {name!r}"
        " (neither the kwargs nor the context provide it)",
    )


# ------------------------------------------------------------------ simple annotations

_BY_NAME: Dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "dict": dict,
    "list": list,
    "None": NoneType,
    "NoneType": NoneType,
    "Dict": dict,
    "List": list,
    "typing.Dict": dict,
    "typing.List": list,
    "date": datetime.date,
    "datetime.date": datetime.date,
    "datetime": datetime.datetime,
    "datetime.datetime": datetime.datetime,
}
_SIMPLE_TYPES = (str, int, float, bool, dict, list, datetime.date, datetime.datetime)


def annotation_kinds(ann: Any, func: Any = None) -> Optional[Tuple[type, ...]]:
    """The types an annotation allows, or None when it is not a simple one to check."""
    if isinstance(ann, str):
        return _kinds_from_text(ann)
    if ann is None or ann is NoneType:
        return (NoneType,)
    if ann in _SIMPLE_TYPES:
        return (ann,)
    origin = typing.get_origin(ann)
    union_type = getattr(types, "UnionType", None)
    if origin is typing.Union or (union_type is not None and origin is union_type):
        return _combine(annotation_kinds(a) for a in typing.get_args(ann))
    if origin in (dict, list):
        return (origin,)
    return None


def _combine(parts: Iterable[Optional[Tuple[type, ...]]]) -> Optional[Tuple[type, ...]]:
    out: List[type] = []
    for kinds in parts:
        if kinds is None:
            return None
        out.extend(kinds)
    return tuple(out)


def _split_top(text: str, sep: str) -> List[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


_WRAPPED = re.compile(r"^(?:typing\.)?(Optional|Union)\[(.*)\]$", re.S)


def _kinds_from_text(text: str) -> Optional[Tuple[type, ...]]:
    """``from __future__ import annotations`` leaves strings: parse the simple ones."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    alternatives = _split_top(text, "|")
    if len(alternatives) > 1:
        return _combine(_kinds_from_text(a) for a in alternatives)
    m = _WRAPPED.match(text)
    if m:
        inner = _combine(_kinds_from_text(a) for a in _split_top(m.group(2), ","))
        if inner is None:
            return None
        return inner + (NoneType,) if m.group(1) == "Optional" else inner
    base = text.split("[", 1)[0].strip()
    kind = _BY_NAME.get(base)
    return None if kind is None else (kind,)


def _fits(value: Any, kinds: Tuple[type, ...]) -> bool:
    t = type(value)
    for kind in kinds:
        if t is kind:
            return True
        if kind is float and t is int:  # an int is fine where a float is expected
            return True
        if kind is str and t is datetime.date:  # given as its ISO text (see coerce)
            return True
        if kind is datetime.date and t is str and _iso_day(value) is not None:
            return True
    return False


def _annotation_text(ann: Any) -> str:
    if isinstance(ann, str):
        return ann
    return inspect.formatannotation(ann)
