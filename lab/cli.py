"""`python -m lab`: run the lab, and drive a running one through its admin API.

    python -m lab up [--clusters 6] [--dir .state/lab] [--nodes 3] [--version v1.30.6]
                     [--rollout-delay 0.5] [--upgrade-seconds 2.0] [--state-file F] [--seed 0]
                     [--dr-app NAME=PRIMARY,REPLICA[,...]] [--dr-step 0.3] [--dns-sync 0.2]
                     [--dr-crash-recovery 1.0]
    python -m lab status | fault CLUSTER KIND [...] | clear CLUSTER [KIND]
    python -m lab add NAME [--label k=v ...] [--version V] | remove NAME
    python -m lab dr [NAME PRIMARY REPLICA...] [--ttl 5] [--json]

`up` runs in the foreground until SIGINT/SIGTERM. Once serving it writes DIR/kubeconfig,
then DIR/lab.json (atomically, last); a clean stop writes the state file (if given) and
removes lab.json. The other commands find the admin API through DIR/lab.json. Errors are
one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lab.dr import DrAppSpec, parse_app
from lab.testing import LabAdmin, LabError
from lab.topology import DEFAULT_VERSION

if TYPE_CHECKING:
    from lab.runtime import Lab

DEFAULT_DIR = Path(".state/lab")


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


# ---- up ---------------------------------------------------------------------------------


def _up(args: argparse.Namespace) -> None:
    from lab.runtime import Lab

    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    info_path = directory / "lab.json"
    info_path.unlink(missing_ok=True)  # a stale file from a crashed run
    lab = Lab(
        directory=directory,
        clusters=args.clusters,
        nodes=args.nodes,
        version=args.version,
        rollout_delay=args.rollout_delay,
        upgrade_seconds=args.upgrade_seconds,
        state_file=args.state_file,
        seed=args.seed,
        cert_expiry=args.cert_expiry,
        dr_apps=args.dr_app,
        dr_step=args.dr_step,
        dns_sync=args.dns_sync,
        dr_crash_recovery=args.dr_crash_recovery,
    )
    try:
        asyncio.run(_serve(lab, info_path))
    finally:
        info_path.unlink(missing_ok=True)


async def _serve(lab: Lab, info_path: Path) -> None:
    from lab.admin import AdminServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    admin = AdminServer(lab)
    try:
        await lab.start()
        url = await admin.start()
        info = json.dumps(lab.info(admin_url=url, pid=os.getpid()), indent=2)
        _write_atomically(info_path, info)
        count = len(lab.workload_clusters())
        print(
            f"lab up: {count} clusters + mgmt; kubeconfig {lab.kubeconfig}; admin {url}", flush=True
        )
        await stop.wait()
    finally:
        await admin.stop()
        await lab.stop()


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ---- admin commands ---------------------------------------------------------------------


def _admin(directory: Path) -> LabAdmin:
    try:
        info = json.loads((directory / "lab.json").read_text())
    except FileNotFoundError:
        raise CliError(
            f"no lab running in {directory} (start one with: python -m lab up)"
        ) from None
    except ValueError:
        raise CliError(f"{directory / 'lab.json'} is not valid JSON") from None
    return LabAdmin(info["admin_url"])


def _status(args: argparse.Namespace) -> None:
    clusters = _admin(args.dir).clusters()
    if args.json:
        print(json.dumps(clusters, indent=2))
        return
    rows = [("NAME", "VERSION", "CONTEXT", "SERVER", "LABELS", "FAULTS")]
    for c in clusters:
        labels = ",".join(f"{k}={v}" for k, v in sorted(c["labels"].items()))
        faults = ",".join(_describe_fault(k, v) for k, v in c["faults"].items()) or "-"
        rows.append((c["name"], c["version"], c["context"], c["server"], labels, faults))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _describe_fault(kind: str, params: dict[str, Any]) -> str:
    detail = ",".join(f"{k}={v}" for k, v in params.items())
    return f"{kind}({detail})" if detail else kind


def _fault(args: argparse.Namespace) -> None:
    params: dict[str, Any] = {}
    for name in ("mode", "latency_ms", "rate", "count", "seconds"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if args.codes is not None:
        params["codes"] = args.codes
    if args.image:
        params["images"] = args.image
    if args.stop:
        params["stop"] = True
    if args.isolate:
        params["isolate"] = True
    result = _admin(args.dir).fault(args.cluster, args.kind, **params)
    print(f"{args.cluster}: faults {_faults_line(result)}")


def _clear(args: argparse.Namespace) -> None:
    result = _admin(args.dir).clear(args.cluster, args.kind)
    print(f"{args.cluster}: faults {_faults_line(result)}")


def _faults_line(result: dict[str, Any]) -> str:
    faults = result.get("faults", {})
    return ", ".join(_describe_fault(k, v) for k, v in faults.items()) or "none"


def _add(args: argparse.Namespace) -> None:
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"bad --label {item!r}: expected KEY=VALUE")
        labels[key] = value
    added = _admin(args.dir).add_cluster(args.name, labels, args.version)
    print(f"added {added['name']} ({added['version']}), context {added['context']}")


def _dr(args: argparse.Namespace) -> None:
    admin = _admin(args.dir)
    if args.name:
        admin.seed_dr_app(args.name, args.clusters, ttl=args.ttl)
    apps = admin.dr_apps()
    if args.json:
        print(json.dumps(apps, indent=2))
        return
    rows = [("APP", "CLUSTER", "MEMBER", "ROLE", "WRITABLE", "TIMELINE", "LSN", "RECEIVER")]
    for app in apps:
        for m in app["members"]:
            lsn = m["lsn"] or m["replayLSN"] or "-"
            writable = "yes" if m["writable"] else "no"
            rows.append(
                (
                    app["name"],
                    m["cluster"],
                    m["member"],
                    m["role"] or "-",
                    writable,
                    str(m["timeline"] or "-"),
                    lsn,
                    m["receiver"] or "-",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _remove(args: argparse.Namespace) -> None:
    _admin(args.dir).remove_cluster(args.name)
    print(f"removed {args.name}")


# ---- parsing ----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _version(text: str) -> str:
    if not re.fullmatch(r"v\d+\.\d+\.\d+", text):
        raise argparse.ArgumentTypeError(f"expected vMAJOR.MINOR.PATCH, got {text!r}")
    return text


def _expiries(text: str) -> dict[str, float]:
    """`eu-dev-1=-2,eu-prod-1=5`: days each cluster's serving certificate has left."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, days = item.partition("=")
        try:
            out[name] = float(days)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NAME=DAYS, got {item!r}") from None
    return out


