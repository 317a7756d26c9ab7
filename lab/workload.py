"""A client of a DR application that measures RPO, RTO and dual primaries from outside.

The writer resolves the app's DNS name with TTL caching (like a stub resolver), sends
`POST /write {"seq": n}` to the member it resolved (plain HTTP, `Host` = the resolved
service host) every `interval`, and records the sequence numbers acknowledged. The
prober reads `GET /status` of every member directly every `probe` seconds and counts the
rounds where two or more say they accept writes. At stop, the acknowledged writes are
checked against the member the name then resolves to: the ones missing are lost (RPO).
An outage runs from the last acknowledged write before a failed attempt to the next
acknowledged one; the longest is the RTO.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

# (service host, "127.0.0.1:port", ttl seconds) for a DNS name, or None (NXDOMAIN)
Lookup = Callable[[str], tuple[str, str, int] | None]
# the "127.0.0.1:port" a service host is reachable at, or None
Address = Callable[[str], str | None]


@dataclass
class _Outage:
    start: float
    end: float | None = None


class Workload:
    def __init__(
        self,
        *,
        app: str,
        dns_name: str,
        members: dict[str, str],  # member -> its service host
        lookup: Lookup,
        address: Address,
        interval: float = 0.02,
        timeout: float = 0.5,
        probe: float = 0.1,
        first_seq: int = 1,
    ) -> None:
        self.app = app
        self.dns_name = dns_name
        self.members = members
        self.lookup = lookup
        self.address = address
        self.interval = interval
        self.timeout = timeout
        self.probe = probe
        self.started = time.monotonic()
        self.stopped: float | None = None
        self.seq = first_seq - 1  # distinct ranges keep clients' writes apart in one database
        self.acked: list[int] = []
        self.acked_by: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.outages: list[_Outage] = []
        self.last_ack = self.started
        self.probes = 0
        self.dual_probes = 0
        self.dual_seconds = 0.0
        self.verification: dict[str, Any] = {"verified": False, "verifiedOn": None, "lost": []}
        self._cache: tuple[str, str, float] | None = None  # host, address, expiry
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(force_close=True),
        )
        self._tasks = [
            asyncio.create_task(self._write_loop()),
            asyncio.create_task(self._probe_loop()),
        ]

    async def stop(self) -> dict[str, Any]:
        """Stops writing and probing, checks the acknowledged writes (RPO), reports."""
        if self.stopped is None:
            self.stopped = time.monotonic()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._verify()
            if self._session is not None:
                await self._session.close()
        return self.report()

    # ---- measurements --------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        now = self.stopped or time.monotonic()
        outages = [
            {
                "start": round(o.start - self.started, 3),
                "end": None if o.end is None else round(o.end - self.started, 3),
                "seconds": round((o.end or now) - o.start, 3),
            }
            for o in self.outages
        ]
        return {
            "app": self.app,
            "running": self.stopped is None,
            "seconds": round(now - self.started, 3),
            "attempts": len(self.acked) + sum(self.errors.values()),
            "acked": len(self.acked),
            "failed": sum(self.errors.values()),
            "errors": dict(self.errors),
            "lastAckedSeq": self.acked[-1] if self.acked else None,
            "ackedBy": dict(self.acked_by),
            "outages": outages,
            "rtoSeconds": max((float(o["seconds"] or 0) for o in outages), default=0.0),
            "probes": self.probes,
            "dualPrimaryProbes": self.dual_probes,
            "dualPrimarySeconds": round(self.dual_seconds, 3),
            "verified": self.verification["verified"],
            "verifiedOn": self.verification["verifiedOn"],
            "lost": self.verification["lost"],
            "lostCount": len(self.verification["lost"]),
        }

    # ---- the writer ----------------------------------------------------------------------

    def _resolve(self) -> tuple[str, str] | None:
        now = time.monotonic()
        if self._cache is not None and now < self._cache[2]:
            return self._cache[0], self._cache[1]
        answer = self.lookup(self.dns_name)
        if answer is None:
            self._cache = None
            return None
        host, address, ttl = answer
        self._cache = (host, address, now + ttl)
        return host, address

    async def _write_loop(self) -> None:
        while True:
            began = time.monotonic()
            self.seq += 1
            seq = self.seq
            target = self._resolve()
            if target is None:
                self._failed("nxdomain")
            else:
                host, address = target
                error = await self._write(host, address, seq)
                if error is None:
                    self._acked(seq, host)
                else:
                    self._failed(error)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    async def _write(self, host: str, address: str, seq: int) -> str | None:
        assert self._session is not None
        try:
            async with self._session.post(
                f"http://{address}/write", json={"seq": seq}, headers={"Host": host}
            ) as response:
                if response.status == 200:
                    return None
                body = await response.json(content_type=None)
                return str((body or {}).get("error") or f"HTTP {response.status}")
        except (aiohttp.ClientConnectorError, ConnectionRefusedError):
            return "connection refused"
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return type(exc).__name__

    def _acked(self, seq: int, host: str) -> None:
        now = time.monotonic()
        self.acked.append(seq)
        member = next((m for m, h in self.members.items() if h == host), host)
        self.acked_by[member] += 1
        if self.outages and self.outages[-1].end is None:
            self.outages[-1].end = now
        self.last_ack = now

    def _failed(self, error: str) -> None:
        self.errors[error] += 1
        if not self.outages or self.outages[-1].end is not None:
            self.outages.append(_Outage(self.last_ack))

    # ---- the dual-primary detector -------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            began = time.monotonic()
            states = await asyncio.gather(*(self._status(h) for h in self.members.values()))
            self.probes += 1
            if sum(1 for s in states if s and s.get("writable")) >= 2:
                self.dual_probes += 1
                self.dual_seconds += self.probe
            await asyncio.sleep(max(0.0, self.probe - (time.monotonic() - began)))

    async def _status(self, host: str) -> dict[str, Any] | None:
        return await self._get(host, "/status")

    async def _get(self, host: str, path: str) -> dict[str, Any] | None:
        address = self.address(host)
        if address is None or self._session is None:
            return None
        try:
            async with self._session.get(
                f"http://{address}{path}", headers={"Host": host}
            ) as response:
                if response.status != 200:
                    return None
                body = await response.json(content_type=None)
                return body if isinstance(body, dict) else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None

    async def _verify(self) -> None:
        answer = self.lookup(self.dns_name)
        if answer is None:
            return
        host = answer[0]
        body = await self._get(host, "/seqs")
        if body is None:
            return
        present = set(body.get("seqs") or [])
        member = next((m for m, h in self.members.items() if h == host), host)
        self.verification = {
            "verified": True,
            "verifiedOn": member,
            "lost": [s for s in self.acked if s not in present],
        }
