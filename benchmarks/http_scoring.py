"""HTTP scoring benchmark: `selfheal serve` as a real process, driven from another process.

What is measured, and why:

1. **Baseline, in process** (this process, before the service starts, so nothing competes for the CPU):
   `Scorer.score_one` on JSON-like records, and `Scorer.score_batch` on lists of them, on a copy of the same
   workspace, with the same log buffering the service uses. This is what HTTP adds to.
2. **Sequential HTTP** (one request at a time, closed loop): p50 / p99 of single transactions. Minus the
   baseline, this is the cost of HTTP, JSON and the hop to the scoring thread at no load.
3. **Open-loop load at 200 requests/s** of single transactions (the issue's aim: p99 <= 10 ms): request
   *i* is sent at ``start + i / rate`` whether or not earlier answers came back, so a slow server meets a
   growing queue instead of a politely waiting client. Latency is measured from the *scheduled* send time
   (no coordinated omission), and also from the actual send. The server's own timing (``latency_ms`` in
   each answer) and how many requests the scorer took per batch (coalescing) are reported beside it.
4. **Batch throughput over HTTP**: batches of 1,000 transactions posted one after another; transactions
   per second against the in-process `score_batch` on the same batches.

Realism: the default simulated world (5,000 customers, 10,000 terminals, ~9,700 transactions a day), 60
days of history, a champion trained with the default parameters and profiled, as ``selfheal train``
leaves a workspace; the history's last 31 days are logged into the workspace, so the service warms its
feature state from the store on start exactly as after a restart. Live transactions follow the history in
time order; every phase uses its own consecutive slice (the service refuses a transaction id twice).
The load generator is a separate Python process (httpx + asyncio, pre-encoded bodies) on the same
2-core machine: it competes with the server for the CPU, as a sidecar or a co-located caller would.
At the end the service is stopped (SIGTERM) and its workspace is opened to check that every row sent is
in the store, scored or dead-lettered.

Aim (reported, never enforced): p99 <= 10 ms at 200 requests/s of single transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from benchmarks import BenchOptions
from benchmarks.common import REPO_ROOT, percentile_ms
from monitor.reference import train_register_and_profile
from scorer import columns as C
from scorer.score import ScorerConfig
from scorer.simulate import LABEL_COLUMNS, Simulator, WorldConfig
from scorer.train import TrainParams
from selfheal.app import Platform
from selfheal.service.config import ServiceConfig
from selfheal.service.discovery import ServiceRecord, service_file
from store import Workspace

AIM_P99_MS = 10.0
AIM_RATE = 200.0
LOGGED_HISTORY_DAYS = 31  # what `Scorer.warm_up` reads back (30-day windows + 1 day)
# The scorer's log settings as `selfheal serve` sets them, for the in-process baseline.
SERVICE_SCORER = ScorerConfig(
    flush_rows=ServiceConfig.model_fields["flush_rows"].default,
    background_writes=ServiceConfig.model_fields["background_writes"].default,
)


@dataclass(frozen=True)
class Plan:
    """How big the run is. `FULL` is the committed benchmark (~2-3 min on 2 cores); `QUICK` a smoke run."""

    world: WorldConfig
    history_days: int
    train_params: TrainParams | None
    warmup_requests: int  # sequential, untimed, before anything is measured
    sequential_requests: int
    rate: float
    load_seconds: float
    load_warmup_s: float  # the first seconds of the open-loop run are sent but not counted
    batch_size: int
    batches: int  # timed (one more is sent first, untimed)


FULL = Plan(
    world=WorldConfig(),
    history_days=60,
    train_params=None,
    warmup_requests=50,
    sequential_requests=500,
    rate=AIM_RATE,
    load_seconds=30.0,
    load_warmup_s=2.0,
    batch_size=1_000,
    batches=10,
)
QUICK = Plan(
    world=WorldConfig(customers=1000, terminals=2000),
    history_days=40,
    train_params=TrainParams(n_estimators=60, early_stopping_rounds=10),
    warmup_requests=20,
    sequential_requests=100,
    rate=AIM_RATE,
    load_seconds=5.0,
    load_warmup_s=1.0,
    batch_size=1_000,
    batches=2,
)


# -- setup ---------------------------------------------------------------------------------------------


@dataclass
class Slices:
    """Consecutive live transactions for each phase, as JSON objects a client sends."""

    warmup: list[dict[str, Any]]
    sequential: list[dict[str, Any]]
    load: list[dict[str, Any]]
    batches: list[list[dict[str, Any]]]  # the first is the untimed warm-up batch


def _setup(plan: Plan, scratch: Path, console: Console) -> tuple[Path, Slices, dict[str, Any]]:
    started = time.perf_counter()
    simulator = Simulator(plan.world)
    history = simulator.generate(0, plan.history_days)
    load_requests = int(plan.rate * plan.load_seconds)
    needed = plan.warmup_requests + plan.sequential_requests + load_requests + plan.batch_size * (plan.batches + 1)
    per_day = len(history) / plan.history_days
    live_days = int(np.ceil(needed / per_day)) + 1
    live = simulator.generate(plan.history_days, live_days).drop(columns=list(LABEL_COLUMNS))
    while len(live) < needed:
        live_days += 1
        live = simulator.generate(plan.history_days, live_days).drop(columns=list(LABEL_COLUMNS))
    records: list[dict[str, Any]] = json.loads(live.iloc[:needed].to_json(orient="records", date_format="iso"))
    template = scratch / "template"
    with Platform(Workspace(template)) as platform:
        run, _ = train_register_and_profile(
            platform.registry, history, params=plan.train_params, actor="benchmark", reason="http benchmark"
        )
        logged = _log_history(platform, history)
    console.print(
        f"  {len(history):,} history rows ({logged:,} logged for warm-up), {len(live):,} live; champion "
        f"v{run.model.version} AUC {run.report.auc:.3f} ({time.perf_counter() - started:.1f} s)"
    )
    cut = np.cumsum([plan.warmup_requests, plan.sequential_requests, load_requests])
    batch_rows = records[cut[2] :]
    slices = Slices(
        warmup=records[: cut[0]],
        sequential=records[cut[0] : cut[1]],
        load=records[cut[1] : cut[2]],
        batches=[batch_rows[i : i + plan.batch_size] for i in range(0, len(batch_rows), plan.batch_size)],
    )
    info = {
        "world": {"customers": plan.world.customers, "terminals": plan.world.terminals, "seed": plan.world.seed},
        "history_days": plan.history_days,
        "history_rows": len(history),
        "logged_history_rows": logged,
        "live_rows_used": needed,
        "train_params": "defaults" if plan.train_params is None else plan.train_params.model_dump(),
        "model_auc": run.report.auc,
        "service_log_writes": SERVICE_SCORER.model_dump(include={"flush_rows", "background_writes"}),
        "setup_seconds": time.perf_counter() - started,
    }
    return template, slices, info


def _log_history(platform: Platform, history: pd.DataFrame) -> int:
    """Log the last month of history (and its labels) as a scoring service would have."""
    since = history[C.TIMESTAMP].max() - pd.Timedelta(days=LOGGED_HISTORY_DAYS)
    recent = history[history[C.TIMESTAMP] > since]
    ids = (C.TRANSACTION_ID, C.CUSTOMER_ID, C.TERMINAL_ID)
    frame = recent[list(C.INPUT_COLUMNS)].astype(dict.fromkeys(ids, str))
    now = pd.Timestamp.now()
    platform.store.append("transactions", frame.assign(batch_id="history", received_at=now))
    labels = pd.DataFrame(
        {
            C.TRANSACTION_ID: frame[C.TRANSACTION_ID].to_numpy(),
            C.LABEL: recent[C.LABEL].astype(int).to_numpy(),
            "label_time": recent[C.TIMESTAMP].to_numpy(),
            "received_at": now,
        }
    )
    platform.store.append("labels", labels)
    return len(frame)


# -- baseline: in process ------------------------------------------------------------------------------


def _baseline(template: Path, scratch: Path, slices: Slices) -> dict[str, Any]:
    """`score_one` and `score_batch` in this process, on a copy of the workspace, as the service runs them."""
    home = scratch / "in-process"
    shutil.copytree(template, home)
    with Platform(Workspace(home), scorer_config=SERVICE_SCORER) as platform:
        scorer = platform.scorer
        scorer.warm_up()
        for record in slices.warmup:
            scorer.score_one(record)
        single = []
        for record in slices.sequential:
            started = time.perf_counter()
            scorer.score_one(record)
            single.append(time.perf_counter() - started)
        scorer.score_batch(slices.batches[0], source="bench")
        batch = []
        for records in slices.batches[1:]:
            started = time.perf_counter()
            scorer.score_batch(records, source="bench")
            batch.append(time.perf_counter() - started)
    rows = sum(len(b) for b in slices.batches[1:])
    return {
        "score_one": {"calls": len(single), "p50_ms": percentile_ms(single, 50), "p99_ms": percentile_ms(single, 99)},
        "score_batch": {
            "batch_size": len(slices.batches[1]),
            "batches": len(batch),
            "tx_per_s": rows / sum(batch),
            "p50_ms": percentile_ms(batch, 50),
        },
    }


# -- the service -----------------------------------------------------------------------------------------


def _start_service(home: Path) -> tuple[subprocess.Popen[str], ServiceRecord, list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("SELFHEAL_API_TOKEN", "SELFHEAL_HOME")}
    process = subprocess.Popen(
        [sys.executable, "-m", "selfheal.cli", "serve", "--home", str(home), "--port", "0"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(process.stderr or []), daemon=True).start()
    path = service_file(Workspace(home))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"selfheal serve exited with {process.returncode}: {''.join(stderr)}")
        if path.exists():
            return process, ServiceRecord.model_validate_json(path.read_text()), stderr
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"selfheal serve did not start within 300 s: {''.join(stderr)}")


def _stop_service(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _scorer_calls(url: str) -> float:
    """Scorer calls so far (both paths), from the service's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.split()[1]) for line in text.splitlines() if line.startswith("selfheal_scorer_calls_total{"))


