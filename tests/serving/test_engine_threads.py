"""The engine's thread count: all cores only when they make the model's decode step clearly faster."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from fcmistral.serving.engine.threads import MIN_STEP_S, SLOW_STEP_S, engine_threads


class TimedModel(torch.nn.Module):
    """A model whose one-token step takes ``step_s[threads]`` seconds (the prompt costs nothing);
    it records the thread counts its steps ran with."""

    def __init__(self, step_s: dict[int, float]) -> None:
        super().__init__()
        self.step_s, self.steps = step_s, []
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, input_ids, **kwargs):
        if input_ids.shape[1] == 1:
            self.steps.append(torch.get_num_threads())
            time.sleep(self.step_s[torch.get_num_threads()])
        return SimpleNamespace(logits=torch.zeros(1, input_ids.shape[1], 4))


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_all_cores_when_they_make_the_step_clearly_faster():
    model = TimedModel({4: MIN_STEP_S, 3: 3 * MIN_STEP_S})
    assert engine_threads(model, 4).startswith("engine threads: 4 of 4 cores")
    assert torch.get_num_threads() == 4
    assert set(model.steps) == {3, 4}


def test_one_core_is_left_to_the_http_process_when_all_cores_are_no_faster():
    model = TimedModel({2: 2 * MIN_STEP_S, 1: 2 * MIN_STEP_S})
    assert engine_threads(model, 2).startswith("engine threads: 1 of 2 cores")
    assert torch.get_num_threads() == 1


def test_a_short_step_leaves_a_core_to_the_http_process_though_all_cores_are_faster():
    model = TimedModel({2: MIN_STEP_S / 10, 1: MIN_STEP_S / 2})
    assert engine_threads(model, 2).startswith("engine threads: 1 of 2 cores")


def test_a_slow_step_takes_all_cores_without_timing_them():
    model = TimedModel({2: SLOW_STEP_S, 1: SLOW_STEP_S})
    assert engine_threads(model, 2).startswith("engine threads: 2 of 2 cores")
    assert set(model.steps) == {1}  # all cores never timed


def test_one_core_is_all_there_is():
    model = TimedModel({1: 0.01})
    assert engine_threads(model, 1).startswith("engine threads: 1 of 1 cores")
    assert model.steps == []
