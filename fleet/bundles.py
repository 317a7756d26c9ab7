"""Bundles: what a desired-state repository holds, parsed from its files at one commit.

Layout (examples/baseline-repo shows a real one):

    flotilla.yaml                  optional: how syncs roll out, the prune guard
    bundles/<name>/bundle.yaml     placement, mode, per-object mode overrides
    bundles/<name>/*.yaml          manifests (multi-document YAML)

Parsing is pure (no git, no cluster): the caller hands the files' text. Every problem
names the file and line, e.g. `bundles/web/app.yaml:12: ...`; one bad file refuses the
whole commit, so nothing of it is applied.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

import yaml
from pydantic import Field, ValidationError

from fleet.durations import parse_duration
from fleet.models import Model
from fleet.selectors import SelectorError, parse_selector
from fleet.wave_specs import PlanError, parse_waves

REPO_FILE = "flotilla.yaml"
BUNDLE_FILE = "bundle.yaml"
BUNDLES_DIR = "bundles"
Mode = Literal["inform", "enforce"]
# Kinds whose copies serve traffic: placement moves never drop the last healthy copy.
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
_M = TypeVar("_M", bound=Model)
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class BundleError(ValueError):
    """A problem in the repository's files: `file:line: what is wrong`."""


class Placement(Model):
    """Where a bundle goes: clusters matching `selector`; with `clusters`, only that many,
    spread evenly over the values of the `spread` label (e.g. region)."""

    selector: str = ""
    clusters: int | None = Field(default=None, ge=1)
    spread: str = ""


class ObjectMode(Model):
    """A per-object override of the bundle's mode."""

    kind: str
    name: str
    namespace: str = ""
    mode: Mode


class Manifest(Model):
    """One object of a bundle, with where it came from (for messages)."""

    source: str  # file:line
    body: dict[str, Any]

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str((self.body.get("metadata") or {}).get("namespace", ""))

    def key(self) -> str:
        """`apiVersion/Kind/namespace/name` (namespace empty for cluster-scoped objects)."""
        return f"{self.api_version}/{self.kind}/{self.namespace}/{self.name}"


class Bundle(Model):
    name: str
    placement: Placement = Field(default_factory=Placement)
    mode: Mode = "inform"
    overrides: list[ObjectMode] = Field(default_factory=list)
    manifests: list[Manifest] = Field(default_factory=list)

    def mode_of(self, manifest: Manifest) -> Mode:
        for o in self.overrides:
            if (o.kind, o.name, o.namespace) == (manifest.kind, manifest.name, manifest.namespace):
                return o.mode
        return self.mode

    @property
    def workload(self) -> bool:
        return any(m.kind in WORKLOAD_KINDS for m in self.manifests)


class SyncSettings(Model):
    """`flotilla.yaml`: the rollout of every sync of this repository, and its guard."""

    selector: str = ""  # the fleet a sync visits (clusters outside keep what they have)
    waves: list[str] = Field(default_factory=lambda: ["canary:1", "rest"])
    max_concurrent: int = Field(default=10, ge=1, le=500)
    failure_budget: str = "0"
    soak: str = "0"
    approve_between: bool = False
    # A sync deleting more than this share of a cluster's placed objects needs an approval;
    # it waits for one before its first wave this long, then halts with nothing changed.
    prune_threshold: int = Field(default=25, ge=0, le=100)
    approval_timeout: str = "24h"


class Repo(Model):
    """Everything at one commit."""

    sha: str
    settings: SyncSettings = Field(default_factory=SyncSettings)
    bundles: list[Bundle]

    def bundle(self, name: str) -> Bundle:
        for b in self.bundles:
            if b.name == name:
                return b
        raise KeyError(name)


