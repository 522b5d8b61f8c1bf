"""Serving under load: the demo deploy folder behind `sparsetune serve` against the same model served dense.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py [--rounds 8] [--out benchmarks/out/serve_load.json]

Two servers on loopback, each a subprocess: `sparsetune serve` on a fresh deploy folder of
profiles/demo.yaml, and stock `transformers serve` on the demo model (transformers' SDPA, no sparsetune).
Each round sends 32 concurrent greedy /v1/completions requests (real HTTP calls, one thread each), with
prompt lengths spread over every bucket of the profile (dense below 254, 254-256, 257-512, 513-1024,
1025+, and beyond the last edge) and few enough new tokens that no request crosses an edge. Rounds
alternate between the servers after --warmup uncounted rounds each, so drift in the machine's load hits both.

Checked (exit 1 if any fails): every request answers 200; every sparse request's record (GET
/sparsetune/stats?recent=N, by its X-Request-ID) names its expected bucket and that bucket's budget, with
sparse calls only in sparse buckets; the sparse server's RSS grows by at most --rss-slack-mib from the first
counted round to the last. Reported: p50 and p95 client-side latency (send to last byte; the server generates
one request at a time, so a latency includes its wait in the queue) of each server and their ratio, round
wall times, RSS per round, the sparse server's per-bucket requests and achieved sparsity, and then, with no
queue (one request at a time, each prompt on both servers back to back, --repeats passes), the median
latency per bucket of each server and its ratio.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONCURRENCY = 32
# (prompt tokens with <bos>, new tokens) for the 32 requests of a round: each bucket of the demo profile
# gets at least 4, none crosses an edge while generating.
MIX = [(40, 8), (120, 8), (200, 8), (240, 8), (254, 3), (254, 3), (254, 2), (254, 3),
       (270, 8), (330, 8), (420, 8), (500, 8), (530, 8), (640, 8), (800, 8), (1000, 8),
       (1100, 8), (1300, 8), (1600, 8), (2000, 8), (2100, 8), (2600, 8), (3200, 8), (4000, 8)]
MIX = (MIX + MIX[::3])[:CONCURRENCY]


def prompts() -> list[tuple[str, int, int]]:
    """(prompt, tokens, new tokens) per request: tails of long demo prompts, a different pair per request."""
    rows = [json.loads(line) for line in (ROOT / "sparsetune" / "demo" / "workload.jsonl").read_text().splitlines()]
    long = [row["prompt"].split() for row in rows if len(row["prompt"].split()) > 2000]
    out = []
    for i, (length, new) in enumerate(MIX):
        words = long[(2 * i + 1) % len(long)] + long[(2 * i) % len(long)]
        out.append((" ".join(words[-(length - 1):]), length, new))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 600) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def start(command: list[str], log: Path, url: str) -> subprocess.Popen:
    """Start a server and wait until /health answers."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}: {shlex.join(command)}\n{log.read_text()[-3000:]}")
        try:
            if http(f"{url}/health", timeout=2)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    sys.exit(f"server did not start: {shlex.join(command)}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one_round(url: str, tag: str, work: list[tuple[str, int, int]]) -> tuple[list[float], float, list[str]]:
    """32 concurrent requests; (latencies in s, round wall time, failures)."""
    def call(i: int) -> tuple[float, str | None]:
        prompt, n, new = work[i]
        t0 = time.perf_counter()
        status, body = http(f"{url}/v1/completions", {"prompt": prompt, "max_tokens": new, "temperature": 0},
                            {"X-Request-ID": f"{tag}-{i}"})
        took = time.perf_counter() - t0
        if status != 200:
            return took, f"{tag}-{i}: HTTP {status}: {str(body)[:200]}"
        if body["usage"]["prompt_tokens"] != n:
            return took, f"{tag}-{i}: prompt_tokens {body['usage']['prompt_tokens']} != {n}"
        return took, None

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(call, range(len(work))))
    wall = time.perf_counter() - t0
    return [r[0] for r in results], wall, [r[1] for r in results if r[1]]


def check_records(url: str, tag: str, work: list[tuple[str, int, int]], profile: Any, labels: Any) -> list[str]:
    """Every request of the round ran its bucket's budget, by its own record on the server."""
    status, stats = http(f"{url}/sparsetune/stats?recent={4 * CONCURRENCY}")
    if status != 200:
        return [f"stats: HTTP {status}"]
    records = {r["request_id"]: r for r in stats["recent"]}
    problems = []
    for i, (_, n, new) in enumerate(work):
        r = records.get(f"{tag}-{i}")
        if r is None:
            problems.append(f"{tag}-{i}: no record")
            continue
        budget = profile.lookup(n + new - 1)
        want = {"kv_len": n + new - 1, "bucket": labels.label(n), "first_bucket": labels.label(n),
                "budget": None if budget is None else budget.to_dict(), "error": None}
        got = {k: r[k] for k in want}
        if got != want:
            problems.append(f"{tag}-{i}: {got} != {want}")
        elif (budget is None) != (r["sparse_calls"] == 0) or r["fallback_calls"]:
            problems.append(f"{tag}-{i}: {r['sparse_calls']} sparse, {r['dense_calls']} dense, "
                            f"{r['fallback_calls']} fallback calls with budget {want['budget']}")
    return problems


