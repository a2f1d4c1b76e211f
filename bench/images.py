"""Images benchmark: build time and size of model images, and pull throughput of our `/v2/` against CNCF
Distribution serving the same image, in the same run, on 127.0.0.1.

1. A ~1 MB and a ~100 MB ONNX model (random, incompressible weights) are registered in a fresh `edgewise up`;
   each is built into an image (time from request to the activity succeeding, image size, new blob bytes in
   the store), then built again from the unchanged model version (time, same digest, no new blobs).
2. The large image is pushed (`Client.push_image`, what `edgewise image push` runs) into a local
   `docker-registry`; then both servers serve it to the same clients, alternating which goes first: httpx
   fetching manifest, config and layers through sha256, and `skopeo copy ... dir:`. The report gives the
   median MB/s per server and client, and edgewise/Distribution against the target (>= 0.8).

It only reports figures and never fails on them.

    .venv/bin/python bench/images.py          # 1 MB and 100 MB models; 11 http, 7 skopeo pulls per server
    .venv/bin/python bench/images.py --quick  # smoke run: a 10 MB "large" model, 2 pulls each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import ServerProcess, cpu_seconds, idle_cores
from _images_build import build_twice
from _images_distribution import start_distribution
from _images_models import matmul_of_size
from _images_pull import Source, pull_http, pull_skopeo
from _images_report import SERVERS, mb_per_s, summarize
from _tracking_common import local_only_env
from _tracking_edgewise import start_service

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "bench-large"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small 'large' model and few pulls, for a smoke test"
    )
    parser.add_argument("--small-mb", type=float, default=1.0, help="size of the small model (default 1 MB)")
    parser.add_argument(
        "--large-mb", type=float, default=None, help="size of the large model (default 100 MB)"
    )
    parser.add_argument("--http-reps", type=int, default=None, help="httpx pulls per server (default 11)")
    parser.add_argument("--skopeo-reps", type=int, default=None, help="skopeo pulls per server (default 7)")
    parser.add_argument(
        "--start-timeout", type=float, default=180.0, help="seconds a server gets to be ready"
    )
    parser.add_argument("--output", type=Path, default=ROOT / ".bench" / "images.json")
    opts = parser.parse_args()
    opts.large_mb = opts.large_mb or (10.0 if opts.quick else 100.0)
    opts.http_reps = opts.http_reps or (2 if opts.quick else 11)
    opts.skopeo_reps = opts.skopeo_reps or (2 if opts.quick else 7)
    return opts


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _one_pull(
    client: str, source: Source, server: ServerProcess, scratch: Path, env: dict[str, str]
) -> dict[str, Any]:
    cpu_before = cpu_seconds(server.pid)
    if client == "http":
        pull = pull_http(source)
    else:
        pull = pull_skopeo(source, scratch / f"pull-{source.label}", env)
    pull["server_cpu_seconds"] = round(cpu_seconds(server.pid) - cpu_before, 3)
    pull["mb_per_s"] = mb_per_s(pull)
    pull["seconds"] = round(pull["seconds"], 4)
    return pull


def pull_rounds(
    sources: dict[str, Source], servers: dict[str, ServerProcess], reps: dict[str, int], scratch: Path
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per client: an unmeasured warm-up pull per server, then `reps` rounds, the first server alternating."""
    env = local_only_env({})
    pulls: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for client, count in reps.items():
        pulls[client] = {name: [] for name in SERVERS}
        for name in SERVERS:
            _one_pull(client, sources[name], servers[name], scratch, env)
        for round_index in range(count):
            order = SERVERS if round_index % 2 == 0 else tuple(reversed(SERVERS))
            for name in order:
                pull = _one_pull(client, sources[name], servers[name], scratch, env)
                pulls[client][name].append(pull)
                log(f"{client} pull {round_index + 1}/{count} from {name}: {pull['mb_per_s']} MB/s")
    return pulls


def same_manifest(sources: dict[str, Source]) -> dict[str, str]:
    """The manifest digest each server answers for the tag: the pull compares like with like only if equal."""
    import httpx

    from _images_pull import MANIFEST_TYPES

    digests: dict[str, str] = {}
    for name, source in sources.items():
        with httpx.Client(base_url=f"http://{source.host}", auth=source.creds(), trust_env=False) as client:
            response = client.head(
                f"/v2/{source.repository}/manifests/{source.tag}", headers={"Accept": MANIFEST_TYPES}
            )
            digests[name] = response.headers.get("docker-content-digest", f"<HTTP {response.status_code}>")
    return digests