def _conservation(home: Path, sent: int) -> dict[str, Any]:
    with Platform(Workspace(home)) as platform:
        store = platform.store
        scored = store.scalar("SELECT count(*) FROM transactions WHERE batch_id <> 'history'")
        dead = store.count("dead_letters")
        predictions = store.count("predictions")
    return {"sent": sent, "scored": int(scored), "predictions": predictions, "dead_lettered": dead,
            "holds": int(scored) + dead == sent and predictions == int(scored)}


# -- the load generator (a separate process) -------------------------------------------------------------


def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in the driver process: warm-up, sequential, open-loop and batch phases against ``spec['url']``."""
    return asyncio.run(_phases(spec))


async def _phases(spec: dict[str, Any]) -> dict[str, Any]:
    url = httpx.URL(spec["url"])
    pool = _Pool(str(url.host), int(url.port or 80))
    try:
        for record in spec["warmup"]:
            await pool.post(json.dumps(record).encode())
        sequential = []
        for record in spec["sequential"]:
            body = json.dumps(record).encode()
            started = time.perf_counter()
            status, _ = await pool.post(body)
            sequential.append((time.perf_counter() - started, status))
        open_loop = await _open_loop(pool, spec["load"], spec["rate"])
        batches = []
        for i, rows in enumerate(spec["batches"]):
            body = json.dumps(rows).encode()
            started = time.perf_counter()
            status, answer = await pool.post(body)
            elapsed = time.perf_counter() - started
            if i:  # the first batch warms up (allocations at a new size); not timed
                batches.append((elapsed, status, json.loads(answer).get("scored", 0), len(rows)))
    finally:
        await pool.close()
    return {"sequential": sequential, "open_loop": open_loop, "batches": batches, "connections": pool.opened}


class _Pool:
    """Keep-alive HTTP/1.1 connections for POST /v1/score, opened on demand, written by hand.

    Why not httpx: its async client spends milliseconds of CPU per request once hundreds of connections
    are open (measured here: against a server idle two thirds of the time it fell to ~40 requests/s and
    queued everything else), so the benchmark measured the client. This costs tens of microseconds.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []
        self.opened = 0

    async def post(self, body: bytes, path: str = "/v1/score") -> tuple[int, bytes]:
        reused = bool(self._idle)
        reader, writer = self._idle.pop() if reused else await self._connect()
        head = f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
        writer.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await reader.readline()
        if not status_line:  # the server closed an idle keep-alive connection (uvicorn: after 5 s)
            writer.close()
            if not reused:
                raise ConnectionError("the server closed a new connection without answering")
            return await self.post(body, path)  # it never read the request: sending it again is safe
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = await reader.readexactly(length)
        self._idle.append((reader, writer))
        return int(status_line.split()[1]), answer

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**24)
        self._all.append(writer)
        self.opened += 1
        return reader, writer

    async def close(self) -> None:
        for writer in self._all:
            writer.close()
        for writer in self._all:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _open_loop(pool: _Pool, records: list[dict[str, Any]], rate: float) -> list[tuple[float, ...]]:
    """Send request i at start + i/rate regardless of answers; (due, sent, done, status, server_ms) each."""
    bodies = [json.dumps(r).encode() for r in records]
    loop = asyncio.get_running_loop()

    async def one(due: float, body: bytes) -> tuple[float, ...]:
        sent = loop.time()
        status, answer = await pool.post(body)
        done = loop.time()
        server_ms = float(json.loads(answer).get("latency_ms", "nan")) if status == 200 else float("nan")
        return due, sent, done, float(status), server_ms

    start = loop.time() + 0.2
    tasks = []
    for i, body in enumerate(bodies):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, body)))
    return list(await asyncio.gather(*tasks))


