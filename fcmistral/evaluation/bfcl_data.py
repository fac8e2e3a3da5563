"""The Berkeley Function Calling Leaderboard's questions, rendered in the glaive prompt.

Data: the ``bfcl-eval`` package (``bfcl_eval/data/BFCL_v4_*.json``), else ``nvidia-bfcl``
(``bfcl/data/BFCL_v3_*.json``), else a folder given by the user holding the same files: JSON
Lines of ``{id, question, function}``, with ``possible_answer/`` holding ``{id, ground_truth}``
(irrelevance categories have no answers: the right reply is no call). Both packages install with
``pip install --no-deps``; their heavy dependencies are not needed to read the files.

Rendering follows what BFCL's own handlers do for a local model with its own call format
(granite, glm, minicpm_fc: ``convert_to_tool(functions, GORILLA_TO_OPENAPI, ModelStyle.OSSMODEL)``):
BFCL's Python type names become JSON-schema types (``dict`` → object, ``float`` → number with
``"format": "float"`` and a note in the description, ``tuple`` → array, ``any`` → string), and a dot
in a function name becomes ``_`` (the checker maps it back: see ``bfcl_scoring``). BFCL's helper
is not imported because its module needs tree_sitter and tenacity; this is the same logic over
BFCL's own type table, and a test compares the two on every function of the categories below.
Two deviations, both on inputs where BFCL's helper raises: a float without a description, an
item type missing from the table (both become what BFCL does for other missing entries). A
``system`` message of a question is turned into user
text, as BFCL does for models without a system role: the glaive SYSTEM text is the function list.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcmistral.errors import UserError, first_line
from fcmistral.inputs import read_utf8
from fcmistral.prompt import Turn, build_system_prompt, generation_prompt

# Category on the command line -> file stem in BFCL v4, then v3 (v3 calls simple_python "simple").
CATEGORY_FILES = {
    "simple": ("simple_python", "simple"),
    "multiple": ("multiple",),
    "parallel": ("parallel",),
    "parallel_multiple": ("parallel_multiple",),
    "irrelevance": ("irrelevance",),
    "live_simple": ("live_simple",),
    "live_multiple": ("live_multiple",),
    "live_parallel": ("live_parallel",),
    "live_parallel_multiple": ("live_parallel_multiple",),
    "live_irrelevance": ("live_irrelevance",),
    "live_relevance": ("live_relevance",),
}
DEFAULT_CATEGORIES = "simple,multiple,parallel,parallel_multiple,irrelevance,live_simple,live_multiple,live_irrelevance"
NO_ANSWER_CATEGORIES = ("irrelevance", "live_irrelevance", "live_relevance")
FLOAT_NOTE = " This is a float type value."  # what BFCL appends to a float's description


def bfcl_module(name: str):
    """A module of nvidia-bfcl: its AST checker and type table import without BFCL's heavy
    dependencies (bfcl-eval's own checker imports every API client: it cannot be used here)."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise UserError(f"BFCL scoring uses BFCL's own checker: pip install --no-deps nvidia-bfcl==26.3 "
                        f"({first_line(err)})") from None


def parse_categories(text: str) -> list[str]:
    categories = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in categories if c not in CATEGORY_FILES]
    if unknown or not categories:
        raise UserError(f"unknown BFCL categories {unknown}: choose among {', '.join(CATEGORY_FILES)}")
    return list(dict.fromkeys(categories))


def installed_data_dir() -> Path | None:
    """The data folder of bfcl-eval (v4), else of nvidia-bfcl (v3), found without importing them."""
    for package in ("bfcl_eval", "bfcl"):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / "data"
            if folder.is_dir():
                return folder
    return None


