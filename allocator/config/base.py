"""The configuration models' common ground: strict frozen models, constrained number types,
and the one place a pydantic ``ValidationError`` becomes a :class:`ConfigError` naming each
bad field.

Every model is frozen and forbids unknown keys, so a typo in a YAML file is an error
rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from allocator.errors import ConfigError, brief

PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
GroupName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


if TYPE_CHECKING:  # the checker needs the class; at run time it is BaseModel's metaclass
    from pydantic._internal._model_construction import ModelMetaclass as _ModelMeta
else:
    _ModelMeta = type(BaseModel)


class _TypedErrors(_ModelMeta):
    """Constructing a config directly (``BetaBernoulliConfig(epsilon=2)``) raises
    :class:`ConfigError`, the public boundary's error, instead of pydantic's
    ``ValidationError``. Only the direct call is wrapped: ``model_validate`` and nested
    fields keep pydantic's own error, which :func:`parse_config` formats."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as err:
            raise ConfigError(_format_validation_error(err, cls.__name__)) from None


class StrictModel(BaseModel, metaclass=_TypedErrors):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        got = item.get("input")
        shown = brief(got) if not isinstance(got, dict) else "{...}"
        lines.append(f"  {where}: {item['msg']} (got {shown})")
    return "\n".join(lines)


def parse_config(model: type[StrictModel], data: Any, source: str = "<dict>") -> Any:
    """Validate ``data`` as ``model``; raise :class:`ConfigError` naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
