"""Command-line flags generated from pydantic models, so the rollout options and each
operation's target are declared once (their models) and the CLI follows them.

A field becomes `--field-name` (or the `cli` entry of its json_schema_extra, e.g. `--to`
or `--skip-unreachable/--fail-unreachable`), with the field's description as help. Numbers
and booleans keep their type; everything else (durations, literals, optional values) is
read as text and validated by the model, whose errors `validation_message` turns into one
line naming the flag.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from fleet.durations import format_duration


@dataclass(frozen=True)
class Flag:
    param: str  # the Python parameter name typer passes the value as
    path: tuple[str, ...]  # where the value goes in the model's input, e.g. (options, soak)
    flag: str  # the first flag text, for messages
    parameter: inspect.Parameter
    required: bool = False  # "" is passed on (and refused by the model), not left out


def model_flags(
    model: type[BaseModel],
    path: tuple[str, ...] = (),
    *,
    skip: frozenset[str] = frozenset({"kind"}),
    defaults: dict[str, Any] | None = None,
) -> list[Flag]:
    """One flag per field of `model` except `skip`; `defaults` override the model's."""
    flags = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        if info.is_required() and name not in (defaults or {}):
            default = inspect.Parameter.empty
        else:
            default = (defaults or {}).get(name, info.get_default(call_default_factory=True))
        flags.append(_flag(name, info, path, default))
    return flags


def extra_flag(
    param: str,
    annotation: Any,
    default: Any,
    *decls: str,
    help: str,
    path: tuple[str, ...] = (),
) -> Flag:
    """A flag declared here rather than from a field (--wait, --json, or `path` for a
    field whose flag differs)."""
    option = typer.Option(*decls, help=help)
    parameter = inspect.Parameter(
        param,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, option],
    )
    flag = decls[0] if decls else f"--{param.replace('_', '-')}"
    return Flag(param=param, path=path, flag=flag, parameter=parameter)


def _flag(name: str, info: FieldInfo, path: tuple[str, ...], default: Any) -> Flag:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    decl = str(extra.get("cli") or f"--{name.replace('_', '-')}")
    annotation: Any = info.annotation if info.annotation in (int, bool) else str
    required = default is inspect.Parameter.empty
    if annotation is str and not required:
        if default is None:
            default = ""
        elif isinstance(default, float):  # a Duration: shown as 30m, not 1800.0
            default = format_duration(default)
        else:
            default = str(default)
    option = typer.Option(*decl.split(" "), help=info.description or "", show_default=not required)
    param = "_".join((*path, name))
    parameter = inspect.Parameter(
        param,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, option],
    )
    return Flag(
        param=param,
        path=(*path, name),
        flag=decl.split("/")[0],
        parameter=parameter,
        required=required,
    )


def command(flags: list[Flag], body: Any, *, name: str, doc: str) -> Any:
    """A function typer can mount: its signature is `flags`; it calls `body(values)` with
    the model input (nested by path; text "" left out so model defaults apply)."""

    def run(**kwargs: Any) -> None:
        values: dict[str, Any] = {}
        for flag in flags:
            value = kwargs[flag.param]
            if not flag.path or (value == "" and not flag.required):
                continue
            node = values
            for key in flag.path[:-1]:
                node = node.setdefault(key, {})
            node[flag.path[-1]] = value
        body(values, kwargs)

    run.__signature__ = inspect.Signature([f.parameter for f in flags])  # type: ignore[attr-defined]
    run.__annotations__ = {f.param: f.parameter.annotation for f in flags}
    run.__name__ = name
    run.__doc__ = doc
    return run


def validation_message(exc: ValidationError, flags: list[Flag]) -> str:
    """All errors on one line, each named by its flag: `--max-concurrent: must be ...`."""
    by_path = {f.path: f.flag for f in flags if f.path}
    parts = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        where = next((by_path[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in by_path), "")
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
