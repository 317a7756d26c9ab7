"""Which resources a cluster serves: the built-in kinds plus every stored CRD.

The registry is recomputed from the store on each lookup (a cluster holds a handful of
CRDs), so a CRD becomes servable, and discoverable, the moment it is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.store import ApiError, Obj, ObjectStore, ResourceKey

CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CRD_KEY = ResourceKey("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACES = ResourceKey("", "namespaces")


@dataclass(frozen=True)
class Resource:
    """One servable resource type at one group/version."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = CRUD
    subresources: frozenset[str] = frozenset()
    singular: str = ""
    printer_columns: tuple[Obj, ...] = ()  # CRD additionalPrinterColumns
    versions: tuple[str, ...] = field(default=(), compare=False)  # all served versions
    schema: Obj | None = field(default=None, compare=False, hash=False)  # CRD openAPIV3Schema

    @property
    def custom(self) -> bool:
        """Served from a CRD (those have no strategic merge patch)."""
        return bool(self.versions)

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`deployments.apps`, `pods`: the form Kubernetes uses in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _r(group: str, plural: str, kind: str, *, ns: bool = True, **kw: object) -> Resource:
    version = "v1"
    return Resource(group, version, plural, kind, ns, singular=kind.lower(), **kw)  # type: ignore[arg-type]


_STATUS = frozenset({"status"})
_SCALABLE = frozenset({"status", "scale"})
_CREATE = ("create",)
_READ = ("get", "list")
METRICS = "metrics.k8s.io"  # served from the simulation, as metrics-server would

BUILTIN: tuple[Resource, ...] = (
    _r(
        "",
        "namespaces",
        "Namespace",
        ns=False,
        short_names=("ns",),
        subresources=frozenset({"status", "finalize"}),
    ),
    _r("", "nodes", "Node", ns=False, short_names=("no",), subresources=_STATUS),
    _r(
        "",
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        subresources=frozenset({"status", "log"}),
    ),
    _r("", "services", "Service", short_names=("svc",), categories=("all",), subresources=_STATUS),
    _r("", "configmaps", "ConfigMap", short_names=("cm",)),
    _r("", "secrets", "Secret"),
    _r("", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _r("", "events", "Event", short_names=("ev",)),
    _r("", "endpoints", "Endpoints", short_names=("ep",)),
    _r("", "resourcequotas", "ResourceQuota", short_names=("quota",), subresources=_STATUS),
    _r("", "limitranges", "LimitRange", short_names=("limits",)),
    _r("", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",)),
    _r(
        "apps",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        subresources=_SCALABLE,
    ),
    _r(
        "apps",
        "daemonsets",
        "DaemonSet",
        short_names=("ds",),
        categories=("all",),
        subresources=_STATUS,
    ),
    _r(
        "apps",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        subresources=_SCALABLE,
    ),
    _r(
        "apps",
        "statefulsets",
        "StatefulSet",
        short_names=("sts",),
        categories=("all",),
        subresources=_SCALABLE,
    ),
    _r("apps", "controllerrevisions", "ControllerRevision"),
    _r("rbac.authorization.k8s.io", "roles", "Role"),
    _r("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    _r("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", ns=False),
    _r("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", ns=False),
    _r("networking.k8s.io", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    _r("networking.k8s.io", "ingresses", "Ingress", short_names=("ing",), subresources=_STATUS),
    _r("coordination.k8s.io", "leases", "Lease"),
    _r("discovery.k8s.io", "endpointslices", "EndpointSlice"),
    _r(
        "policy",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        subresources=_STATUS,
    ),
    _r(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        ns=False,
        categories=("api-extensions",),
    ),
    _r(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        ns=False,
        categories=("api-extensions",),
    ),
    _r(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        ns=False,
        verbs=_CREATE,
    ),
    _r(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        ns=False,
        verbs=_CREATE,
    ),
    _r("authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview", ns=False, verbs=_CREATE),
    _r(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        ns=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        subresources=_STATUS,
    ),
    Resource(METRICS, "v1beta1", "nodes", "NodeMetrics", False, verbs=_READ, singular=""),
    Resource(METRICS, "v1beta1", "pods", "PodMetrics", True, verbs=_READ, singular=""),
)

# Group/versions that exist as resources but are not stored (reviews are computed).
VIRTUAL = {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}

_BUILTIN_INDEX = {(r.group, r.version, r.plural): r for r in BUILTIN}


def crd_resources(crd: Obj) -> list[Resource]:
    """The served versions of a stored CRD, one `Resource` each."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    served = [v for v in spec.get("versions", []) if v.get("served", True)]
    all_versions = tuple(v["name"] for v in served)
    out = []
    for v in served:
        subresources = frozenset(v.get("subresources") or {})
        out.append(
            Resource(
                group=spec.get("group", ""),
                version=v["name"],
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subresources,
                singular=names.get("singular") or names.get("kind", "").lower(),
                printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
                versions=all_versions,
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
            )
        )
    return out


def storage_version(crd: Obj) -> str:
    versions = crd.get("spec", {}).get("versions", [])
    for v in versions:
        if v.get("storage"):
            return str(v["name"])
    return str(versions[0]["name"]) if versions else ""


def served(store: ObjectStore) -> list[Resource]:
    """Every resource the cluster serves right now, built-ins first."""
    out = list(BUILTIN)
    for crd in store.list(CRD_KEY):
        if crd["metadata"].get("deletionTimestamp"):
            continue
        out.extend(crd_resources(crd))
    return out


def lookup(store: ObjectStore, group: str, version: str, plural: str) -> Resource:
    """The resource at group/version/plural; 404 NotFound when not served."""
    found = _BUILTIN_INDEX.get((group, version, plural))
    if found is not None:
        return found
    for crd in store.list(CRD_KEY):
        spec = crd.get("spec", {})
        if spec.get("group") != group or spec.get("names", {}).get("plural") != plural:
            continue
        for res in crd_resources(crd):
            if res.version == version:
                return res
    gv = f"{group}/{version}" if group else version
    raise ApiError(
        404, "NotFound", f"the server could not find the requested resource ({plural} {gv})"
    )


def group_versions(resources: list[Resource]) -> dict[str, list[str]]:
    """group -> served versions, preferred first; core ('') included."""
    groups: dict[str, list[str]] = {}
    for r in resources:
        versions = groups.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return groups
