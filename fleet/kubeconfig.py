"""Where a kubeconfig is found and how a list of them merges: one resolver for the CLI
(which checks contexts before starting anything) and the worker (which opens clusters).

When a credential reference names no kubeconfig, the first of these that is set is used:

1. `FLOTILLA_KUBECONFIG`
2. `$FLOTILLA_STATE_DIR/lab/kubeconfig`, when that file exists (the local stack's lab)
3. `KUBECONFIG`
4. `~/.kube/config`

Each of them, and a reference's own `kubeconfig`, may be a list separated by `:` (`;` on
Windows). A list merges as kubectl merges `KUBECONFIG`: files that do not exist are
skipped; for clusters, users and contexts the first file to define a name wins;
`current-context` comes from the first file that sets one. Relative file paths inside a
kubeconfig (certificate-authority, client-certificate, client-key, tokenFile) are taken
relative to the file that holds them, as kubectl does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from fleet.config import Settings

_NAMED_LISTS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))
_FILE_FIELDS = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Parsed files with the mtime they were read at: parsing is the costly part of opening a
# cluster (a 200-cluster file takes ~0.25 s with the pure-Python loader), so a file is
# parsed once per change, with libyaml when available.
_parsed: dict[Path, tuple[float, dict[str, Any]]] = {}

# Which files a kubeconfig source was read from, each with its mtime (a cache key).
Stamp = tuple[tuple[Path, float], ...]
# Merged sources by name, with the stamp they were merged at (see `entries`).
_merged: dict[str, tuple[Stamp, dict[str, dict[str, dict[str, Any]]]]] = {}


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be used: missing, unreadable or not a kubeconfig."""


def default_source(settings: Settings | None = None) -> str:
    """The kubeconfig (file or list) used when a credential reference names none."""
    settings = settings or Settings.from_env()
    if settings.kubeconfig:
        return settings.kubeconfig
    lab = settings.state_dir / "lab" / "kubeconfig"
    if lab.exists():
        return str(lab.absolute())
    return os.environ.get("KUBECONFIG", "") or "~/.kube/config"


def source_of(kubeconfig: str) -> str:
    """A reference's own kubeconfig, or the default when it names none."""
    return kubeconfig or default_source()


def files(source: str) -> list[Path]:
    """The files of a source, in order (a list is split on os.pathsep)."""
    return [Path(p).expanduser().absolute() for p in source.split(os.pathsep) if p.strip()]


def stamp(source: str) -> Stamp:
    """The existing files of `source` with their mtimes; raises KubeconfigError when none
    exists."""
    found: list[tuple[Path, float]] = []
    for path in files(source):
        try:
            found.append((path, path.stat().st_mtime))
        except OSError:
            continue  # kubectl skips a missing file in a list
    if not found:
        names = os.pathsep.join(str(p) for p in files(source)) or repr(source)
        raise KubeconfigError(f"{names} does not exist")
    return tuple(found)


def load(source: str) -> dict[str, Any]:
    """The merged kubeconfig of `source` (see the module docstring for the rules)."""
    return merge([(path, _parse(path, mtime)) for path, mtime in stamp(source)])


def entries(source: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The merged entries of `source` by list and name (`entries(s)["contexts"][name]`),
    merged once per change of its files: a fleet scan reads one context of a file of
    1,000 per cluster, and merging the whole file each time made scans quadratic. Read-only:
    the dicts are shared."""
    current = stamp(source)
    cached = _merged.get(source)
    if cached is not None and cached[0] == current:
        return cached[1]
    merged = merge([(path, _parse(path, mtime)) for path, mtime in current])
    by_name = {key: {str(e["name"]): e for e in merged[key]} for key, _ in _NAMED_LISTS}
    _merged[source] = (current, by_name)
    return by_name


def contexts(config: dict[str, Any]) -> list[str]:
    return [str(c["name"]) for c in config.get("contexts") or [] if "name" in c]


def merge(documents: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Merges parsed kubeconfigs, first file winning, with relative paths made absolute."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
    for _, document in documents:
        if not merged.get("current-context") and document.get("current-context"):
            merged["current-context"] = document["current-context"]
    for key, inner in _NAMED_LISTS:
        entries: dict[str, dict[str, Any]] = {}
        for path, document in documents:
            for entry in document.get(key) or []:
                if entry["name"] not in entries:
                    entries[entry["name"]] = _absolute(entry, inner, path.parent)
        merged[key] = list(entries.values())
    return merged


def _absolute(entry: dict[str, Any], inner: str, base: Path) -> dict[str, Any]:
    fields = {
        field: str(base / value)
        for field in _FILE_FIELDS.get(inner, ())
        if isinstance(value := (entry.get(inner) or {}).get(field), str)
        and value
        and not os.path.isabs(value)
    }
    if not fields:
        return entry
    return {**entry, inner: {**entry[inner], **fields}}


def _parse(path: Path, mtime: float) -> dict[str, Any]:
    cached = _parsed.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        with open(path) as f:
            content = yaml.load(f, Loader=_YAML_LOADER) or {}
    except (OSError, yaml.YAMLError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KubeconfigError(f"cannot read {path}: {reason}") from None
    if not isinstance(content, dict) or not all(
        isinstance(content.get(key) or [], list)
        and all(isinstance(e, dict) and "name" in e for e in content.get(key) or [])
        for key, _ in _NAMED_LISTS
    ):
        raise KubeconfigError(f"{path} is not a kubeconfig")
    _parsed[path] = (mtime, content)
    return content
