"""The probes --call_eval_data scores at each evaluation of train.py and FSDP/train.py (fcmistral/evaluation/probes.py)."""

from __future__ import annotations

import pytest

from fcmistral.arguments import CallEvalArguments
from fcmistral.errors import UserError
from fcmistral.evaluation.probes import call_metrics, load_probes, probe_metrics
from fcmistral.prompt import ASSISTANT_TAG, FUNCTION_CALL_MARKER, format_call
from tests.conftest import REPO, read_jsonl


def test_probes_hold_calls_and_declines_and_score_each():
    rows = read_jsonl(REPO / "data" / "sample_heldout.jsonl")
    probes = load_probes(rows, 1000)
    calls, declines = [p for p in probes if p.gold], [p for p in probes if p.gold is None]
    assert len(calls) == 45 and declines and all(p.prompt.endswith(ASSISTANT_TAG) for p in probes)
    assert all(FUNCTION_CALL_MARKER not in p.prompt.split("USER:")[-1] for p in declines)
    right = [format_call(p.gold.name, p.gold.arguments) if p.gold else "I can't do that." for p in probes]
    assert call_metrics(right, probes) == {"call_accuracy": 1.0, "call_exact": 1.0, "no_call_accuracy": 1.0}
    calls_everything = [format_call(p.gold.name, p.gold.arguments) if p.gold else format_call("x", {}) for p in probes]
    metrics = call_metrics(calls_everything, probes)
    assert metrics["call_exact"] == 1.0 and metrics["no_call_accuracy"] == 0.0
    assert metrics["call_accuracy"] == len(calls) / len(probes)
    small = load_probes(rows, 10)  # a fixed sample keeps both kinds, in the file's proportion
    assert len(small) == 10 and 0 < sum(p.gold is None for p in small) < 10


def test_a_metric_of_a_kind_the_sample_lacks_is_a_clear_error():
    """One prompt of a file mostly of calls holds no decline: no_call_accuracy could never be computed, and
    picking the checkpoint by it would fail at the first evaluation, after the training's first steps."""
    rows = read_jsonl(REPO / "data" / "sample_heldout.jsonl")
    options = CallEvalArguments(call_eval_data="sample_heldout.jsonl", call_eval_limit=1)
    with pytest.raises(UserError, match="eval_no_call_accuracy: the 1 prompts scored .* hold none of that kind"):
        probe_metrics(options, rows, None, "eval_no_call_accuracy")
    assert callable(probe_metrics(options, rows, None, "eval_call_accuracy"))
