"""What the CRD generator and the API reference need of any custom resource kind.

Its own module so that the job kinds (`kinds.py`) and the release kinds
(`release_kinds.py`) share one definition without importing each other.
"""

from dataclasses import dataclass, field

from modelops_api.base import ApiModel


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ConditionDoc:
    """One condition type a kind's status carries, for docs/api.md."""

    type: str
    meaning: str


@dataclass(frozen=True, kw_only=True)
class CrdKind:
    """What the CRD generator and the API reference need of any kind."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[ApiModel]
    status: type[ApiModel]
    columns: tuple[PrinterColumn, ...] = ()
    root_rules: tuple[dict[str, str], ...] = field(default=())
    conditions: tuple[ConditionDoc, ...] = ()
    """Every condition type the operator sets on this kind (docs/api.md)."""
    status_note: str = ""
    """Said in docs/api.md about this kind's status (who writes it)."""

    @property
    def singular(self) -> str:
        return self.kind.lower()
