"""Replays the recorded certificate histories (CertScan, CertRenew, CaRotate phases and
undo, their Rollout parents, a ClusterEntity that recorded scans) with the current code.

Re-record: `FLOTILLA_RECORD_HISTORIES=1 .venv/bin/pytest tests/certs/test_lab_1_scan.py
tests/certs/test_lab_2_renew.py tests/certs/test_lab_3_rotate.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import all_workflows

HISTORIES = Path(__file__).parent / "histories"
RECORDED = [
    "CertScan",
    "ClusterEntity-certs",
    "CertRenew",
    "Rollout-certs-renew",
    "CaRotate-add",
    "CaRotate-reissue",
    "CaRotate-remove",
    "CaRotate-undo",
    "Rollout-ca-rotate",
]


@pytest.mark.parametrize("name", RECORDED)
async def test_replay_certs_history(name: str) -> None:
    path = HISTORIES / f"{name}.json"
    assert path.exists(), f"no recorded history {name}; re-record (see the module docstring)"
    replayer = Replayer(
        workflows=all_workflows(),
        data_converter=pydantic_data_converter,
    )
    await replayer.replay_workflow(WorkflowHistory.from_json(name, path.read_text()))
