"""With FLOTILLA_TRACING=console, a run started from the CLI emits OpenTelemetry spans."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.client import Client

from tests.starters.conftest import ARun

KUBECONFIG = """\
apiVersion: v1
kind: Config
contexts: [{name: ctx-a, context: {cluster: a, user: a}}]
"""


async def test_cli_started_run_emits_spans(
    aflotilla: ARun, temporal_address: str, client: Client, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    name = f"trace-{uuid.uuid4().hex[:8]}"
    env = {
        "FLOTILLA_TRACING": "console",
        # No worker polls this queue: the test needs the start, not the onboarding.
        "FLOTILLA_TASK_QUEUE": f"no-worker-{name}",
    }
    try:
        result = await aflotilla(
            "clusters", "onboard", name, "--context", "ctx-a",
            "--kubeconfig", str(kubeconfig), "--no-wait",
            address=temporal_address, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"started onboard:{name}" in result.stdout
        # Spans go to stderr so they never corrupt `-o json` output on stdout.
        assert '"name": "StartWorkflow:Onboard"' in result.stderr
        assert '"service.name": "flotilla"' in result.stderr
        assert "StartWorkflow" not in result.stdout
    finally:
        await client.get_workflow_handle(f"onboard:{name}").terminate("test done")
