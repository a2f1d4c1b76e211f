"""Agent benchmark: idle memory, manifest-to-serving time with the image cached, and telemetry throughput
through Mosquitto end to end, each beside a baseline measured in the same run on 127.0.0.1.

1. Idle memory: RSS of a real `edgewise-agent` (its whole process tree) with an empty manifest applied, before
   any module ran (target <= 40 MB; users of IoT Edge ask for its agent to stay under 100 MB). No module
   launcher runs then: the first module start starts one, and it stops a minute after the last module ended.
2. Deployment: two model images are deployed once (pulled and unpacked), then manifests alternate between
   them; each round is timed from publishing the manifest to the new version answering an inference on the
   module's public port (target <= 2 s). The agent forks each version from its module launcher (started by the
   first deployment). Baseline: a cold start of the same scoring server on the same model, as its own program.
3. Telemetry: records appended to the agent's spool until a service-account subscriber has decoded them all
   (target >= 50,000 records/s). Baseline: QoS 1 with one record per message, waiting for each PUBACK.

It only reports figures and never fails on them.

    .venv/bin/python bench/agent.py          # 7 deployment rounds, 200k telemetry records
    .venv/bin/python bench/agent.py --quick  # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent_device import Bench, cold_start_baseline, deployment_times, idle_memory
from _agent_telemetry import telemetry_figures
from _harness import free_ports, idle_cores


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and records, for a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="timed deployments (default 7)")
    parser.add_argument("--records", type=int, default=None, help="telemetry records (default 200,000)")
    parser.add_argument("--batch", type=int, default=5000, help="records per telemetry message at most")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser.parse_args()


def main() -> None:
    opts = parse_args()
    rounds = opts.rounds or (3 if opts.quick else 7)
    records = opts.records or (20_000 if opts.quick else 200_000)
    work = Path(tempfile.mkdtemp(prefix="ew-agent-bench-", dir="/tmp"))
    report: dict[str, Any] = {
        "benchmark": "agent",
        "machine": {"arch": platform.machine(), "idle_cores_before": idle_cores()},
    }
    try:
        bench = Bench(work)
        try:
            bench.rig.start()
            report["idle_memory"] = idle_memory(bench, settle=3.0 if opts.quick else 8.0, samples=5)
            deploy = deployment_times(bench, rounds=rounds)
            baseline = cold_start_baseline(bench, rounds=max(3, rounds // 2))
            deploy["baseline_cold_start_scoring_server"] = baseline
            deploy["ratio_agent_over_cold_start"] = round(
                deploy["serving_s_median"] / baseline["serving_s_median"], 2
            )
            report["deployment_cached_image"] = deploy
        finally:
            bench.close()
        report["telemetry"] = telemetry_figures(
            work / "telemetry",
            free_ports(1)[0],
            records=records,
            batch=opts.batch,
            baseline_seconds=3.0 if opts.quick else 5.0,
        )
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    side = [
        ("idle RSS MB (target <= 40)", report["idle_memory"]["rss_mb_max"], "IoT Edge ask", 100),
        (
            "manifest -> serving s (target <= 2)",
            report["deployment_cached_image"]["serving_s_median"],
            "cold start",
            report["deployment_cached_image"]["baseline_cold_start_scoring_server"]["serving_s_median"],
        ),
        (
            "telemetry records/s (target >= 50k)",
            report["telemetry"]["edgewise"]["records_per_s"],
            "QoS1 1/msg",
            report["telemetry"]["baseline_qos1_one_record_per_message"]["records_per_s"],
        ),
    ]
    for name, ours, base_name, base in side:
        ratio = f"{ours / base:.2f}x" if base else "-"
        print(f"{name:40} edgewise {ours:>10}   {base_name:>13} {base:>10}   ratio {ratio}", file=sys.stderr)


if __name__ == "__main__":
    main()
