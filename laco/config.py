"""Configuration files as declared schemas: one loader for profiles, claims, paper figures and tolerances.

Every file the project reads as configuration is TOML parsed into a pydantic model whose fields are
declared (`extra="forbid"`): a typo, a missing field or a wrong type is one line naming the file, the
key and what was expected, raised as `LacoError` before anything is measured.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from laco import LacoError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

Schema = TypeVar("Schema", bound=BaseModel)


class Strict(BaseModel):
    """Base of every configuration schema: unknown keys are errors, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=False)


def read_toml(path: str | Path, what: str) -> dict:
    """The TOML document at `path`; a missing or malformed file is one line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LacoError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise LacoError(f"{what} file is a folder: {path}") from None
    except PermissionError:
        raise LacoError(f"{what} file not readable: {path}") from None
    except UnicodeDecodeError:
        raise LacoError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise LacoError(f"{path}: not valid TOML: {exc}") from None


def validate(data: dict, schema: type[Schema], where: str | Path) -> Schema:
    """`data` as `schema`, or a LacoError naming the first problem: where, which key, what was expected."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise LacoError(f"{where}: {describe(exc)}") from None


def load(path: str | Path, schema: type[Schema], what: str) -> Schema:
    """Read a TOML file and validate it against its schema (the one loader of all configuration)."""
    return validate(read_toml(path, what), schema, path)


def describe(exc: ValidationError) -> str:
    """The first validation error as 'key.path: what was expected (got ...)'; the count of the others."""
    errors = exc.errors(include_url=False)
    # a misspelt key is both unknown and (its right spelling) missing: name the misspelling first
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        text = f"unknown key {key!r}"
    elif first["type"] == "missing":
        text = f"missing key {key!r}"
    elif not first["loc"]:  # a check across keys: its message names the keys itself
        text = first["msg"].removeprefix("Value error, ")
    else:
        got = first.get("input")
        shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
        text = f"{key}: {first['msg'].removeprefix('Value error, ')} (got {shown[:60]})"
    more = len(errors) - 1
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