def run(opts: argparse.Namespace, work: Path, report: dict[str, Any]) -> None:
    from edgewise.cloud.client import Client

    log("making models")
    small = matmul_of_size(work / "models" / "small.onnx", megabytes=opts.small_mb, seed=1)
    large = matmul_of_size(work / "models" / "large.onnx", megabytes=opts.large_mb, seed=2)
    servers: dict[str, ServerProcess] = {}
    try:
        log("starting edgewise up")
        service, url, token = start_service(work / "edgewise", opts.start_timeout)
        servers["edgewise"] = service
        data = work / "edgewise" / "data"
        with Client(url=url, token=token, timeout=300.0) as client:
            builds: dict[str, Any] = {}
            for label, model_file in (("small", small), ("large", large)):
                log(f"building the {label} model's image twice")
                builds[label] = build_twice(
                    client, data, model_file=model_file, model=f"bench-{label}", image=f"bench-{label}"
                )
            report["builds"] = builds
            log("starting docker-registry and pushing the large image")
            distribution, host = start_distribution(work / "distribution", opts.start_timeout)
            servers["distribution"] = distribution
            image = client.get_image("bench-large", 1)
            started = time.perf_counter()
            pushed = client.push_image(image.name, image.version, target=f"{host}/{REPOSITORY}:1")
            report["push"] = {
                "image": image.ref,
                "to": f"{host}/{REPOSITORY}:1",
                "manifest_digest": pushed,
                "seconds": round(time.perf_counter() - started, 3),
            }
        sources = {
            "edgewise": Source(
                label="edgewise",
                host=url.removeprefix("http://"),
                repository=image.name,
                tag=str(image.version),
                user="edgewise",
                password=token,
            ),
            "distribution": Source(label="distribution", host=host, repository=REPOSITORY, tag="1"),
        }
        report["pull"] = {"image_size_bytes": image.size, "manifest_digests": same_manifest(sources)}
        pulls = pull_rounds(sources, servers, {"http": opts.http_reps, "skopeo": opts.skopeo_reps}, work)
        report["pull"]["summary"] = summarize(pulls)
        report["pull"]["runs"] = pulls
        report["servers"] = {name: {"seconds_to_ready": s.ready_seconds} for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


def main() -> None:
    opts = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers we started
    started = time.monotonic()
    work = ROOT / ".bench" / "images-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report: dict[str, Any] = {
        "meta": {
            "quick": opts.quick,
            "small_model_mb": opts.small_mb,
            "large_model_mb": opts.large_mb,
            "pull_repetitions": {"http": opts.http_reps, "skopeo": opts.skopeo_reps},
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": _loadavg(),
            "idle_cores_at_start": idle_cores(),
            "units": "MB = 10^6 bytes; sizes in bytes; times in seconds",
            "timing": "build: POST of the build to the poll (every 20 ms) that sees it succeeded; "
            "pull: wall time of a whole pull (manifest, config, layers) including connection set-up "
            "and, for skopeo, process start; one unmeasured warm-up pull per server and client first",
        },
    }
    try:
        run(opts, work, report)
    except Exception as exc:  # reported, not fatal: the figures gathered so far are still written
        log(f"{type(exc).__name__}: {str(exc)[:1000]}")
        report["error"] = f"{type(exc).__name__}: {exc}"
    report["meta"]["total_seconds"] = round(time.monotonic() - started, 1)
    report["meta"]["loadavg_at_end"] = _loadavg()
    text = json.dumps(report, indent=2)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(text + "\n")
    print(text)
    for client, entry in report.get("pull", {}).get("summary", {}).items():
        print(
            f"pull {client:<8} edgewise {entry['edgewise']['median_mb_per_s']} MB/s, distribution "
            f"{entry['distribution']['median_mb_per_s']} MB/s, ratio {entry['edgewise_over_distribution']} "
            f"{entry['target']} pass={entry['pass']}",
            file=sys.stderr,
        )
    log(f"wrote {opts.output}")


if __name__ == "__main__":
    main()
