"""The callables behind function schemas: a user's Python module, or the built-in demo set."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any, Callable

from fcmistral.cli import UserError
from fcmistral.sample_data import SCENARIOS

WEATHER = {"paris": (18, "cloudy"), "new york": (22, "sunny"), "tokyo": (26, "humid"), "zürich": (12, "rainy")}
RATES_TO_USD = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "CHF": 1.13, "INR": 0.012}


def get_current_weather(location: str, unit: str = "celsius") -> dict[str, Any]:
    """Weather from a fixed table (the demo has no network)."""
    temp, condition = WEATHER.get(location.strip().lower(), (20, "clear"))
    if unit == "fahrenheit":
        temp = round(temp * 9 / 5 + 32)
    return {"location": location, "temperature": temp, "unit": unit, "condition": condition}


def calculate_tax(income: float, tax_rate: float) -> dict[str, Any]:
    return {"income": income, "tax_rate": tax_rate, "tax_amount": round(income * tax_rate / 100, 2)}


def convert_currency(amount: float, from_currency: str, to_currency: str) -> dict[str, Any]:
    """Conversion at fixed rates."""
    try:
        usd = amount * RATES_TO_USD[from_currency.upper()]
        converted = usd / RATES_TO_USD[to_currency.upper()]
    except KeyError as err:
        raise ValueError(f"unknown currency {err.args[0]}; known: {', '.join(RATES_TO_USD)}") from None
    return {"amount": amount, "from": from_currency, "to": to_currency, "converted_amount": round(converted, 2)}


DEMO_TOOLS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (get_current_weather, calculate_tax, convert_currency)
}
# The schemas the tiny demo model was trained on (one source: the sample data generator).
DEMO_FUNCTIONS = [s.schema for s in SCENARIOS if s.name in DEMO_TOOLS]


def load_tools_module(path: str | Path) -> tuple[dict[str, Callable[..., Any]], list[dict[str, Any]] | None]:
    """The public functions defined in a user's module, and its ``FUNCTIONS`` schemas if it has one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tools module {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"fcmistral_user_tools_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise UserError(f"cannot import {str(path)!r}: {type(err).__name__}: {err}") from err
    tools = {
        name: obj for name, obj in vars(module).items()
        if inspect.isfunction(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
    }
    return tools, getattr(module, "FUNCTIONS", None)


def check_tools_cover(functions: list[dict[str, Any]], tools: dict[str, Callable[..., Any]]) -> None:
    missing = [f["name"] for f in functions if f["name"] not in tools]
    if missing:
        raise UserError(f"no Python function for the schemas {missing} (functions found: {sorted(tools)})")
