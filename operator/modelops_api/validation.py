"""The one wording of a spec that does not validate: `spec.a.b: message` for each
error, so the operator's Failed condition and the Job's InvalidSpec result name the
field the same way."""

from pydantic import ValidationError


def spec_error_message(exc: ValidationError) -> str:
    """'spec.a.b: message' for each error, joined by '; ': the field is always named."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"spec.{loc}: {err['msg']}" if loc else f"spec: {err['msg']}")
    return "; ".join(parts)
