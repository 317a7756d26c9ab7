"""Custom search attributes Flotilla registers, so the UI and `temporal workflow list -q`
can filter the fleet and its operations."""

from temporalio.common import SearchAttributeKey

ENV = SearchAttributeKey.for_keyword("FlotillaEnv")
REGION = SearchAttributeKey.for_keyword("FlotillaRegion")
PHASE = SearchAttributeKey.for_keyword("FlotillaPhase")
VERSION = SearchAttributeKey.for_keyword("FlotillaVersion")
HEALTH = SearchAttributeKey.for_keyword("FlotillaHealth")
# Every label of a cluster record as "key=value", for equality selectors on any label.
LABELS = SearchAttributeKey.for_keyword_list("FlotillaLabels")
# Names of the clusters an operation touches (operations only, not cluster records).
CLUSTERS = SearchAttributeKey.for_keyword_list("FlotillaClusters")
# The operation kind: cluster, onboard, offboard, health, rollout:k8s, rollout:addon, ...
KIND = SearchAttributeKey.for_keyword("FlotillaKind")
# How an operation ended, in Flotilla's words (fleet.rollout_models.Outcome values):
# Temporal's COMPLETED only means the workflow returned, not that the change succeeded.
OUTCOME = SearchAttributeKey.for_keyword("FlotillaOutcome")
# Cluster records: the soonest certificate expiry the last scan found, and its verdict
# (fleet.certs_models.CertStatus: ok, expiring, expired, unknown).
CERT_EXPIRY = SearchAttributeKey.for_datetime("FlotillaCertExpiry")
CERT_STATUS = SearchAttributeKey.for_keyword("FlotillaCertStatus")

ALL: list[SearchAttributeKey] = [
    ENV,
    REGION,
    PHASE,
    VERSION,
    HEALTH,
    LABELS,
    CLUSTERS,
    KIND,
    OUTCOME,
    CERT_EXPIRY,
    CERT_STATUS,
]


# The `temporal` CLI's name of each attribute type used above.
TYPE_NAMES = {"KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList", "DATETIME": "Datetime"}


# Server settings Flotilla's workers are faster with (any Temporal server; Temporal Cloud
# has eager activities on): an activity a workflow task schedules while its worker has a
# free slot comes back in the task's completion answer, without a trip through matching.
DYNAMIC_CONFIG = {"system.enableActivityEagerExecution": "true"}


def dynamic_config_flags() -> list[str]:
    """`temporal server start-dev` arguments for DYNAMIC_CONFIG."""
    flags: list[str] = []
    for key, value in DYNAMIC_CONFIG.items():
        flags += ["--dynamic-config-value", f"{key}={value}"]
    return flags


def server_flags() -> list[str]:
    """`temporal server start-dev` arguments: every attribute above, DYNAMIC_CONFIG."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={TYPE_NAMES[key.indexed_value_type.name]}"]
    return flags + dynamic_config_flags()
