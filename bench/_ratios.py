"""Condense the report: one row per server/protocol/model, and the target ratios with pass/fail."""

from __future__ import annotations

from typing import Any

TARGETS = (  # (name, numerator, denominator, comparison, bound)
    ("edgewise_grpc_p50 / floor_p50", ("edgewise", "grpc", "p50"), ("floor", "grpc", "p50"), "<=", 1.10),
    ("edgewise_grpc_tput16 / floor_tput16", ("edgewise", "grpc", "16"), ("floor", "grpc", "16"), ">=", 2.0),
    (
        "edgewise_grpc_tput16 / mlserver_grpc_tput16",
        ("edgewise", "grpc", "16"),
        ("mlserver", "grpc", "16"),
        ">=",
        3.0,
    ),
)


def _figure(report: dict[str, Any], server: str, protocol: str, what: str, model: str) -> float | None:
    entry = report["servers"].get(server, {}).get("models", {}).get(model, {}).get(protocol, {})
    if "error" in entry or not entry:
        return None
    if what == "p50":
        value = entry["latency"].get("p50_ms") if entry["latency"].get("verified") else None
        return float(value) if value is not None else None
    run = entry["throughput"].get(what, {})
    return float(run["rps"]) if run.get("verified", False) else None


def ratios(report: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """Each target per model; the p50 one is judged on the interleaved rounds when they ran."""
    out: dict[str, Any] = {}
    for model in models:
        out[model] = {}
        for name, num, den, op, bound in TARGETS:
            a, b = _figure(report, *num, model), _figure(report, *den, model)
            entry: dict[str, Any] = {"value": None, "target": f"{op} {bound}", "pass": None}
            separate = round(a / b, 3) if a is not None and b else None
            paired = (
                report.get("paired_p50", {}).get(model, {}).get("median_ratio") if "p50" in name else None
            )
            if paired is not None:
                entry.update(value=paired, source="median of interleaved rounds", separate_runs=separate)
            elif separate is not None:
                entry.update(value=separate, source="separate runs")
            else:
                entry["why"] = "a figure is missing (server error or unverified run)"
            if entry["value"] is not None:
                entry["pass"] = entry["value"] <= bound if op == "<=" else entry["value"] >= bound
            out[model][name] = entry
    return out


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """{server/protocol: {model: {p50_ms, p99_ms, rps_N..., rss_mb}}} including in-process as reference."""
    rows: dict[str, Any] = {"inprocess": {}}
    for model, entry in report["inprocess"]["models"].items():
        rows["inprocess"][model] = {
            "p50_ms": entry["latency"]["p50_ms"],
            "p99_ms": entry["latency"]["p99_ms"],
            **{f"rps_{n}": run["rps"] for n, run in entry["throughput"].items()},
        }
    for server, data in report["servers"].items():
        if "error" in data:
            rows[server] = {"error": data["error"][:300]}
            continue
        rss = data.get("memory_peak", data.get("memory_idle", {})).get("rss_mb")
        for model, protocols in data.get("models", {}).items():
            for protocol, entry in protocols.items():
                key = f"{server}/{protocol}"
                if "error" in entry:
                    rows.setdefault(key, {})[model] = {"error": entry["error"][:300]}
                    continue
                lat = entry["latency"]
                row: dict[str, Any] = {"p50_ms": lat.get("p50_ms"), "p99_ms": lat.get("p99_ms")}
                for n, run in entry["throughput"].items():
                    row[f"rps_{n}"] = run.get("rps") if run.get("verified") else None
                row["rss_mb"] = rss
                row["verified"] = (
                    entry.get("verified_after_load", False)
                    and all(run.get("verified") for run in entry["throughput"].values())
                    and bool(entry["latency"].get("verified"))
                )
                rows.setdefault(key, {})[model] = row
    return rows


def table(rows: dict[str, Any], levels: list[int]) -> str:
    """The summary as aligned text for a human reading stderr; the JSON stays the record."""
    head = f"{'server/protocol':<22}{'model':<8}{'p50 ms':>9}{'p99 ms':>9}"
    head += "".join(f"{f'rps@{n}':>10}" for n in levels) + f"{'RSS MB':>9}"
    lines = [head]
    for key, models in rows.items():
        if "error" in models:
            lines.append(f"{key:<22}error: {str(models['error'])[:80]}")
            continue
        for model, row in models.items():
            if "error" in row:
                lines.append(f"{key:<22}{model:<8}error: {row['error'][:70]}")
                continue
            cells = [row.get("p50_ms"), row.get("p99_ms"), *(row.get(f"rps_{n}") for n in levels)]
            text = "".join(f"{'-' if c is None else c:>{9 if i < 2 else 10}}" for i, c in enumerate(cells))
            lines.append(f"{key:<22}{model:<8}{text}{row.get('rss_mb') or '':>9}")
    return "\n".join(lines)