def _run_driver(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    spec_path, out_path = scratch / "driver-spec.json", scratch / "driver-out.json"
    spec_path.write_text(json.dumps(spec))
    subprocess.run(
        [sys.executable, "-m", "benchmarks.http_scoring", "drive", str(spec_path), str(out_path)],
        cwd=REPO_ROOT, check=True,
    )
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


# -- results -----------------------------------------------------------------------------------------------


def _summarise(plan: Plan, phases: dict[str, Any], baseline: dict[str, Any], calls_during_load: float) -> dict[str, Any]:
    sequential = np.array([s for s, _ in phases["sequential"]])
    seq_ok = sum(code == 200 for _, code in phases["sequential"])
    loaded = np.array(phases["open_loop"], dtype=np.float64)
    counted = loaded[loaded[:, 0] >= loaded[0, 0] + plan.load_warmup_s]
    from_due, from_send = counted[:, 2] - counted[:, 0], counted[:, 2] - counted[:, 1]
    ok = counted[:, 3] == 200
    span = counted[:, 2].max() - counted[:, 1].min()
    batch_rows = sum(rows for _, _, _, rows in phases["batches"])
    batch_time = sum(t for t, _, _, _ in phases["batches"])
    inproc_single = baseline["score_one"]
    http_batch_tps = batch_rows / batch_time if batch_time else float("nan")
    open_loop_p99 = percentile_ms(from_due, 99)
    return {
        "sequential": {
            "requests": len(sequential),
            "ok": seq_ok,
            "p50_ms": percentile_ms(sequential, 50),
            "p99_ms": percentile_ms(sequential, 99),
            "http_overhead_p50_ms": percentile_ms(sequential, 50) - inproc_single["p50_ms"],
            "over_in_process_p50": percentile_ms(sequential, 50) / inproc_single["p50_ms"],
        },
        "open_loop": {
            "target_rate": plan.rate,
            "seconds": plan.load_seconds,
            "requests_sent": len(loaded),
            "requests_counted": len(counted),
            "answered_rate": len(counted) / span if span > 0 else float("nan"),
            "non_200": int((~ok).sum()),
            "p50_ms": percentile_ms(from_due, 50),
            "p90_ms": percentile_ms(from_due, 90),
            "p99_ms": open_loop_p99,
            "p999_ms": percentile_ms(from_due, 99.9),
            "max_ms": float(from_due.max() * 1000.0),
            "p50_from_send_ms": percentile_ms(from_send, 50),
            "p99_from_send_ms": percentile_ms(from_send, 99),
            "server_p50_ms": float(np.nanpercentile(counted[:, 4], 50)),
            "server_p99_ms": float(np.nanpercentile(counted[:, 4], 99)),
            "requests_per_scorer_call": len(loaded) / calls_during_load if calls_during_load else float("nan"),
            "p99_over_in_process_p99": open_loop_p99 / inproc_single["p99_ms"],
        },
        "batches": {
            "batch_size": plan.batch_size,
            "batches": len(phases["batches"]),
            "rows_scored": sum(scored for _, _, scored, _ in phases["batches"]),
            "tx_per_s": http_batch_tps,
            "p50_ms": percentile_ms([t for t, _, _, _ in phases["batches"]], 50),
            "over_in_process": http_batch_tps / baseline["score_batch"]["tx_per_s"],
        },
    }


def _print_tables(result: dict[str, Any], console: Console) -> None:
    base, http = result["in_process"], result["http"]
    table = Table(title="HTTP scoring vs in-process (same workspace, same run)")
    for column in ("measurement", "p50 ms", "p99 ms", "tx/s", "vs in-process"):
        table.add_column(column, justify="right" if column != "measurement" else "left")
    table.add_row("in process: score_one", f"{base['score_one']['p50_ms']:.2f}", f"{base['score_one']['p99_ms']:.2f}",
                  "", "1x")
    seq = http["sequential"]
    table.add_row("HTTP single, one at a time", f"{seq['p50_ms']:.2f}", f"{seq['p99_ms']:.2f}", "",
                  f"p50 {seq['over_in_process_p50']:.2f}x (+{seq['http_overhead_p50_ms']:.2f} ms)")
    load = http["open_loop"]
    table.add_row(f"HTTP single, open loop {load['target_rate']:.0f}/s", f"{load['p50_ms']:.2f}",
                  f"{load['p99_ms']:.2f}", f"{load['answered_rate']:.0f}",
                  f"p99 {load['p99_over_in_process_p99']:.2f}x")
    table.add_row(f"in process: score_batch x{base['score_batch']['batch_size']:,}",
                  f"{base['score_batch']['p50_ms']:.1f}", "", f"{base['score_batch']['tx_per_s']:,.0f}", "1x")
    batches = http["batches"]
    table.add_row(f"HTTP batch x{batches['batch_size']:,}", f"{batches['p50_ms']:.1f}", "",
                  f"{batches['tx_per_s']:,.0f}", f"{batches['over_in_process']:.2f}x")
    console.print(table)
    console.print(
        f"open loop: {load['requests_counted']:,} requests counted ({load['non_200']} not 200), p90 "
        f"{load['p90_ms']:.2f} ms, p99.9 {load['p999_ms']:.2f} ms, max {load['max_ms']:.1f} ms; from the "
        f"actual send p50/p99 {load['p50_from_send_ms']:.2f}/{load['p99_from_send_ms']:.2f} ms; server-side "
        f"p50/p99 {load['server_p50_ms']:.2f}/{load['server_p99_ms']:.2f} ms; "
        f"{load['requests_per_scorer_call']:.2f} requests per scorer call",
        highlight=False,
    )
    for aim in result["aims"]:
        verdict = "[green]met[/green]" if aim["met"] else "[red]not met[/red]"
        console.print(f"aim: {aim['aim']}: {aim['value']:.2f} {aim['unit']} -> {verdict}")
    conservation = result["conservation"]
    console.print(
        f"conservation after shutdown: {conservation['sent']:,} sent = {conservation['scored']:,} scored + "
        f"{conservation['dead_lettered']:,} dead-lettered: {'holds' if conservation['holds'] else 'BROKEN'}",
        highlight=False,
    )


def run(options: BenchOptions) -> dict[str, Any]:
    """Run the HTTP scoring benchmark; print its tables; return the results."""
    plan = QUICK if options.quick else FULL
    console = Console() if Console().is_terminal else Console(width=150)
    started = time.perf_counter()

    def step(what: str) -> None:
        console.print(f"[{time.perf_counter() - started:5.0f} s] {what}", highlight=False)

    with tempfile.TemporaryDirectory(prefix="selfheal-http-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        step("setup: simulate, train + profile a champion, log a month of history")
        template, slices, info = _setup(plan, scratch, console)
        step("baseline: score_one and score_batch in this process")
        baseline = _baseline(template, scratch, slices)
        home = scratch / "served"
        shutil.copytree(template, home)
        step("starting selfheal serve")
        process, record, stderr = _start_service(home)
        try:
            spec = {"url": record.url, "warmup": slices.warmup, "sequential": slices.sequential, "load": [],
                    "rate": plan.rate, "batches": []}
            step(f"driver process: {len(slices.warmup)} warm-up + {len(slices.sequential)} sequential requests")
            phases = _run_driver(spec, scratch)
            before = _scorer_calls(record.url)
            step(f"driver process: open loop at {plan.rate:.0f}/s for {plan.load_seconds:.0f} s")
            loaded = _run_driver({**spec, "warmup": [], "sequential": [], "load": slices.load}, scratch)
            calls_during_load = _scorer_calls(record.url) - before
            step(f"driver process: {len(slices.batches)} batches of {plan.batch_size:,}")
            batched = _run_driver({**spec, "warmup": [], "sequential": [], "batches": slices.batches}, scratch)
        finally:
            code = _stop_service(process)
        if code != 0:
            raise RuntimeError(f"selfheal serve exited with {code}: {''.join(stderr)}")
        phases.update(open_loop=loaded["open_loop"], batches=batched["batches"])
        sent = len(slices.warmup) + len(slices.sequential) + len(slices.load) + sum(len(b) for b in slices.batches)
        conservation = _conservation(home, sent)
    http = _summarise(plan, phases, baseline, calls_during_load)
    result: dict[str, Any] = {
        "quick": options.quick,
        "setup": info,
        "in_process": baseline,
        "http": http,
        "aims": [
            {"aim": f"single-transaction p99 at {plan.rate:.0f} requests/s <= {AIM_P99_MS:g} ms",
             "value": http["open_loop"]["p99_ms"], "unit": "ms", "met": http["open_loop"]["p99_ms"] <= AIM_P99_MS},
        ],
        "conservation": conservation,
    }
    _print_tables(result, console)
    return result


def _driver_main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "drive":
        print("usage: python -m benchmarks.http_scoring drive SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    Path(argv[2]).write_text(json.dumps(_drive(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(_driver_main(sys.argv[1:]))
