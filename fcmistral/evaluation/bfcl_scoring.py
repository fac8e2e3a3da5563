"""Scoring replies to BFCL questions with BFCL's own AST checker, and BFCL's summary figures.

The verdict on a reply follows BFCL's runner (``bfcl_eval/eval_checker/eval_runner.py``):
- call categories: the reply's calls (``format.calls.parse_calls``: every ``<functioncall>``)
  go to ``ast_checker`` from nvidia-bfcl (the same Python checking code as bfcl-eval 2026.3.23,
  which cannot be imported without its API clients). It checks the function name, every required
  argument present, no unknown one, each value among the acceptable ones (``""`` in the list: the
  argument may be left out), BFCL's type rules (an int is accepted for a float; strings compared
  without case, spaces and ``,./-_*^``), and for parallel categories matches calls order-free.
  A reply with no call, or an unreadable one, fails as BFCL's decoder failure does.
- irrelevance categories: right when the reply holds no readable call (BFCL: "decoder success" is
  the error); ``live_relevance``: right when it holds at least one.
Function names were shown with ``.`` replaced by ``_`` (see ``bfcl_data``); a called name that is
such a renamed function is mapped back before checking, which is what BFCL's checker does from
the other side for models whose names it converts.

The summary groups categories as BFCL's leaderboard does, over the categories that were run:
non-live AST = unweighted mean of simple, multiple, parallel, parallel_multiple (BFCL's "simple"
also averages Java and JavaScript, which are not run here: their call syntax is not glaive's);
live AST = mean of the live call categories weighted by their sizes; hallucination = unweighted
mean of irrelevance and live_irrelevance; overall = the equally weighted mean of those groups
(BFCL weighs them 10/10/10 beside multi-turn and agentic groups, which are not run here).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from fcmistral.evaluation.bfcl_data import CATEGORY_FILES, NO_ANSWER_CATEGORIES, bfcl_module
from fcmistral.format.calls import try_parse_calls

MODEL_NAME = "fcmistral"  # only used by BFCL to look up name conversions; names are mapped back here
NON_LIVE_AST = ("simple", "multiple", "parallel", "parallel_multiple")
LIVE_AST = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
HALLUCINATION = ("irrelevance", "live_irrelevance")
OUTCOMES = ("correct", "no_call", "parse_failure", "wrong_count", "wrong_function", "wrong_arguments", "hallucinated")


def _original_names(functions: list[dict[str, Any]]) -> dict[str, str]:
    return {re.sub(r"\.", "_", f["name"]): f["name"] for f in functions}


def _outcome(calls: list[dict[str, Any]], answer: list[dict[str, Any]]) -> str:
    """Why a checked reply failed, in the summary's terms."""
    if len(calls) != len(answer):
        return "wrong_count"
    if Counter(next(iter(c)) for c in calls) != Counter(next(iter(a)) for a in answer):
        return "wrong_function"
    return "wrong_arguments"


def judge_bfcl(record: dict[str, Any]) -> dict[str, Any]:
    """The verdict on one prediction record (its output, category, functions, possible answer)."""
    category = record["category"]
    parsed, error = try_parse_calls(record["output"])
    names = _original_names(record["functions"])
    calls = [{names.get(c.name, c.name): c.arguments} for c in parsed]
    verdict: dict[str, Any] = {"decoded_calls": calls, "parse_error": error, "checker_error": None}
    if category in NO_ANSWER_CATEGORIES:
        wants_call = category == "live_relevance"
        verdict["valid"] = bool(calls) == wants_call
        verdict["outcome"] = "correct" if verdict["valid"] else ("hallucinated" if calls else "no_call")
        return verdict
    if not calls:
        verdict["valid"] = False
        verdict["outcome"] = "no_call" if error == "no <functioncall> marker" else "parse_failure"
        return verdict
    checker = bfcl_module("bfcl.eval_checker.ast_eval.ast_checker").ast_checker
    checker_category = CATEGORY_FILES[category][0]  # the checker reads "parallel"/"multiple" in it
    try:
        result = checker(record["functions"], calls, record["possible_answer"], "Python", checker_category, MODEL_NAME)
    except Exception as err:  # noqa: BLE001 - a model's reply is arbitrary; BFCL's checker assumes sane shapes
        result = {"valid": False, "error_type": "checker_raised", "error": f"{type(err).__name__}: {err}"}
    verdict["valid"] = bool(result["valid"])
    verdict["outcome"] = "correct" if verdict["valid"] else _outcome(calls, record["possible_answer"])
    if not verdict["valid"]:
        verdict["checker_error"] = {"type": result.get("error_type"), "detail": str(result.get("error"))[:500]}
    return verdict


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_bfcl(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-category accuracy and outcome counts, and BFCL's group figures (see the module doc)."""
    per_category: dict[str, dict[str, Any]] = {}
    for category in CATEGORY_FILES:
        rows = [r for r in records if r["category"] == category]
        if rows:
            counts = Counter(r["outcome"] for r in rows)
            per_category[category] = {"n": len(rows), "accuracy": counts["correct"] / len(rows),
                                      **{o: counts[o] for o in OUTCOMES if o != "correct"}}

    def accuracy(category: str) -> float:
        return per_category[category]["accuracy"]

    run = [c for c in per_category]
    live = [c for c in LIVE_AST if c in per_category]
    groups = {
        "non_live_ast": _mean([accuracy(c) for c in NON_LIVE_AST if c in per_category]),
        "live_ast": (sum(accuracy(c) * per_category[c]["n"] for c in live) / sum(per_category[c]["n"] for c in live)
                     if live else None),
        "hallucination": _mean([accuracy(c) for c in HALLUCINATION if c in per_category]),
    }
    present = [v for v in groups.values() if v is not None]
    return {"n": len(records), "categories_run": run, "overall": _mean(present), **groups,
            "per_category": per_category}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def bfcl_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| overall | non-live AST | live AST | irrelevance (hallucination) | questions |",
        "|---|---|---|---|---|",
        f"| {_percent(summary['overall'])} | {_percent(summary['non_live_ast'])} | {_percent(summary['live_ast'])} | "
        f"{_percent(summary['hallucination'])} | {summary['n']} |",
        "",
        "| category | n | accuracy | no call | parse failures | wrong count | wrong function | wrong arguments "
        "| hallucinated calls |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for category, row in summary["per_category"].items():
        lines.append(f"| {category} | {row['n']} | {row['accuracy']:.1%} | {row['no_call']} | {row['parse_failure']} | "
                     f"{row['wrong_count']} | {row['wrong_function']} | {row['wrong_arguments']} | "
                     f"{row['hallucinated']} |")
    return "\n".join(lines) + "\n"
