"""The API contract's building blocks: the strict pydantic base every request and response model of the HTTP
APIs derives from (shared/api_models.py, shared/rules.py's RuleInput), the reusable field types, and
`validate`, which turns a parsed JSON body into a model or a Problem(400) naming the field the way the API
always has (`customerName`, `rules[0].recipients`, `scope.tenants`).

Strictness is the API's: unknown fields are refused, nothing is coerced (`"true"` is not a bool, `1` not a
string), sizes are bounded. Checks a schema cannot express (a callbackUrl's address, a signature, the
Defender API hosts) run after the model, where the caller needs them.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from shared.problems import Problem
from shared.validators import is_email, is_guid

Model = TypeVar("Model", bound=BaseModel)

GUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class StrictModel(BaseModel):
    """A request model: unknown fields refused, no coercion. `messages` maps a field name to the detail the API
    answers for any error of that field (today's wording); `closed` names object fields whose unknown keys are
    reported on the object itself (`scope`, not `scope.tenant`)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False, validate_default=False,
                              json_schema_mode_override=None)
    messages: ClassVar[dict[str, str]] = {}


class ResponseModel(BaseModel):
    """A response model: documents what the API answers (the document's schema is what the contract test
    checks every response against); extra fields are not allowed there either."""

    model_config = ConfigDict(extra="forbid")


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("value_error", message)


def _plain(value: str) -> str:
    """A non-empty single-line string without control or format characters (bidi overrides among them could
    disguise a name on a page or in mail), stripped."""
    if not value.strip():
        raise _error("must be a non-empty string")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in value):
        raise _error("must not contain control or formatting characters")
    return value.strip()


def _guid(value: str) -> str:
    if not is_guid(value):
        raise _error("must be a tenant GUID")
    return value.lower()


def _email(value: str) -> str:
    if not is_email(value):
        raise _error("must be an e-mail address")
    return value


# A non-empty single-line text of at most 200 characters (checked before stripping): names, ids.
ShortText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_plain)]
Guid = Annotated[str, Field(pattern=GUID_PATTERN, description="a tenant GUID"), AfterValidator(_guid)]
Email = Annotated[str, Field(min_length=3, max_length=254, description="an e-mail address",
                             json_schema_extra={"format": "email"}),
                  AfterValidator(_email)]


def field_name(loc: tuple[str | int, ...], closed: frozenset[str] = frozenset(), *, extra: bool = False) -> str:
    """The API's name of an error location: `rules[0].recipients` for ('rules', 0, 'recipients', 2). Union
    member tags (`list[str]`, `literal['all']`) are dropped, a trailing list index too (a bad recipient is the
    `recipients` field's error); an unknown key inside a `closed` object names the object."""
    parts: list[str | int] = [p for p in loc if isinstance(p, int) or _IDENTIFIER.fullmatch(p)]
    while parts and isinstance(parts[-1], int):
        parts.pop()
    if extra and len(parts) > 1 and parts[-2] in closed:
        parts.pop()
    name = ""
    for index, part in enumerate(parts):
        if isinstance(part, int):
            # An index names an item only when a field of that item follows.
            if index + 1 < len(parts) and isinstance(parts[index + 1], str):
                name += f"[{part}]"
        else:
            name += f".{part}" if name else part
    return name or "body"


def _detail(model: type[StrictModel], error: Any, field: str) -> str:
    last = field.rsplit(".", 1)[-1].split("[", 1)[0]
    if error["type"] == "extra_forbidden" and field.split(".")[-1] == str(error["loc"][-1]):
        return "unknown field"
    if error["type"] == "missing":
        return "is required"
    override = _messages(model).get(last)
    if override and error["type"] != "value_error":  # a validator's own message is more precise
        return override
    message = str(error["msg"])
    return message[len("Value error, "):] if message.startswith("Value error, ") else message


def _messages(model: type[BaseModel]) -> dict[str, str]:
    found: dict[str, str] = {}
    seen: set[type[BaseModel]] = set()

    def walk(cls: type[BaseModel]) -> None:
        if cls in seen:
            return
        seen.add(cls)
        found.update({k: v for k, v in getattr(cls, "messages", {}).items() if k not in found})
        for info in cls.model_fields.values():
            for candidate in _models_in(info.annotation):
                walk(candidate)

    walk(model)
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def _closed(model: type[BaseModel]) -> frozenset[str]:
    names: set[str] = set()
    for cls in [model, *[m for info in model.model_fields.values() for m in _models_in(info.annotation)]]:
        names.update(getattr(cls, "closed", ()))
    return frozenset(names)


def validate(model: type[Model], body: Any, *, prefix: str = "") -> Model:
    """The model of a parsed JSON body; Problem(400) naming the first bad field (after `prefix`)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problem = problem_of(model, exc, prefix=prefix)
        raise problem from None


def problem_of(model: type[BaseModel], exc: ValidationError, *, prefix: str = "") -> Problem:
    errors = exc.errors(include_url=False, include_input=False)
    # Today's order: an unknown field is named before any other error of the same object.
    errors.sort(key=lambda e: 0 if e["type"] == "extra_forbidden" else 1)
    error = errors[0]
    if error["type"] == "model_type" or (not error["loc"] and error["type"] in ("dict_type", "model_attributes_type")):
        return Problem(400, "must be an object", field=prefix or "body")
    field = field_name(tuple(error["loc"]), _closed(model), extra=error["type"] == "extra_forbidden")
    if prefix:
        field = prefix if field == "body" else (f"{prefix}{field}" if field.startswith("[") else f"{prefix}.{field}")
    detail = _detail(model, error, field)  # type: ignore[arg-type]
    return Problem(400, detail, field=field)
