"""Reading a desired-state repository with the git binary, on the worker.

A repository is a local path or a URL. A URL is mirrored into a cache directory
(`FLOTILLA_GIT_CACHE`, default ~/.cache/flotilla/git) and fetched when a ref is resolved.
Files are read at a commit SHA (never a branch), so a sync sees exactly one commit however
the branch moves. Parsed commits are cached in memory: a 1,000-cluster sync reads Git once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.inventory import fetch_records
from fleet.bundles import BundleError, Repo, parse_repo
from fleet.models import RecordsQuery
from fleet.placement import PlacedCluster, by_cluster, place
from fleet.placement import groups as placement_groups
from fleet.sync_models import GitRef, PlacementRequest, PlacementResult, ResolvedRef, SyncTarget

GIT_TIMEOUT = 120.0
_CACHE_SIZE = 16
_lock = threading.Lock()
_parsed: OrderedDict[tuple[str, str], Repo] = OrderedDict()


def _bad(message: str, type: str = "BadRepository") -> ApplicationError:
    return ApplicationError(message, type=type, non_retryable=True)


def _run(cwd: str, *args: str, input: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=input,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        raise ApplicationError(f"git {args[0]} took longer than {GIT_TIMEOUT:.0f}s") from None
    if done.returncode != 0:
        text = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise _GitFailed(text[-1] if text else f"git {args[0]} failed")
    return done.stdout


class _GitFailed(Exception):
    pass


def _is_local(repo: str) -> bool:
    return "://" not in repo and not repo.startswith("git@")


def checkout_dir(repo: str, *, fetch: bool) -> str:
    """The directory git commands run in: the repository itself when local, else a mirror."""
    if _is_local(repo):
        path = Path(repo).expanduser()
        if not (path / ".git").exists() and not (path / "HEAD").exists():
            raise _bad(f"{repo} is not a git repository on the worker")
        return str(path)
    cache = Path(os.environ.get("FLOTILLA_GIT_CACHE", "~/.cache/flotilla/git")).expanduser()
    mirror = cache / hashlib.sha256(repo.encode()).hexdigest()[:16]
    try:
        if not mirror.exists():
            cache.mkdir(parents=True, exist_ok=True)
            _run(str(cache), "clone", "--mirror", "--quiet", repo, str(mirror))
        elif fetch:
            _run(str(mirror), "fetch", "--prune", "--quiet", "origin")
    except _GitFailed as exc:
        raise ApplicationError(f"cannot fetch {repo}: {exc}", type="GitUnreachable") from None
    return str(mirror)


def resolve(req: GitRef) -> ResolvedRef:
    cwd = checkout_dir(req.repo, fetch=True)
    try:
        sha = _run(cwd, "rev-parse", "--verify", "--quiet", f"{req.ref}^{{commit}}")
    except _GitFailed:
        raise _bad(f"ref {req.ref!r} does not exist in {req.repo}", "UnknownRef") from None
    sha_text = sha.decode().strip()
    info = _run(cwd, "show", "-s", "--format=%an <%ae>%n%s", sha_text).decode().splitlines()
    return ResolvedRef(
        repo=req.repo,
        ref=req.ref,
        sha=sha_text,
        author=info[0] if info else "",
        subject=info[1] if len(info) > 1 else "",
    )


def read_files(repo: str, sha: str) -> dict[str, str]:
    """Every YAML file of the commit, path -> text."""
    cwd = checkout_dir(repo, fetch=False)
    try:
        listing = _run(cwd, "ls-tree", "-r", "-z", "--name-only", sha)
    except _GitFailed:
        cwd = checkout_dir(repo, fetch=True)
        try:
            listing = _run(cwd, "ls-tree", "-r", "-z", "--name-only", sha)
        except _GitFailed:
            raise _bad(f"commit {sha} does not exist in {repo}", "UnknownRef") from None
    paths = [p for p in listing.decode().split("\0") if p.endswith((".yaml", ".yml"))]
    if not paths:
        return {}
    batch = "".join(f"{sha}:{p}\n" for p in paths).encode()
    out = _run(cwd, "cat-file", "--batch", input=batch)
    files: dict[str, str] = {}
    pos = 0
    for path in paths:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        start = header_end + 1
        files[path] = out[start : start + size].decode("utf-8", "replace")
        pos = start + size + 1
    return files


def load_repo(repo: str, sha: str) -> Repo:
    """The parsed commit; a problem in its files is a non-retryable `BadBundle` error
    reading `file:line: what`."""
    key = (repo, sha)
    with _lock:
        if key in _parsed:
            _parsed.move_to_end(key)
            return _parsed[key]
    try:
        parsed = parse_repo(sha, read_files(repo, sha))
    except BundleError as exc:
        raise _bad(f"{sha[:12]}: {exc}", "BadBundle") from None
    with _lock:
        _parsed[key] = parsed
        while len(_parsed) > _CACHE_SIZE:
            _parsed.popitem(last=False)
    return parsed


@activity.defn(no_thread_cancel_exception=True)
def resolve_git_ref(req: GitRef) -> ResolvedRef:
    """The commit `req.ref` names now (a branch, tag or SHA); fetches a remote first."""
    return resolve(req)


@activity.defn
async def place_bundles(req: PlacementRequest) -> PlacementResult:
    """The sync target of commit `req.sha`: each bundle placed over the inventory's active
    records matching the repository's fleet selector (fleet/placement.py)."""
    repo = await asyncio.to_thread(load_repo, req.repo, req.sha)
    settings = repo.settings
    records = await fetch_records(activity.client(), RecordsQuery(selector=settings.selector))
    clusters = [PlacedCluster(name=r.name, labels=r.labels) for r in records]
    placed = place(((b.name, b.placement) for b in repo.bundles), clusters)
    common, groups = placement_groups(by_cluster(placed, (c.name for c in clusters)))
    workload = {b.name for b in repo.bundles if b.workload}
    target = SyncTarget(
        repo=req.repo,
        ref=req.ref,
        sha=req.sha,
        started_by=req.started_by,
        default_bundles=common,
        groups=groups,
        workload_copies={name: names for name, names in placed.items() if name in workload},
        prune_threshold=settings.prune_threshold,
        prune_approved_by=req.prune_approved_by,
    )
    return PlacementResult(
        target=target,
        selector=settings.selector,
        waves=settings.waves,
        max_concurrent=settings.max_concurrent,
        failure_budget=settings.failure_budget,
        soak=settings.soak,
        approve_between=settings.approve_between,
        approval_timeout=settings.approval_timeout,
        clusters=sorted(c.name for c in clusters),
        bundles=len(repo.bundles),
    )
