"""The shape of a custom resource as pydantic sees it: apiVersion, kind, metadata,
spec, status. Used to parse whole manifests (in `modelops run -f` and in tests)."""

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from modelops_api.base import ApiModel

SpecT = TypeVar("SpecT", bound=ApiModel)
StatusT = TypeVar("StatusT", bound=ApiModel)


class ObjectMeta(BaseModel):
    """The part of metadata modelops reads; everything else is kept as is."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    name: Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(BaseModel, Generic[SpecT, StatusT]):
    """A whole custom resource."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: SpecT
    status: StatusT | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
