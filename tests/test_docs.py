"""The docs stay true to the code: the README's length limit, and every module and class the
request path of docs/serving.md names exists."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_readme_is_short_enough_to_read_in_five_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def test_the_request_path_names_only_modules_and_classes_that_exist():
    text = (REPO / "docs" / "serving.md").read_text()
    path = text[text.index("### One request"):text.index("What it does, where")]
    modules = re.findall(r"`((?:fcmistral/)?[\w/]+\.py)`", path)
    assert len(modules) >= 10
    for module in modules:
        assert (REPO / (module if module.startswith("fcmistral/") else f"fcmistral/{module}")).is_file(), module
    sources = "".join(p.read_text() for p in (REPO / "fcmistral").rglob("*.py"))
    for name in re.findall(r"`([A-Z]\w+)`", path):
        assert re.search(rf"^class {name}\b", sources, re.M) or name == "ChatCompletion", name  # openai's own
