"""What `device show` prints for each module a device reported: its scoring URLs, or why it is not running."""

from __future__ import annotations

from edgewise.cloud.cli.devices import _state_rows
from edgewise.cloud.store.device_records import Device


def test_modules_show_their_urls_or_why_they_are_not_running() -> None:
    reported = {
        "lastDesiredVersion": 4,
        "lastDesiredStatus": {"code": 200, "description": "applied"},
        "modules": {
            "scorer": {
                "runtimeStatus": "running",
                "statusDescription": "serving",
                "endpoints": {"http": "http://127.0.0.1:20000", "grpc": "127.0.0.1:20001"},
            },
            "broken": {"runtimeStatus": "failed", "statusDescription": "start failed: port 20002 is taken"},
            "quiet": {"runtimeStatus": "stopped"},
        },
    }
    rows = _state_rows(Device(id="cam-7", created_at=0.0, reported=reported, desired_version=4))
    assert rows == [
        ("version", "4", "4"),
        ("outcome", "", "200 applied"),
        ("module broken", "", "failed: start failed: port 20002 is taken"),
        ("module quiet", "", "stopped"),
        ("module scorer", "", "running · REST http://127.0.0.1:20000 · gRPC 127.0.0.1:20001"),
    ]
