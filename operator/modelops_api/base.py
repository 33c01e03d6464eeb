"""The base class of every API model: frozen, closed, camelCase on the wire.

Python code uses snake_case attributes; manifests use the Kubernetes camelCase names.
`extra="forbid"` means a typo in a manifest is an error naming the field, never a
silently ignored key.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Frozen, extra-forbidding, camelCase-aliased pydantic model."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The manifest form: camelCase keys, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(
    rule: str, message: str, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One CEL `x-kubernetes-validations` rule, checked by the API server."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def with_cel(*rules: dict[str, str]) -> ConfigDict:
    """Model config that attaches CEL rules to the model's schema in the generated CRD."""
    validations: Any = list(rules)
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": validations})
