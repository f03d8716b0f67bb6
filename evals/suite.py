"""Run a suite: every scenario with every seed, in parallel worker processes, scored and summed up.

    results = run_suite(load_suite(dir), SuiteOptions(seeds=3), open_platform=my_factory)

Worlds are trained (or found in the cache) first, once per distinct (world, seed, size); then each case
(scenario x seed) plays on its own copy of its world's template. With ``workers`` > 1 cases run in
``spawn``-ed processes (DuckDB and LangGraph's SQLite saver are not fork-safe), so ``open_platform`` must
be a module-level function. LLM exchanges are recorded to / replayed from one folder per case
(``<dir>/<scenario>-seed<k>``), so replays do not depend on the order cases ran in.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evals.harness import baseline_flags, play_case
from evals.platform import PlatformFactory
from evals.scenario import Scenario
from evals.scoring import CaseResult, score_case, summarise
from evals.worlds import Size, TrainedWorld, default_cache_dir, sized_world, trained_world

if TYPE_CHECKING:
    from agent.llm.config import LLMConfig

__all__ = ["CaseTask", "SuiteError", "SuiteOptions", "SuiteResult", "run_case", "run_suite"]


class SuiteError(Exception):
    """The suite cannot run as asked (e.g. the LLM planner without an endpoint or recordings)."""

PlannerName = Literal["deterministic", "llm"]


@dataclass(frozen=True)
class SuiteOptions:
    """How to run a suite."""

    seeds: int = 1
    size: Size = "default"
    planner: PlannerName = "deterministic"
    workers: int = 1
    record: Path | None = None  # record every LLM exchange under this folder
    replay: Path | None = None  # answer every LLM request from recordings under this folder
    cache_dir: Path | None = None  # trained worlds and fault-free baselines
    work_dir: Path | None = None  # case workspaces (kept when given, else a temporary folder)
    runbooks_dir: Path | None = None
    llm_config: LLMConfig | None = None  # the endpoint for --planner llm; default: from the environment


@dataclass(frozen=True)
class CaseTask:
    """One case for a worker: everything it needs, picklable."""

    scenario: Scenario
    seed_offset: int
    world: TrainedWorld
    options: SuiteOptions
    home: Path
    open_platform: PlatformFactory
    baseline_days: int = 0  # days of the fault-free baseline computed for this world (0: none needed)


@dataclass
class SuiteResult:
    options: SuiteOptions
    cases: list[CaseResult]
    summary: dict[str, Any]
    wall_seconds: float

    def to_json(self) -> dict[str, Any]:
        options = {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in self.options.__dict__.items()
            if k != "llm_config"  # holds the key, and belongs to the machine, not the result
        }
        return {
            "summary": {**self.summary, "suite_wall_seconds": round(self.wall_seconds, 1)},
            "options": options,
            "cases": [c.to_json() for c in self.cases],
        }


def _llm_client(options: SuiteOptions, case_name: str) -> Any:
    """The LLM client for one case, or None for the deterministic planner."""
    if options.planner != "llm":
        return None
    from agent.llm import LLMClient, LLMConfig, Recorder, Replayer

    config = options.llm_config or LLMConfig.from_env()
    if options.replay is not None:
        return LLMClient(config, exchanges=Replayer(options.replay / case_name))
    if not config.configured:
        raise SuiteError("--planner llm needs OPENAI_BASE_URL / OPENAI_API_KEY, or --replay DIR")
    exchanges = Recorder(options.record / case_name) if options.record is not None else None
    return LLMClient(config, exchanges=exchanges)


def case_name(scenario: Scenario, seed_offset: int) -> str:
    return f"{scenario.id}-seed{seed_offset}"


def run_case(task: CaseTask, progress: Callable[[int, int], None] | None = None) -> CaseResult:
    """Play and score one case (what a worker process runs)."""
    options = task.options
    cache = options.cache_dir or default_cache_dir()
    baseline = None
    if task.baseline_days and any(e.recovery_required for e in task.scenario.expect):
        baseline = baseline_flags(task.world, task.baseline_days, cache, task.open_platform)
    llm = _llm_client(options, case_name(task.scenario, task.seed_offset))
    try:
        observation = play_case(
            task.scenario, task.world, task.home, task.open_platform, planner=options.planner, llm=llm,
            runbooks_dir=options.runbooks_dir, progress=progress,
        )  # fmt: skip
    finally:
        if llm is not None:
            llm.close()
    return score_case(task.scenario, observation, baseline)


def run_suite(
    scenarios: list[Scenario],
    options: SuiteOptions,
    open_platform: PlatformFactory,
    *,
    on_world: Callable[[str], None] | None = None,
    on_case: Callable[[CaseResult, int, int], None] | None = None,
) -> SuiteResult:
    """Play every scenario with ``options.seeds`` seeds and score them.

    Args:
        scenarios: The suite.
        options: Seeds, size, planner, workers, record/replay folders.
        open_platform: See `evals.platform` (a module-level function when ``workers`` > 1).
        on_world: Called with a description before each world is trained or loaded.
        on_case: Called after each case with (its result, cases done, cases in all).

    Raises:
        ReplayMiss: With ``replay``, a request that was never recorded (never a silent live call).
    """
    started = time.perf_counter()
    cache = options.cache_dir or default_cache_dir()
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="selfheal-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    worlds: dict[Any, TrainedWorld] = {}
    tasks: list[CaseTask] = []
    for scenario in scenarios:
        for offset in range(options.seeds):
            spec = sized_world(scenario.world, options.size, offset)
            key = spec.model_dump_json(exclude={"live_days"})
            if key not in worlds:
                if on_world is not None:
                    on_world(f"world seed {spec.seed}, {spec.customers} customers, {spec.history_days} days")
                worlds[key] = trained_world(spec, options.size, open_platform, cache)
            home = work / case_name(scenario, offset)
            if home.exists():
                shutil.rmtree(home)
            tasks.append(CaseTask(scenario, offset, worlds[key], options, home, open_platform))
    # One fault-free baseline per world, as long as its longest scenario, made before the workers start.
    longest: dict[Path, int] = {}
    for task in tasks:
        if any(e.recovery_required for e in task.scenario.expect):
            longest[task.world.template] = max(
                longest.get(task.world.template, 0), task.scenario.world.live_days
            )
    for world in {t.world.template: t.world for t in tasks}.values():
        if world.template in longest:
            baseline_flags(world, longest[world.template], cache, open_platform)
    tasks = [replace(t, baseline_days=longest.get(t.world.template, 0)) for t in tasks]
    results: list[CaseResult] = []
    try:
        if options.workers <= 1:
            for task in tasks:
                results.append(run_case(task))
                if on_case is not None:
                    on_case(results[-1], len(results), len(tasks))
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=options.workers, mp_context=context) as pool:
                futures = [pool.submit(run_case, task) for task in tasks]
                for future in as_completed(futures):
                    results.append(future.result())
                    if on_case is not None:
                        on_case(results[-1], len(results), len(tasks))
    finally:
        if options.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    results.sort(key=lambda r: (r.id, r.seed))
    return SuiteResult(options, results, summarise(results, options.seeds), time.perf_counter() - started)
