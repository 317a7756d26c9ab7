"""Drift of one bundle on one cluster: every field Git sets that differs live, and, in
enforce mode, its correction, unless enforcement is fighting another controller.

The desired object is the server's answer to a server-side apply dry-run of Git's object
(field manager `flotilla`, force), so defaults the server fills in are never drift. Each
drifted field is reported with its JSON path, both values, the field manager owning the
live value (managedFields) and when it was first seen; nothing is capped. Called with
`enforce` (by the sweep, once it has seen no operation holds the cluster's lock),
enforcement re-applies the object; an object re-applied `fight_reverts` times within the window is
fought over: enforcement stops for it and a conflict naming the other manager is
reported, until Git changes (a new commit) or the other writer stops.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.git import load_repo
from activities.kube import api_client, api_error_message
from activities.manifests import Pulse, apply, get, read_state, resolve, write_state
from fleet.sync_diff import as_text, compare, dotted, owners, same_as_git, value_at
from fleet.sync_models import FIELD_MANAGER, Drift, DriftCheck, DriftCheckResult
from fleet.sync_state import ObjectDrift


@activity.defn(no_thread_cancel_exception=True)
def check_drift(req: DriftCheck) -> DriftCheckResult:
    ref = req.cluster
    api = api_client(ref.credential)
    try:
        state, version = read_state(api)
        result = DriftCheckResult(cluster=ref.name, sha=state.sha)
        if req.bundle not in state.bundles or not state.sha:
            return result
        repo = load_repo(state.repo or req.repo, state.sha)
        names = {b.name for b in repo.bundles}
        if req.bundle not in names:
            return result
        bundle = repo.bundle(req.bundle)
        now = datetime.now(UTC)
        window = timedelta(seconds=req.fight_window_seconds)
        before = state.model_dump_json()
        pulse = Pulse()
        for manifest in bundle.manifests:
            pulse(manifest.key())
            obj = resolve(api, ref.name, bundle.name, manifest)
            result.objects += 1
            mode = bundle.mode_of(manifest)
            live = get(api, obj.path)
            history = state.drift.get(obj.key, ObjectDrift())
            paths: list[tuple[str, ...]]
            if live is None:
                paths, would, live_obj = [("(object)",)], obj.body, {}
            elif same_as_git(obj.body, live):  # the common case: no dry-run needed
                paths, would, live_obj = [], obj.body, live
            else:
                would = apply(api, obj, dry_run=True)
                paths = compare(obj.body, would, live)
                live_obj = live
            drifted = {dotted(p) if p != ("(object)",) else "(object)": p for p in paths}
            history.first_seen = {k: history.first_seen.get(k, now) for k in drifted}
            history.reverts = [t for t in history.reverts if now - t < window]
            corrected = False
            if not drifted:
                history.conflict = ""
            elif mode == "enforce" and not (history.conflict and history.conflict_sha == state.sha):
                first = next(iter(drifted.values()))
                manager = (owners(live_obj, first, exclude=FIELD_MANAGER) or ["unknown"])[0]
                if len(history.reverts) >= req.fight_reverts:
                    history.conflict, history.conflict_sha = manager, state.sha
                elif req.enforce:
                    apply(api, obj, dry_run=False)
                    history.reverts.append(now)
                    result.corrected += 1
                    corrected = True
                else:
                    result.to_correct += 1
            for text, path in drifted.items():
                result.drifts.append(
                    Drift(
                        cluster=ref.name,
                        bundle=bundle.name,
                        key=obj.key,
                        path=text,
                        desired=as_text(value_at(would, path)) if live else "(exists)",
                        live=as_text(value_at(live_obj, path)) if live else "(missing)",
                        manager=(owners(live_obj, path, exclude=FIELD_MANAGER) or [""])[0],
                        mode=mode,
                        first_seen=history.first_seen[text],
                        corrected=corrected,
                        conflict=history.conflict,
                    )
                )
            if history.conflict:
                result.conflicts.append(f"{obj.key}: fights {history.conflict}")
            if history.first_seen or history.reverts or history.conflict:
                state.drift[obj.key] = history
            else:
                state.drift.pop(obj.key, None)
        if state.model_dump_json() != before:
            write_state(api, state, version)
        return result
    except ApiException as exc:
        raise ApplicationError(api_error_message(ref.name, exc)) from None
    except ApplicationError:
        raise
    except Exception as exc:  # not reachable: retryable, secret-free
        raise ApplicationError(api_error_message(ref.name, exc), type="Unreachable") from None
