"""The DR lab's parts in isolation: LSNs, hosts, tokens, timeline histories, the client's
DNS cache, and an in-process lab restored from its state file."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest

from lab.controllers.cnpg import (
    Database,
    check_token,
    demotion_token,
    format_lsn,
    is_replica,
    parse_host,
    parse_lsn,
    service_host,
    wal_file,
)
from lab.dr import DrAppSpec, check_fault, parse_app
from lab.runtime import Lab
from lab.workload import Workload


def test_lsn_and_wal_file_follow_postgresql_spelling() -> None:
    assert format_lsn(0x3000028) == "0/3000028"
    assert format_lsn((1 << 32) | 0xA0) == "1/A0"
    assert parse_lsn("1/A0") == (1 << 32) | 0xA0
    assert wal_file(1, 0x3000028) == "000000010000000000000003"
    with pytest.raises(ValueError):
        parse_lsn("nonsense")


def test_service_hosts_name_the_member() -> None:
    host = service_host("shop-eu-prod-1", "shop", "eu-prod-1")
    assert host == "shop-eu-prod-1-rw.shop.svc.eu-prod-1.lab"
    assert parse_host(host.upper() + ":80") == ("eu-prod-1", "shop", "shop-eu-prod-1")
    assert parse_host("shop.db.lab") is None
    assert parse_host("shop-eu-prod-1-ro.shop.svc.eu-prod-1.lab") is None


def test_is_replica_follows_cnpg() -> None:
    def cluster(replica: dict[str, object] | None) -> dict[str, object]:
        return {"metadata": {"name": "a"}, "spec": {"replica": replica} if replica else {}}

    assert not is_replica(cluster(None))
    assert is_replica(cluster({"primary": "b", "source": "b"}))
    assert not is_replica(cluster({"primary": "a", "source": "b"}))
    assert not is_replica(cluster({"self": "x", "primary": "x", "source": "b"}))
    assert is_replica(cluster({"enabled": True, "primary": "a", "source": "b"}))


def _pair() -> tuple[Database, Database, random.Random]:
    """A primary with three writes and a fresh base backup of it."""
    rng = random.Random(1)
    primary = Database.initdb(rng)
    for seq in range(3):
        primary.write(seq, 0.0)
    return primary, primary.clone(), rng


def test_demotion_token_promotes_only_at_its_exact_lsn() -> None:
    primary, replica, _ = _pair()
    primary.write(3, 0.0)
    primary.checkpoint(0.0)
    token = demotion_token(primary)
    content = json.loads(base64.b64decode(token))
    assert content["latestCheckpointREDOLocation"] == format_lsn(primary.lsn)
    assert content["databaseSystemIdentifier"] == primary.system_id
    waiting = check_token(token, replica)
    assert waiting is not None and waiting.retryable
    assert waiting.message.startswith("waiting for promotion token LSN")
    replica.replay_from(primary, until=1.0)
    assert check_token(token, replica) is None
    replica.write(None, 0.0)
    older = check_token(token, replica)
    assert older is not None and not older.retryable and "older than" in older.message


def test_foreign_or_garbled_tokens_are_refused() -> None:
    primary, replica, rng = _pair()
    other = Database.initdb(rng)
    foreign = check_token(demotion_token(other), replica)
    assert foreign is not None and not foreign.retryable
    assert "mismatching system identifiers" in foreign.message
    garbled = check_token("not-a-token", replica)
    assert garbled is not None and not garbled.retryable


def test_a_replica_follows_a_promotion_only_up_to_the_fork() -> None:
    primary, replica, rng = _pair()
    replica.replay_from(primary, until=1.0)
    replica.promote(rng)  # a planned switchover: the old primary stopped at the fork
    assert primary.can_follow(replica)
    primary.replay_from(replica, until=1.0)
    assert primary.timeline == 2

    old, new, rng = _pair()
    old.write(3, 0.0)  # acknowledged, never replayed
    new.promote(rng)  # failover
    assert not old.can_follow(new)
    rebuilt = new.clone()
    assert rebuilt.can_follow(new) and rebuilt.timeline == 2


def test_replay_respects_the_lag() -> None:
    primary, replica, _ = _pair()
    primary.write(99, 10.0)
    replica.replay_from(primary, until=5.0)
    assert 99 not in replica.seqs()
    assert replica.pending_age(primary, now=12.0) == pytest.approx(2.0)
    replica.replay_from(primary, until=10.0)
    assert 99 in replica.seqs()


def test_fault_and_app_parameters() -> None:
    assert check_fault("replication-lag", {"seconds": 2}) == {"seconds": 2.0}
    assert check_fault("replication-lag", {"stop": True}) == {"stop": True}
    assert check_fault("partition", {"junk": 1}) == {}
    assert check_fault("partition", {"isolate": True}) == {"isolate": True}
    for kind, params in [("db-not-ready", {}), ("replication-lag", {"seconds": True})]:
        with pytest.raises(ValueError):
            check_fault(kind, params)
    assert parse_app("shop=eu-prod-1,us-prod-1").clusters == ("eu-prod-1", "us-prod-1")
    with pytest.raises(ValueError):
        parse_app("shop=eu-prod-1")


async def test_the_client_caches_answers_for_their_ttl() -> None:
    calls: list[str] = []

    def lookup(name: str) -> tuple[str, str, int]:
        calls.append(name)
        return "h", "127.0.0.1:1", 1

    workload = Workload(
        app="a", dns_name="a.db.lab", members={}, lookup=lookup, address=lambda h: None
    )
    assert workload._resolve() == ("h", "127.0.0.1:1")
    assert workload._resolve() == ("h", "127.0.0.1:1")
    assert len(calls) == 1
    await asyncio.sleep(1.05)
    workload._resolve()
    assert len(calls) == 2


async def test_a_restored_lab_reinitialises_its_apps(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    options: dict[str, Any] = {"clusters": 2, "nodes": 1, "state_file": state}
    app = DrAppSpec("keep", ("eu-dev-1", "eu-staging-1"), "keep", "keep.db.lab", ttl=2)
    async with Lab(directory=tmp_path, dr_apps=[app], **options):
        pass
    async with Lab(directory=tmp_path, **options) as lab:
        assert lab.dr is not None
        assert lab.dr.apps == {"keep": app}

        def roles() -> list[tuple[str, str | None]]:
            assert lab.dr is not None
            return [(m["role"], m["receiver"]) for m in lab.dr.describe()[0]["members"]]

        for _ in range(100):  # the replica clones its source again (one step), then streams
            if roles() == [("primary", None), ("replica", "streaming")]:
                break
            await asyncio.sleep(0.05)
        assert roles() == [("primary", None), ("replica", "streaming")]
        assert (lab.dr.resolve("keep.db.lab") or {}).get("member") == "eu-dev-1"
