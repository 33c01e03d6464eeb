"""Names shared by the operator, the jobs and the chart: group, version, labels, annotations.

Kept in one place so that a label the operator sets and a selector the chart renders can
never drift apart.
"""

from typing import Final

GROUP: Final = "modelops.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "modelops"

# Labels on every object the operator creates.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "modelops"
LABEL_KIND: Final = f"{GROUP}/kind"
LABEL_NAME: Final = f"{GROUP}/name"
LABEL_RUN: Final = f"{GROUP}/run"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_KUEUE_QUEUE: Final = "kueue.x-k8s.io/queue-name"

# Annotations a user may set on a resource.
ANNOTATION_RUN_NOW: Final = f"{GROUP}/run-now"
"""ModelAdaptation: set to any new value to request one more run by hand."""

# Annotations the operator sets on the objects it creates.
ANNOTATION_SPEC_DIGEST: Final = f"{GROUP}/spec-digest"
ANNOTATION_GENERATION: Final = f"{GROUP}/generation"

# The Job pod contract (see modelops_jobs.runner).
SPEC_MOUNT_DIR: Final = "/etc/modelops"
SPEC_FILE_NAME: Final = "spec.json"
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
EXIT_OK: Final = 0
EXIT_PERMANENT: Final = 3
"""A permanent failure (bad spec, missing model or data): the Job fails at once, no retry."""
EXIT_RETRYABLE: Final = 75
"""A transient failure or a preemption after a checkpoint was written: retried."""
