"""The demo's functions: the schemas the tiny model was trained on and Python callables that
answer them from fixed tables (the demo has no network). inference.py runs these when it is given
no --functions/--tools."""

from __future__ import annotations

from typing import Any, Callable

from fcmistral.demo.sample_data import SCENARIOS

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


DEMO_CALLABLES: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (get_current_weather, calculate_tax, convert_currency)
}
# The schemas the tiny demo model was trained on (one source: the sample data generator).
DEMO_SCHEMAS = [s.schema for s in SCENARIOS if s.name in DEMO_CALLABLES]