def _codes(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated status codes, got {text!r}"
        ) from None


def _dr_app(text: str) -> DrAppSpec:
    try:
        return parse_app(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Usage mistakes as one line, not argparse's usage block."""
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    root = _Parser(
        prog="python -m lab", description="A local fleet of simulated Kubernetes clusters."
    )
    sub = root.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--dir", type=Path, default=DEFAULT_DIR, help="lab directory (default .state/lab)"
        )
        return p

    up = command("up", "run the lab in the foreground")
    up.add_argument("--clusters", type=_positive_int, default=6)
    up.add_argument(
        "--nodes", type=_positive_int, default=3, help="nodes per cluster, control plane included"
    )
    up.add_argument("--version", type=_version, default=DEFAULT_VERSION)
    up.add_argument("--rollout-delay", type=float, default=0.5)
    up.add_argument("--upgrade-seconds", type=float, default=2.0)
    up.add_argument("--state-file", type=Path)
    up.add_argument("--seed", type=int, default=0)
    up.add_argument(
        "--cert-expiry",
        type=_expiries,
        default={},
        help="NAME=DAYS,...: days a cluster's serving certificate has left (negative: expired)",
    )
    up.add_argument(
        "--dr-app",
        type=_dr_app,
        action="append",
        default=[],
        help="seed a DR app NAME=PRIMARY,REPLICA[,...] (repeatable; docs/lab-dr.md)",
    )
    up.add_argument("--dr-step", type=float, default=0.3, help="seconds per CNPG operator step")
    up.add_argument("--dns-sync", type=float, default=0.2, help="external-dns publish delay")
    up.add_argument(
        "--dr-crash-recovery",
        type=float,
        default=1.0,
        help="seconds a DR primary back from dark is not ready",
    )
    up.set_defaults(run=_up)

    status = command("status", "list clusters, versions and faults")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)

    fault = command("fault", "inject a fault into a cluster")
    fault.add_argument("cluster")
    fault.add_argument(
        "kind",
        help="dark | slow | flaky | nodes-not-ready | upgrade-fail | image-missing | "
        "partition | replication-lag | db-not-ready",
    )
    fault.add_argument("--mode", choices=["refuse", "hang"], help="dark: refuse or hang")
    fault.add_argument("--latency-ms", type=int, help="slow: added latency")
    fault.add_argument("--rate", type=float, help="flaky: share of failing requests 0..1")
    fault.add_argument("--codes", type=_codes, help="flaky: e.g. 500,503,429")
    fault.add_argument("--count", type=int, help="nodes-not-ready: how many workers")
    fault.add_argument(
        "--image", action="append", help="image-missing: a reference whose pulls fail, repeatable"
    )
    fault.add_argument(
        "--seconds", type=float, help="replication-lag: replay delay; db-not-ready: duration"
    )
    fault.add_argument("--stop", action="store_true", help="replication-lag: stop replaying")
    fault.add_argument(
        "--isolate",
        action="store_true",
        help="partition: also cut replication to and from the other clusters",
    )
    fault.set_defaults(run=_fault)

    clear = command("clear", "clear one fault kind or all faults of a cluster")
    clear.add_argument("cluster")
    clear.add_argument("kind", nargs="?")
    clear.set_defaults(run=_clear)

    add = command("add", "add a workload cluster")
    add.add_argument("name")
    add.add_argument("--label", action="append", default=[], help="KEY=VALUE, repeatable")
    add.add_argument("--version", type=_version)
    add.set_defaults(run=_add)

    dr = command("dr", "list DR apps and their databases; with NAME CLUSTERS, seed one first")
    dr.add_argument("name", nargs="?", help="app to seed")
    dr.add_argument("clusters", nargs="*", help="its clusters, primary first")
    dr.add_argument("--ttl", type=int, default=5, help="DNS record TTL of a seeded app")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(run=_dr)

    remove = command("remove", "remove a workload cluster")
    remove.add_argument("name")
    remove.set_defaults(run=_remove)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (CliError, LabError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