def sequential(urls: dict[str, str], work: list[tuple[str, int, int]], labels: Any, repeats: int) -> dict[str, Any]:
    """One request at a time, the same prompt on both servers back to back: per-bucket median latency
    with no queue (the service time), and its sparse / dense ratio."""
    times: dict[str, dict[str, list[float]]] = {}
    for rep in range(repeats):
        for i, (prompt, n, new) in enumerate(work):
            for kind in ("sparse", "dense") if (rep + i) % 2 == 0 else ("dense", "sparse"):
                t0 = time.perf_counter()
                status, _ = http(f"{urls[kind]}/v1/completions", {"prompt": prompt, "max_tokens": new,
                                                                  "temperature": 0}, {"X-Request-ID": f"seq{rep}-{i}"})
                if status != 200:
                    raise SystemExit(f"sequential request {i} on {kind}: HTTP {status}")
                times.setdefault(labels.label(n), {"sparse": [], "dense": []})[kind].append(time.perf_counter() - t0)
    return {bucket: {"requests": len(t["sparse"]), "sparse_ms": 1000 * statistics.median(t["sparse"]),
                     "dense_ms": 1000 * statistics.median(t["dense"]),
                     "ratio": statistics.median(t["sparse"]) / statistics.median(t["dense"])}
            for bucket, t in times.items()}


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="counted rounds per server (after the warm-up ones)")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted rounds per server first (the allocator "
                                                               "settles: RSS rises over the first 2-3 rounds)")
    parser.add_argument("--repeats", type=int, default=3, help="sequential passes over the 32 prompts per server")
    parser.add_argument("--rss-slack-mib", type=float, default=16.0, help="allowed RSS growth over counted rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "serve_load.json")
    args = parser.parse_args()

    from sparsetune.deploy import deploy
    from sparsetune.profile import load_profile
    from sparsetune.serving import ServingStats
    from sparsetune.workload.models import DEMO_MODEL

    profile = load_profile(ROOT / "profiles" / "demo.yaml")
    labels = ServingStats(profile)
    work = prompts()
    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    folder = deploy(profile, DEMO_MODEL.resolve(), tmp / "deployed").folder
    ports = {"sparse": free_port(), "dense": free_port()}
    urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    commands = {
        "sparse": [str(BIN / "sparsetune"), "serve", str(folder), "--port", str(ports["sparse"])],
        "dense": [str(BIN / "transformers"), "serve", str(DEMO_MODEL.resolve()), "--host", "127.0.0.1",
                  "--port", str(ports["dense"]), "--device", "cpu"],
    }
    procs = {k: start(cmd, tmp / f"{k}.log", urls[k]) for k, cmd in commands.items()}
    load_before = os.getloadavg()[0]
    latencies: dict[str, list[float]] = {"sparse": [], "dense": []}
    walls: dict[str, list[float]] = {"sparse": [], "dense": []}
    rss: dict[str, list[float]] = {"sparse": [], "dense": []}
    failures: list[str] = []
    try:
        for rnd in range(args.warmup + args.rounds):  # the first `warmup` rounds are not counted
            for kind in ("sparse", "dense") if rnd % 2 == 0 else ("dense", "sparse"):
                tag = f"{kind}{rnd}"
                lat, wall, failed = one_round(urls[kind], tag, work)
                failures += failed
                if kind == "sparse":
                    failures += check_records(urls[kind], tag, work, profile, labels)
                if rnd >= args.warmup:
                    latencies[kind] += lat
                    walls[kind].append(wall)
                    rss[kind].append(rss_mib(procs[kind].pid))
                print(f"round {rnd} {kind}: wall {wall:.2f} s, p50 {quantile(lat, 0.5):.3f} s, "
                      f"RSS {rss_mib(procs[kind].pid):.1f} MiB, {len(failed)} failed", file=sys.stderr)
        per_bucket = sequential(urls, work, labels, args.repeats)
        status, totals = http(f"{urls['sparse']}/sparsetune/stats")
    finally:
        for proc in procs.values():
            stop(proc)
    growth = rss["sparse"][-1] - rss["sparse"][0]
    if growth > args.rss_slack_mib:
        failures.append(f"sparse server RSS grew {growth:.1f} MiB over {args.rounds} rounds "
                        f"(allowed {args.rss_slack_mib})")
    summary = {k: {"p50_s": quantile(v, 0.5), "p95_s": quantile(v, 0.95), "mean_s": statistics.fmean(v),
                   "requests": len(v), "round_wall_s": walls[k], "rss_mib": rss[k]} for k, v in latencies.items()}
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0],
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py " + shlex.join(sys.argv[1:]),
        "servers": {k: shlex.join(c).replace(str(tmp), "$TMP").replace(str(ROOT), ".") for k, c in commands.items()},
        "rounds": args.rounds, "warmup": args.warmup, "concurrency": CONCURRENCY, "mix": MIX,
        **summary,
        "ratio": {"p50": summary["sparse"]["p50_s"] / summary["dense"]["p50_s"],
                  "p95": summary["sparse"]["p95_s"] / summary["dense"]["p95_s"],
                  "mean_round_wall": statistics.fmean(walls["sparse"]) / statistics.fmean(walls["dense"])},
        "sparse_rss_growth_mib": growth,
        "sequential_by_bucket": per_bucket,
        "buckets": [{k: row[k] for k in ("bucket", "budget", "requests", "sparse_calls", "dense_calls", "sparsity")}
                    for row in totals["buckets"]] if status == 200 else None,
        "failures": failures,
        "ok": not failures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio", "sparse_rss_growth_mib", "ok")}), file=sys.stderr)
    for f in failures[:20]:
        print(f"FAIL {f}", file=sys.stderr)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
