"""Call-by-call scoring of predicted function calls against gold calls.

The headline metric is Nexusflow's: exact match of function name and argument dict, a parse
failure counted as wrong (leaving parse failures out of the count would flatter a model that
writes broken calls), and so is a reply with more than the one call asked for. Reported beside it:
function-name accuracy (of the first call), a relaxed argument match, parse failures, and per
gold function which function was called instead. Declining items (a gold of no call: the row offers
functions and declines) are counted apart: right when the reply holds no call marker at all, their
share reported as ``declines``, beside the figures of the call items.

Exact match is type-strict, as BFCL's checker is: ``False`` is not ``0`` and ``3.0`` is not the
integer ``3``. The one allowance is BFCL's too: an integer where the gold value is a float of the
same value (Python would promote it; a model writing ``20`` for ``20.0`` has the value right).
Tuples and sets in Python references are read as lists (see ``format.pycall``). The relaxed
match stays lenient: numbers and numeric strings compare as numbers, strings ignore case and
outer spaces, a boolean matches its name as a string (but not 0 or 1).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from fcmistral.format.calls import try_parse_calls
from fcmistral.prompt import FunctionCall

NO_CALL = "<no call>"
UNPARSEABLE = "<unparseable>"


def _relaxed(value: Any) -> Any:
    """Numbers and numeric strings compare as numbers; strings ignore case and outer spaces;
    booleans compare as the strings "true"/"false" (never as 1/0, which Python's == would allow)."""
    if isinstance(value, bool):
        return str(value).lower()
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


def strictly_equal(predicted: Any, gold: Any) -> bool:
    """Equal values of the same JSON type, except an int for an equal float (see the module doc)."""
    if isinstance(gold, bool) or isinstance(predicted, bool):
        return type(predicted) is type(gold) and predicted == gold
    if isinstance(gold, float) and isinstance(predicted, (int, float)):
        return float(predicted) == gold
    if isinstance(gold, dict):
        return (isinstance(predicted, dict) and predicted.keys() == gold.keys()
                and all(strictly_equal(predicted[k], gold[k]) for k in gold))
    if isinstance(gold, list):
        return (isinstance(predicted, list) and len(predicted) == len(gold)
                and all(strictly_equal(p, g) for p, g in zip(predicted, gold)))
    return type(predicted) is type(gold) and predicted == gold


def arguments_match(predicted: dict[str, Any], gold: dict[str, Any], relaxed: bool = False) -> bool:
    if relaxed:
        return _relaxed(predicted) == _relaxed(gold)
    return strictly_equal(predicted, gold)


def judge(output: str, gold: FunctionCall | None) -> dict[str, Any]:
    """The verdict on one raw model output: what was called and whether it matches (``gold`` None:
    right when the reply holds no call; a broken call is a call, so wrong)."""
    calls, error = try_parse_calls(output)
    if not calls:
        called = NO_CALL if error == "no <functioncall> marker" else UNPARSEABLE
        right = gold is None and called == NO_CALL
        return {"parsed_calls": [], "called": called, "parse_error": error,
                "name_match": right, "exact_match": right, "relaxed_match": right}
    call, single = calls[0], len(calls) == 1
    name_ok = gold is not None and call.name == gold.name  # any call is wrong where the row declines
    return {
        "parsed_calls": [{"name": c.name, "arguments": c.arguments} for c in calls],
        "called": call.name,
        "parse_error": None,
        "name_match": name_ok,
        "exact_match": single and name_ok and arguments_match(call.arguments, gold.arguments),
        "relaxed_match": single and name_ok and arguments_match(call.arguments, gold.arguments, relaxed=True),
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and per-function figures over the call items' prediction records (``judge`` output +
    gold), and the share of declining items that made no call."""
    declining = [r for r in records if r["gold_call"] is None]
    records = [r for r in records if r["gold_call"] is not None]
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
        "declines": {"n": len(declining), "accuracy": sum(r["exact_match"] for r in declining) / len(declining)
                     if declining else 0.0},
        "per_function": {
            name: {"n": v["n"], "exact_match": v["exact"] / v["n"], "name_accuracy": v["name"] / v["n"],
                   "called_instead": dict(v["instead"].most_common())}
            for name, v in sorted(per_function.items())
        },
    }


def _declines_lines(declines: dict[str, Any]) -> list[str]:
    if not declines.get("n"):
        return []
    return [f"Declining items (functions offered, the right reply calls none): {declines['accuracy']:.1%} of "
            f"{declines['n']} made no call.", ""]


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| queries | exact match | name accuracy | relaxed match | parse failures | no call |",
        "|---|---|---|---|---|---|",
        f"| {summary['n']} | {summary['exact_match']:.1%} | {summary['name_accuracy']:.1%} | "
        f"{summary['relaxed_match']:.1%} | {summary['parse_failures']} | {summary['no_call']} |",
        "",
        *_declines_lines(summary.get("declines", {})),
        "| gold function | n | exact match | name accuracy | called instead |",
        "|---|---|---|---|---|",
    ]
    for name, row in summary["per_function"].items():
        instead = ", ".join(f"{k} ×{v}" for k, v in row["called_instead"].items()) or "-"
        lines.append(f"| {name} | {row['n']} | {row['exact_match']:.1%} | {row['name_accuracy']:.1%} | {instead} |")
    return "\n".join(lines) + "\n"