def category_file(folder: Path, category: str) -> Path:
    for stem in CATEGORY_FILES[category]:
        name = re.compile(rf"BFCL_v(\d+)_{stem}\.json")  # not a glob: BFCL_v*_irrelevance also matches live_
        found = [(int(m[1]), path) for path in folder.iterdir() if (m := name.fullmatch(path.name))]
        if found:
            return max(found)[1]  # the newest version
    raise UserError(f"no BFCL_v*_{CATEGORY_FILES[category][0]}.json in {str(folder)!r} for category {category!r}")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(read_utf8(path, "BFCL file").split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{str(path)!r} line {number} is not JSON: {err.msg}") from None
    return rows


def _to_json_schema_types(properties: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """BFCL's ``_cast_to_openai_type`` with GORILLA_TO_OPENAPI (``types``), on a copy's properties."""
    for spec in properties.values():
        kind = spec.get("type")
        if kind == "float":
            spec["format"] = "float"
            spec["description"] = spec.get("description", "") + FLOAT_NOTE  # BFCL assumes a description
        spec["type"] = types.get(kind, "string")
        if spec["type"] in ("array", "object"):
            if "properties" in spec:
                _to_json_schema_types(spec["properties"], types)
            elif "items" in spec:
                items = spec["items"]
                items["type"] = types.get(items.get("type"), "string")
                if items["type"] == "array" and "items" in items:
                    items["items"]["type"] = types.get(items["items"].get("type"), "string")
                elif items["type"] == "object" and "properties" in items:
                    _to_json_schema_types(items["properties"], types)
    return properties


def tool_schema(function: dict[str, Any]) -> dict[str, Any]:
    """A BFCL function as the JSON schema the model is shown (see the module docstring)."""
    schema = copy.deepcopy(function)
    schema["name"] = re.sub(r"\.", "_", schema["name"])
    parameters = schema.setdefault("parameters", {})
    parameters["type"] = "object"
    types = bfcl_module("bfcl.model_handler.constant").GORILLA_TO_OPENAPI
    parameters["properties"] = _to_json_schema_types(parameters.get("properties", {}), types)
    return schema


def question_turns(messages: list[dict[str, Any]]) -> list[Turn]:
    """A BFCL question's messages as turns: system text becomes user text, consecutive user
    messages are joined by a blank line (BFCL's convert_system_prompt_into_user_prompt and
    combine_consecutive_user_prompts)."""
    turns: list[Turn] = []
    for message in messages:
        role = "user" if message["role"] in ("system", "user") else "assistant"
        if role == "user" and turns and turns[-1].role == "user":
            turns[-1] = Turn("user", turns[-1].content + "\n\n" + message["content"])
        else:
            turns.append(Turn(role, message["content"]))
    return turns


@dataclass
class BFCLItem:
    """One BFCL question: the prompt, and what scoring needs (kept in each prediction record, so
    that ``--predictions`` re-scores without the data)."""

    query_id: str
    category: str
    system: str
    turns: list[Turn]
    functions: list[dict[str, Any]]
    possible_answer: list[dict[str, Any]] | None
    schemas: list[dict[str, Any]] = field(default_factory=list)  # the functions as the prompt shows them

    @property
    def prompt(self) -> str:
        return generation_prompt(self.system, self.turns)

    def record_fields(self) -> dict[str, Any]:
        return {"category": self.category, "functions": self.functions, "possible_answer": self.possible_answer}


def bfcl_item(row: dict[str, Any], category: str, answer: list[dict[str, Any]] | None) -> BFCLItem:
    turns_lists = row["question"]
    if len(turns_lists) != 1:
        raise UserError(f"BFCL row {row['id']!r} is multi-turn, which these categories never are")
    schemas = [tool_schema(f) for f in row["function"]]
    return BFCLItem(row["id"], category, build_system_prompt(schemas), question_turns(turns_lists[0]), row["function"],
                    answer, schemas)


def load_bfcl_items(categories: list[str], folder: str | None, limit: int | None) -> list[BFCLItem]:
    """The questions of ``categories`` (the first ``limit`` of each), with their answers."""
    data = Path(folder) if folder else installed_data_dir()
    if data is None:
        raise UserError("BFCL data not found: pip install --no-deps bfcl-eval==2026.3.23 (or nvidia-bfcl==26.3), "
                        "or give --bfcl_data FOLDER")
    if not data.is_dir():
        raise UserError(f"--bfcl_data {str(data)!r} is not a folder")
    items = []
    for category in categories:
        path = category_file(data, category)
        rows = read_jsonl(path)[:limit]
        answers: dict[str, Any] = {}
        if category not in NO_ANSWER_CATEGORIES:
            answer_path = data / "possible_answer" / path.name
            if not answer_path.exists():
                raise UserError(f"no possible answers for {category!r}: {str(answer_path)!r} is missing")
            answers = {a["id"]: a["ground_truth"] for a in read_jsonl(answer_path)}
        for row in rows:
            if category not in NO_ANSWER_CATEGORIES and row["id"] not in answers:
                raise UserError(f"BFCL row {row['id']!r} has no possible answer in {str(answer_path)!r}")
            items.append(bfcl_item(row, category, answers.get(row["id"])))
    return items
