"""The engine's thread count: all cores when the model's decode step is long, else one left to HTTP."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from fcmistral.serving.engine.threads import MIN_STEP_S, engine_threads


class TimedModel(torch.nn.Module):
    """A model whose one-token step takes ``step_s`` seconds (the prompt costs nothing); it records
    the thread counts its steps ran with."""

    def __init__(self, step_s: float) -> None:
        super().__init__()
        self.step_s, self.steps = step_s, []
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, input_ids, **kwargs):
        if input_ids.shape[1] == 1:
            self.steps.append(torch.get_num_threads())
            time.sleep(self.step_s)
        return SimpleNamespace(logits=torch.zeros(1, input_ids.shape[1], 4))


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_long_decode_step_takes_all_cores():
    model = TimedModel(MIN_STEP_S)
    assert engine_threads(model, 4).startswith("engine threads: 4 of 4 cores")
    assert torch.get_num_threads() == 4
    assert set(model.steps) == {3}  # timed with all cores but one


def test_a_short_decode_step_leaves_a_core_to_the_http_process():
    model = TimedModel(MIN_STEP_S / 10)
    assert engine_threads(model, 2).startswith("engine threads: 1 of 2 cores")
    assert torch.get_num_threads() == 1


def test_one_core_is_all_there_is():
    model = TimedModel(MIN_STEP_S)
    assert engine_threads(model, 1).startswith("engine threads: 1 of 1 cores")
    assert model.steps == []


def test_engine_threads_given_are_taken_without_measuring():
    model = TimedModel(MIN_STEP_S / 10)
    assert engine_threads(model, 4, given=3) == "engine threads: 3 of 4 cores (--engine_threads)"
    assert torch.get_num_threads() == 3 and model.steps == []
