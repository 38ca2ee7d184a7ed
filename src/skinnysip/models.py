"""pydantic's side of results: the camelCase base model, and result dataclasses described for
OpenAPI.

Imported by the HTTP API and by the SCCP probes' request, never by the SIP core, the drivers or a
SIP probe (pydantic costs ~40 ms of a command's start-up; :mod:`skinnysip.result` is plain).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel

from skinnysip.result import Result

#: the JSON shape every result and API body shares: Python snake_case fields, camelCase keys
CAMEL_CONFIG = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ResultModel(BaseModel):
    """Base for API request and response bodies (and ``SCCPRequest``): Python snake_case fields,
    JSON camelCase."""

    model_config = CAMEL_CONFIG

    def to_api(self) -> dict[str, Any]:
        """Return the JSON-ready dict (camelCase keys) that the API and ``--json`` emit."""
        return self.model_dump(mode="json", by_alias=True)


@functools.cache
def api_model(cls: type[Result]) -> type[BaseModel]:
    """A pydantic model with the fields, types, defaults and docstring of the result dataclass
    ``cls``, for FastAPI's ``response_model``: its JSON schema describes ``cls(...).to_api()``
    (camelCase keys; nested dataclasses take the same keys). A field's
    ``metadata["description"]`` becomes its schema description, a ``default_factory`` its
    value as the default. Made once per class.
    Raises TypeError when ``cls`` is not a dataclass."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        extra: dict[str, Any] = {}
        if "description" in f.metadata:
            extra["description"] = f.metadata["description"]
        if f.default is not dataclasses.MISSING:
            info = Field(default=f.default, **extra)
        elif f.default_factory is not dataclasses.MISSING:  # the schema shows its value ([])
            info = Field(default=f.default_factory(), **extra)
        else:
            info = Field(**extra)
        fields[f.name] = (hints[f.name], info)
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        cls.__name__, __config__=CAMEL_CONFIG, __doc__=cls.__doc__, __module__=cls.__module__, **fields)
    return model
