"""Trained worlds for the harness, built once per (world, seed, size) and cached on disk.

Training a champion and profiling it is the slow part of setting up a scenario, and every scenario that
shares a world (seed, sizes, history, label delay) starts from the same trained workspace. So the first run
builds a *template* workspace (v1 trained, registered and profiled at the end of the history, in simulated
time) plus the history as Parquet under the cache folder; every case copies the template and plays on the
copy. A template is written aside and renamed into place, so two workers building the same world at once
cannot leave a half-written one behind.

Sizes: ``default`` plays the world as the scenario file gives it with the production training parameters;
``small`` caps it at 1000 customers / 2000 terminals / 45 days of history with quick training (the world
the monitor's and responder's tests prove every fault is detectable in), for `make test`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, cast

import pandas as pd

from evals.platform import PlatformFactory
from evals.scenario import WorldSpec
from monitor.profile import PROFILE_FORMAT
from monitor.reference import train_register_and_profile
from scorer.simulate import Simulator, WorldConfig
from scorer.train import TrainParams

__all__ = ["SIZES", "Size", "TrainedWorld", "default_cache_dir", "parse_size", "sized_world", "trained_world"]

Size = Literal["small", "default"]
SIZES: Final[tuple[str, ...]] = ("small", "default")


def parse_size(text: str) -> Size:
    """`text` as a `Size`; ValueError naming the sizes otherwise (the CLIs' one check)."""
    if text not in SIZES:
        raise ValueError(f"unknown size {text!r}: {' or '.join(SIZES)}")
    return cast(Size, text)
# Bump when what a template holds changes (training, profiling, layout): old templates are then ignored.
CACHE_VERSION: Final = 1
# The small size is the world the monitor's and the responder's tests play in (tests/conftest.py builds
# its MEDIUM_WORLD from these), so what they prove detectable is what the small suite plays.
SMALL_CAP: Final = {"customers": 1000, "terminals": 2000, "history_days": 45}
QUICK_PARAMS: Final = TrainParams(n_estimators=60, early_stopping_rounds=10, nthread=1)
_FULL: Final = TrainParams(nthread=1)


@dataclass(frozen=True)
class TrainedWorld:
    """A world ready to play: its simulator, its history, and the template workspace to copy."""

    spec: WorldSpec  # as played (seed and size applied)
    template: Path  # workspace with v1 champion; copy it, never write to it
    history_path: Path

    @property
    def simulator(self) -> Simulator:
        return Simulator(world_config(self.spec))

    @property
    def live_start(self) -> datetime:
        start = pd.Timestamp(world_config(self.spec).start_date) + pd.Timedelta(days=self.spec.history_days)
        return start.to_pydatetime()

    def history(self) -> pd.DataFrame:
        return pd.read_parquet(self.history_path)


def world_config(spec: WorldSpec) -> WorldConfig:
    return WorldConfig(
        seed=spec.seed,
        customers=spec.customers,
        terminals=spec.terminals,
        label_delay_days=spec.label_delay_days,
    )


def sized_world(spec: WorldSpec, size: Size, seed_offset: int = 0) -> WorldSpec:
    """The world a case plays: the file's world at ``size``, seed shifted by ``seed_offset``."""
    changes: dict[str, int] = {"seed": spec.seed + seed_offset}
    if size == "small":
        changes.update({key: min(getattr(spec, key), cap) for key, cap in SMALL_CAP.items()})
    return spec.model_copy(update=changes)


def default_cache_dir() -> Path:
    """``$SELFHEAL_EVAL_CACHE``, else ``~/.cache/selfheal/eval-worlds``."""
    env = os.environ.get("SELFHEAL_EVAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "selfheal" / "eval-worlds"


def _params(size: Size) -> TrainParams:
    return QUICK_PARAMS if size == "small" else _FULL


def _key(spec: WorldSpec, size: Size) -> str:
    trained = spec.model_dump(exclude={"live_days"})  # live days do not change the template
    text = json.dumps(
        {"v": CACHE_VERSION, "profile": PROFILE_FORMAT, "world": trained, "params": _params(size).model_dump()}, sort_keys=True
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"seed{spec.seed}-{spec.customers}c-{spec.history_days}d-{digest}"


def trained_world(
    spec: WorldSpec, size: Size, open_platform: PlatformFactory, cache_dir: Path | None = None
) -> TrainedWorld:
    """The trained template for ``spec`` (already sized), built on first use and cached under ``cache_dir``."""
    cache = cache_dir or default_cache_dir()
    folder = cache / _key(spec, size)
    world = TrainedWorld(spec, folder / "template", folder / "history.parquet")
    if (folder / "done").exists():
        return world
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache))
    try:
        _build(spec, size, building, world.live_start, open_platform)
        (building / "done").write_text("ok\n")
        try:
            building.rename(folder)
        except OSError:  # another worker finished first: theirs is as good as ours
            if not (folder / "done").exists():
                raise
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return world


def _build(
    spec: WorldSpec, size: Size, folder: Path, live_start: datetime, open_platform: PlatformFactory
) -> None:
    simulator = Simulator(world_config(spec))
    history = simulator.generate(0, spec.history_days)
    history.to_parquet(folder / "history.parquet", index=False)
    # v1 is registered at the end of the history in simulated time, so every run records the same thing.
    platform = open_platform(folder / "template", lambda: live_start)
    try:
        train_register_and_profile(
            platform.registry, history, params=_params(size), actor="evals", reason="scenario world champion"
        )
    finally:
        platform.close()
