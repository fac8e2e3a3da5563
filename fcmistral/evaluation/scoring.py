"""Call-by-call scoring of predicted function calls against gold calls.

The headline metric is Nexusflow's: exact match of function name and argument dict, a parse
failure counted as wrong (leaving parse failures out of the count would flatter a model that
writes broken calls). Reported
beside it: function-name accuracy, a relaxed argument match, parse failures, and per gold
function which function was called instead.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from fcmistral.format.calls import try_parse_call
from fcmistral.prompt import FunctionCall

NO_CALL = "<no call>"
UNPARSEABLE = "<unparseable>"


def _relaxed(value: Any) -> Any:
    """Numbers and numeric strings compare as numbers; strings ignore case and outer spaces."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            return text.lower()
    if isinstance(value, list):
        return [_relaxed(v) for v in value]
    if isinstance(value, dict):
        return {k: _relaxed(v) for k, v in value.items()}
    return value


def arguments_match(predicted: dict[str, Any], gold: dict[str, Any], relaxed: bool = False) -> bool:
    if relaxed:
        return _relaxed(predicted) == _relaxed(gold)
    return predicted == gold


def judge(output: str, gold: FunctionCall) -> dict[str, Any]:
    """The verdict on one raw model output: what was called and whether it matches."""
    call, error = try_parse_call(output)
    if call is None:
        called = NO_CALL if error == "no <functioncall> marker" else UNPARSEABLE
        return {"parsed_call": None, "called": called, "parse_error": error,
                "name_match": False, "exact_match": False, "relaxed_match": False}
    name_ok = call.name == gold.name
    return {
        "parsed_call": {"name": call.name, "arguments": call.arguments},
        "called": call.name,
        "parse_error": None,
        "name_match": name_ok,
        "exact_match": name_ok and arguments_match(call.arguments, gold.arguments),
        "relaxed_match": name_ok and arguments_match(call.arguments, gold.arguments, relaxed=True),
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and per-function figures over prediction records (``judge`` output + gold)."""
    n = len(records)
    rate = lambda key: sum(r[key] for r in records) / n if n else 0.0  # noqa: E731
    per_function: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "exact": 0, "name": 0, "instead": Counter()})
    for r in records:
        row = per_function[r["gold_call"]["name"]]
        row["n"] += 1
        row["exact"] += r["exact_match"]
        row["name"] += r["name_match"]
        if not r["name_match"]:
            row["instead"][r["called"]] += 1
    return {
        "n": n,
        "exact_match": rate("exact_match"),
        "name_accuracy": rate("name_match"),
        "relaxed_match": rate("relaxed_match"),
        "parse_failures": sum(r["called"] == UNPARSEABLE for r in records),
        "no_call": sum(r["called"] == NO_CALL for r in records),
        "per_function": {
            name: {"n": v["n"], "exact_match": v["exact"] / v["n"], "name_accuracy": v["name"] / v["n"],
                   "called_instead": dict(v["instead"].most_common())}
            for name, v in sorted(per_function.items())
        },
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| queries | exact match | name accuracy | relaxed match | parse failures | no call |",
        "|---|---|---|---|---|---|",
        f"| {summary['n']} | {summary['exact_match']:.1%} | {summary['name_accuracy']:.1%} | "
        f"{summary['relaxed_match']:.1%} | {summary['parse_failures']} | {summary['no_call']} |",
        "",
        "| gold function | n | exact match | name accuracy | called instead |",
        "|---|---|---|---|---|",
    ]
    for name, row in summary["per_function"].items():
        instead = ", ".join(f"{k} ×{v}" for k, v in row["called_instead"].items()) or "-"
        lines.append(f"| {name} | {row['n']} | {row['exact_match']:.1%} | {row['name_accuracy']:.1%} | {instead} |")
    return "\n".join(lines) + "\n"
