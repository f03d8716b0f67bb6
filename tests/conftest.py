"""Shared fixtures: a small simulated world and a workspace with a trained champion."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from monitor.reference import train_register_and_profile
from scorer.simulate import Simulator, WorldConfig
from scorer.train import TrainParams
from selfheal.app import Platform
from store import Workspace

if TYPE_CHECKING:
    from tests.fake_openai import FakeOpenAI

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "handbook"
SMALL_WORLD = WorldConfig(seed=11, customers=500, terminals=1000)
HISTORY_DAYS = 45
FAST_PARAMS = TrainParams(n_estimators=60, early_stopping_rounds=10, nthread=1)


@dataclass
class SmallWorld:
    simulator: Simulator
    history: pd.DataFrame
    template: Path  # a workspace with v1 trained and promoted; copy it, never write to it


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> SmallWorld:
    simulator = Simulator(SMALL_WORLD)
    history = simulator.generate(0, HISTORY_DAYS)
    template = tmp_path_factory.mktemp("template-workspace")
    with Platform(Workspace(template)) as platform:
        train_register_and_profile(platform.registry, history, params=FAST_PARAMS, actor="test", reason="fixture")
    return SmallWorld(simulator, history, template)


@pytest.fixture
def platform(small_world: SmallWorld, tmp_path: Path) -> Iterator[Platform]:
    """A fresh copy of the trained workspace, its feature state warmed with the history."""
    home = tmp_path / "workspace"
    shutil.copytree(small_world.template, home)
    with Platform(Workspace(home)) as opened:
        opened.scorer.features.observe(small_world.history)
        yield opened


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py); call `.script(...)` first.

    Teardown raises if a request went unscripted or a scripted turn was never requested.
    """
    from tests.fake_openai import FakeOpenAI  # imports the openai SDK (~1 s): only for tests that use it

    with FakeOpenAI() as server:
        yield server