def parse_repo(sha: str, files: dict[str, str]) -> Repo:
    """Parses `files` (path -> text) at commit `sha`; raises BundleError (first problem)."""
    settings = SyncSettings()
    if REPO_FILE in files:
        settings = _model(SyncSettings, _one_doc(REPO_FILE, files[REPO_FILE]), REPO_FILE)
        _check_selector(settings.selector, f"{REPO_FILE}:{_line_of(files[REPO_FILE], 'selector')}")
        try:
            parse_duration(settings.approval_timeout)
        except ValueError as exc:
            line = _line_of(files[REPO_FILE], "approval_timeout")
            raise BundleError(f"{REPO_FILE}:{line}: approval_timeout: {exc}") from None
        try:
            parse_waves(settings.waves)
        except (PlanError, ValueError) as exc:
            raise BundleError(f"{REPO_FILE}:{_line_of(files[REPO_FILE], 'waves')}: {exc}") from None
    names = sorted(
        {p.split("/")[1] for p in files if p.startswith(f"{BUNDLES_DIR}/") and p.count("/") >= 2}
    )
    bundles = [_bundle(name, files) for name in names]
    seen: dict[str, str] = {}
    for b in bundles:
        for m in b.manifests:
            if m.key() in seen:
                raise BundleError(f"{m.source}: {m.key()} is also declared at {seen[m.key()]}")
            seen[m.key()] = m.source
    return Repo(sha=sha, settings=settings, bundles=bundles)


def _bundle(name: str, files: dict[str, str]) -> Bundle:
    prefix = f"{BUNDLES_DIR}/{name}/"
    if not _NAME_RE.match(name):
        raise BundleError(f"{prefix}: bundle names are lower-case DNS labels, not {name!r}")
    meta_path = prefix + BUNDLE_FILE
    if meta_path not in files:
        raise BundleError(f"{meta_path}:1: missing (every bundle declares its placement)")
    text = files[meta_path]
    raw = _one_doc(meta_path, text)
    raw.pop("manifests", None)
    for key in ("rollout", *(set(SyncSettings.model_fields) - {"selector", "prune_threshold"})):
        if key in raw:
            raise BundleError(
                f"{meta_path}:{_line_of(text, key)}: {key}: rollout options are the "
                f"repository's ({REPO_FILE}): a sync is one rollout of every bundle"
            )
    bundle = _model(Bundle, {"name": name, **raw}, meta_path)
    _check_selector(bundle.placement.selector, f"{meta_path}:{_line_of(text, 'selector')}")
    manifests: list[Manifest] = []
    for path in sorted(p for p in files if p.startswith(prefix) and p != meta_path):
        if path.endswith((".yaml", ".yml")):
            manifests += _manifests(path, files[path])
    bundle.manifests = manifests
    return bundle


def _manifests(path: str, text: str) -> list[Manifest]:
    out: list[Manifest] = []
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            line = node.start_mark.line + 1
            body = loader.construct_document(node)
            if body is None:
                continue
            where = f"{path}:{line}"
            if not isinstance(body, dict):
                raise BundleError(f"{where}: a manifest is a mapping, not {_what(body)}")
            for field in ("apiVersion", "kind"):
                if not isinstance(body.get(field), str) or not body[field]:
                    raise BundleError(f"{where}: {field} is missing")
            meta = body.get("metadata")
            if not isinstance(meta, dict) or not meta.get("name"):
                raise BundleError(f"{where}: metadata.name is missing")
            out.append(Manifest(source=where, body=body))
    except yaml.YAMLError as exc:
        raise BundleError(_yaml_problem(path, text, exc)) from None
    finally:
        loader.dispose()
    return out


def _one_doc(path: str, text: str) -> dict[str, Any]:
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BundleError(_yaml_problem(path, text, exc)) from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BundleError(f"{path}:1: expected a mapping, not {_what(body)}")
    return body


def _model(cls: type[_M], raw: dict[str, Any], path: str) -> _M:
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BundleError(f"{path}:1: {where}: {err['msg']}") from None


def _check_selector(text: str, where: str) -> None:
    try:
        parse_selector(text)
    except SelectorError as exc:
        raise BundleError(f"{where}: selector {text!r}: {exc}") from None


def _line_of(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith(f"{key}:"):
            return i
    return 1


def _yaml_problem(path: str, text: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context_mark", None)
    if context is not None and "<stream end>" in str(getattr(exc, "problem", "")):
        mark = context  # an unclosed bracket: where it opened, not the end of the file
    line = mark.line + 1 if mark is not None else 1
    line = max(1, min(line, len(text.rstrip().splitlines())))  # never past the last line
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{path}:{line}: invalid YAML: {problem}"


def _what(value: object) -> str:
    return {list: "a list", str: "a string", int: "a number"}.get(type(value), "a scalar")
