"""Harness for tests and benches: run the lab as a subprocess and drive its admin API.

    with LabProcess(clusters=3, directory=tmp_path) as lab:
        subprocess.run(["kubectl", "--kubeconfig", lab.kubeconfig, ...])
        lab.admin.fault("eu-dev-1", "dark", mode="refuse")

`LabProcess` works as a sync or async context manager. The child always dies with the
harness: on exit, on test failure, and (Linux) when the parent process itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from lab import pki

START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0


class LabError(RuntimeError):
    """The lab refused a request or failed to start; the message says why."""


class LabAdmin:
    """Client of the lab's admin API (blocking; calls are short)."""

    def __init__(self, admin_url: str, *, timeout: float = 30.0) -> None:
        self.url = admin_url.rstrip("/")
        self.timeout = timeout

    def clusters(self) -> list[dict[str, Any]]:
        return self._call("GET", "/clusters")

    def add_cluster(
        self, name: str, labels: dict[str, str] | None = None, version: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "labels": labels or {}}
        if version is not None:
            body["version"] = version
        return self._call("POST", "/clusters", body)

    def remove_cluster(self, name: str) -> None:
        self._call("DELETE", f"/clusters/{name}")

    def fault(self, name: str, kind: str, **params: Any) -> dict[str, Any]:
        """Injects a fault, e.g. `fault(c, "flaky", rate=0.5, codes=[503])`."""
        return self._call("POST", f"/clusters/{name}/faults", {"kind": kind, **params})

    def clear(self, name: str, kind: str | None = None) -> dict[str, Any]:
        """Clears one fault kind, or every fault of the cluster."""
        path = f"/clusters/{name}/faults" + (f"/{kind}" if kind else "")
        return self._call("DELETE", path)

    def add_user(
        self,
        name: str,
        user: str,
        verbs: list[str],
        resources: tuple[str, ...] | list[str] = ("*",),
    ) -> str:
        """Adds a limited identity to cluster `name`; returns its bearer token."""
        body = {"name": user, "verbs": list(verbs), "resources": list(resources)}
        return str(self._call("POST", f"/clusters/{name}/users", body)["token"])

    def certificates(self, name: str) -> dict[str, Any]:
        """The cluster's served chain, trust bundle and consumers' verdicts."""
        return dict(self._call("GET", f"/clusters/{name}/certificates"))

    def set_cert_expiry(self, name: str, days: float) -> dict[str, Any]:
        """Re-issues the serving certificate with `days` left (negative: expired)."""
        return dict(self._call("POST", f"/clusters/{name}/certificates", {"expiresInDays": days}))

    def seed_certificate(
        self, cluster: str, namespace: str, name: str, days: float, **spec: Any
    ) -> dict[str, Any]:
        """A cert-manager Certificate issued earlier, `days` from expiry; `spec` in API
        spelling: secretName, duration, renewBefore, dnsNames."""
        body = {"namespace": namespace, "name": name, "expiresInDays": days, **spec}
        return dict(self._call("POST", f"/clusters/{cluster}/cert-manager/certificates", body))

    # ---- disaster recovery (docs/lab-dr.md) --------------------------------------------

    def seed_dr_app(
        self,
        name: str,
        clusters: list[str],
        *,
        namespace: str = "",
        dns_name: str = "",
        ttl: int = 5,
    ) -> dict[str, Any]:
        """Seeds an app: a CNPG Cluster per cluster (the first primary) and its DNSEndpoint."""
        body: dict[str, Any] = {"name": name, "clusters": clusters, "namespace": namespace}
        body.update(dnsName=dns_name, ttl=ttl)
        return dict(self._call("POST", "/dr/apps", body))

    def dr_apps(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/dr/apps"))

    def dr_app(self, name: str) -> dict[str, Any]:
        return next(a for a in self.dr_apps() if a["name"] == name)

    def resolve(self, dns_name: str) -> dict[str, Any]:
        """The zone's current answer (no caching); LabError for NXDOMAIN."""
        return dict(self._call("GET", f"/dns/{dns_name}"))

    def start_workload(
        self, app: str, *, interval_ms: float = 20, timeout_ms: float = 500, probe_ms: float = 100
    ) -> str:
        """Starts a client writing through the app's DNS name; returns its id."""
        body: dict[str, Any] = {"app": app, "intervalMs": interval_ms, "timeoutMs": timeout_ms}
        body["probeMs"] = probe_ms
        return str(self._call("POST", "/workloads", body)["id"])

    def workload(self, workload_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/workloads/{workload_id}"))

    def stop_workload(self, workload_id: str) -> dict[str, Any]:
        """Stops the client, checks its acknowledged writes (RPO), returns measurements."""
        return dict(self._call("DELETE", f"/workloads/{workload_id}"))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise LabError(str(message)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LabError(f"lab admin API at {self.url} unreachable: {reason}") from None


class CachingResolver:
    """A stub resolver over the lab zone: an answer is reused until its TTL runs out, as
    an application's resolver would (so a DNS switch reaches it up to one TTL late)."""

    def __init__(self, admin: LabAdmin) -> None:
        self.admin = admin
        self._cache: dict[str, tuple[dict[str, Any], float]] = {}

    def resolve(self, name: str) -> dict[str, Any]:
        """`{name, recordType, targets, ttl, member, address}`; LabError for NXDOMAIN."""
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        answer = self.admin.resolve(name)
        self._cache[name] = (answer, time.monotonic() + float(answer["ttl"]))
        return answer


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent dies (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LabProcess:
    """`python -m lab up` as a child process.

    `options` are `up` flags in Python spelling: nodes, version, rollout_delay,
    upgrade_seconds, state_file, seed. Without `directory` a temporary one is used.
    """

    def __init__(self, clusters: int = 6, directory: Path | None = None, **options: Any) -> None:
        self.clusters = clusters
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lab-")
            directory = Path(self._tmp.name)
        self.directory = Path(directory)
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._issued: list[str] = []

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> LabProcess:
        self._spawn()
        return self._wait_ready()

    def _spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "lab.json").unlink(missing_ok=True)
        command = [sys.executable, "-m", "lab", "up", "--clusters", str(self.clusters)]
        command += ["--dir", str(self.directory)]
        for key, value in self.options.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        with self._log.open("wb") as stderr:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        weakref.finalize(self, _kill, self.process)

    def _wait_ready(self) -> LabProcess:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise LabError(
                    f"lab exited with code {self.process.returncode} while starting:\n"
                    + self._log.read_text().strip()
                )
            info = _read_json(self.directory / "lab.json")
            if info is not None and info.get("pid") == self.process.pid:
                self.info = info
                return self
            if time.monotonic() > deadline:
                log = self._log.read_text()
                self.stop()
                raise LabError(f"lab did not start within {START_TIMEOUT:.0f}s:\n{log}")
            time.sleep(0.05)

    @property
    def _log(self) -> Path:
        return self.directory / "lab.log"

    def stop(self) -> None:
        """SIGTERM (clean shutdown, state file written), SIGKILL if it does not exit."""
        if self.process is not None:
            _kill(self.process)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LabProcess:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LabProcess:
        self._spawn()  # from this thread: the child's parent-death signal follows it
        try:
            return await asyncio.to_thread(self._wait_ready)
        except BaseException:
            self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # ---- what tests use ----------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return Path(self.info["kubeconfig"])

    @property
    def contexts(self) -> dict[str, str]:
        """Cluster name -> kubeconfig context, the management cluster included."""
        out = {"mgmt": self.info["management_context"]}
        out.update({c["name"]: c["context"] for c in self.info["clusters"]})
        return out

    @property
    def admin(self) -> LabAdmin:
        return _TrackingAdmin(self.info["admin_url"], self._issued)

    def secrets(self) -> list[str]:
        """Every token and private key the lab issued: kubeconfig credentials, tokens of
        users added through `admin`, and the CA key when a state file holds it."""
        out = list(self._issued)
        config = yaml.safe_load(self.kubeconfig.read_text())
        for user in config.get("users", []):
            for field in ("token", "client-key-data"):
                if user.get("user", {}).get(field):
                    out.append(user["user"][field])
        state_file = self.options.get("state_file")
        if state_file:
            state = _read_json(Path(state_file)) or {}
            for cluster in state.get("clusters", []):
                out.append(cluster["token"])
                tls = cluster.get("tls") or {}
                out += [tls[k]["key"] for k in ("signer", "serving") if k in tls]
                out.extend(u["token"] for u in cluster.get("users", []))
        return sorted(set(out))


class _TrackingAdmin(LabAdmin):
    """A LabAdmin that remembers the user tokens it obtained (for `secrets()`)."""

    def __init__(self, admin_url: str, issued: list[str]) -> None:
        super().__init__(admin_url)
        self._issued = issued

    def add_user(
        self,
        name: str,
        user: str,
        verbs: list[str],
        resources: tuple[str, ...] | list[str] = ("*",),
    ) -> str:
        token = super().add_user(name, user, verbs, resources)
        self._issued.append(token)
        return token


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---- TLS helpers ---------------------------------------------------------------------------


def _split(server: str) -> tuple[str, int]:
    host, _, port = server.removeprefix("https://").rstrip("/").rpartition(":")
    return host, int(port)


def served_certificate(server: str, *, timeout: float = 10.0) -> x509.Certificate:
    """The leaf certificate `server` (https://host:port) presents, read without verifying
    it (as `kubeadm certs check-expiration` reads files, or `openssl s_client` does)."""
    host, port = _split(server)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def verify_handshake(server: str, ca_pem: bytes | str, *, timeout: float = 10.0) -> None:
    """A TLS handshake with `server` trusting only `ca_pem`; raises
    ssl.SSLCertVerificationError when that bundle does not verify the served chain."""
    host, port = _split(server)
    cadata = ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem
    context = ssl.create_default_context(cadata=cadata)
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host),
    ):
        pass


def new_ca(common_name: str = "kubernetes") -> tuple[bytes, bytes]:
    """A fresh CA (EC P-256) as (cert PEM, key PEM): the new CA of a rotation."""
    keypair = pki.create_ca(common_name)
    return keypair.cert_pem, keypair.key_pem
