"""`annotate`: a trivial operation kind that lives only in the test tree, to show (and test)
that a kind is added through the registry alone: a target, a child on the shared
skeleton, its activities, one registry entry. Nothing in fleet/, workflows/, starters/
or worker.py knows it.

The change sets an annotation on the cluster's `kube-system` namespace; the check reads it.
"""

from __future__ import annotations

from tests.operations import annotate_activities as activities
from tests.operations.annotate_target import AnnotateTarget
from tests.operations.annotate_workflow import Annotate
from workflows.registry import Operation

ANNOTATE = Operation(
    kind="annotate",
    target=AnnotateTarget,
    child=Annotate,
    preflight=activities.preflight_annotate,
    command="annotate",
    help="Set an annotation on kube-system (test-only kind).",
    activities=(
        activities.read_annotation,
        activities.write_annotation,
        activities.preflight_annotate,
    ),
)
