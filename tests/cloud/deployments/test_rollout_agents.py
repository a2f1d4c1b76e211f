"""A staged rollout on real agents: batch 1 succeeds, batch 2 cannot store the image (a disk budget too small for
it), and `--max-failures 0` rolls every updated device back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cloud.deployments.test_service import image, service  # noqa: F401 (module fixtures)
from tests.cloud.service import WorkspaceProcess
from tests.runtime.agent.e2e.harness import AgentProcess, wait_for


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.cleanup()


def test_a_failing_batch_rolls_the_rollout_back(
    service: WorkspaceProcess,  # noqa: F811
    image: dict[str, Any],  # noqa: F811
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    group = uuid.uuid4().hex[:6]
    ids = [f"r{i}-{group}" for i in range(4)]  # sorted: batch 1 = r0, r1; batch 2 = r2, r3
    with service.client() as client:
        for index, device_id in enumerate(ids):
            added = client.add_device(device_id, tags={"group": group})
            flags = ("--restart-cooloff", "0.2", "--reconcile-interval", "1", "--health-interval", "0.5")
            if index >= 2:
                flags += ("--disk-budget-bytes", "1000")
            agent = AgentProcess(
                connection=added.connection_string,
                state_dir=tmp_path / device_id,
                log_path=tmp_path / f"{device_id}.log",
                flags=flags,
            )
            agents.append(agent.start())
        name = f"staged-{group}"
        client.create_deployment(
            name, image=image["name"], target=f"tags.group = '{group}'", batch_size=2, max_failures=0
        )

        def settled() -> Any:
            report = client.get_deployment(name)
            return report if report.deployment.status == "rolled-back" else None

        report = wait_for(settled, timeout=50, what="the rollout to roll back", interval=0.5)
        states = {row.device_id: row for row in report.devices}
        assert [states[d].batch for d in ids] == [1, 1, 2, 2]
        assert all(row.state == "rolled-back" for row in report.devices)
        assert "failed" in (report.deployment.reason or "")
        failed_reasons = [states[d].reason or "" for d in ids[2:]]
        assert any(reason and "rolled back to the previous manifest" not in reason for reason in failed_reasons)

        def module_gone() -> bool:
            return all(not (client.get_device(d).reported or {}).get("modules") for d in ids[:2])

        wait_for(module_gone, timeout=30, what="the first batch to drop the module again", interval=0.5)
