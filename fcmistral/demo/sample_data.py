"""A small generator of glaive-format rows, so the project ships its own sample data.

The rows follow the real format byte for byte (same SYSTEM headers, schema layout, separators,
call syntax) and cover its patterns: one to three functions per system prompt, rows with no
functions, direct calls, "acknowledge, then call" (two assistant turns in a row), a clarifying
question before the call, requests the functions cannot serve, string/number/integer/boolean/
array/enum arguments, apostrophes and non-ASCII text inside values.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fcmistral.prompt import FunctionCall, Turn, build_system_prompt, call_turn, render_chat


def _schema(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


def _prop(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


CITIES = ["Paris", "New York", "Zürich", "São Paulo", "Tokyo", "Cairo", "Reykjavík", "Denver", "Kraków", "Lagos"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "INR"]
NAMES = ["alice@example.com", "bob.o'neil@example.org", "chloé@example.fr", "dev-team@example.com"]
PHRASES = ["Je suis un étudiant", "Wo ist der Bahnhof?", "Let's meet at noon", "¿Dónde está la playa?", "I don't know"]
LANGUAGES = ["French", "German", "Spanish", "Japanese", "Italian"]
INGREDIENTS = ["chicken", "tomatoes", "basil", "rice", "tofu", "mushrooms", "garlic", "lentils"]
SYMBOLS = ["AAPL", "MSFT", "GOOGL", "TSLA", "AMZN"]
TASKS = ["Buy groceries", "Call mom", "Finish the report", "Book the dentist", "Renew passport"]


@dataclass
class Scenario:
    """One function: its schema and a sampler of (user request, arguments, response, answer)."""

    schema: dict[str, Any]
    sample: Callable[[random.Random], tuple[str, dict[str, Any], dict[str, Any], str]]

    @property
    def name(self) -> str:
        return self.schema["name"]


def _weather(r: random.Random):
    city, unit = r.choice(CITIES), r.choice(["celsius", "fahrenheit"])
    temp = r.randint(-5, 35) if unit == "celsius" else r.randint(20, 95)
    ask = r.choice([f"What's the weather like in {city} right now? Use {unit}.",
                    f"Can you tell me the current temperature in {city} in {unit}?",
                    f"How warm is it in {city} today, in {unit}?"])
    return ask, {"location": city, "unit": unit}, {"temperature": temp, "unit": unit, "condition": "sunny"}, \
        f"It is currently {temp} degrees {unit} and sunny in {city}."


def _tax(r: random.Random):
    income, rate = r.randint(20, 200) * 1000, r.choice([10, 15, 20, 25, 30])
    ask = r.choice([f"I earned {income} dollars this year and my tax rate is {rate}%. How much tax do I owe?",
                    f"Calculate the tax on an income of {income} at a {rate} percent rate."])
    tax = income * rate / 100
    return ask, {"income": income, "tax_rate": rate}, {"tax_amount": tax}, f"Your tax amount is {tax} dollars."


def _currency(r: random.Random):
    amount, (src, dst) = r.randint(10, 5000), r.sample(CURRENCIES, 2)
    ask = r.choice([f"Convert {amount} {src} to {dst}, please.",
                    f"How much is {amount} {src} in {dst}?",
                    f"I need to exchange {amount} {src} into {dst}. What will I get?"])
    out = round(amount * r.uniform(0.5, 1.5), 2)
    return ask, {"amount": amount, "from_currency": src, "to_currency": dst}, \
        {"converted_amount": out, "currency": dst}, f"{amount} {src} is about {out} {dst}."


def _email(r: random.Random):
    to, subject = r.choice(NAMES), r.choice(["Meeting", "Lunch tomorrow", "Project update", "Café order"])
    body = r.choice(["Let's meet at 3 pm.", "The report is ready.", "Don't forget the slides!"])
    ask = f"Send an email to {to} with the subject '{subject}' saying: {body}"
    return ask, {"recipient": to, "subject": subject, "message": body}, {"status": "sent"}, \
        f"The email to {to} has been sent."


def _recipes(r: random.Random):
    items = r.sample(INGREDIENTS, r.randint(1, 3))
    ask = r.choice([f"I have {', '.join(items)}. Can you find me a recipe?",
                    f"Search for recipes with {' and '.join(items)}."])
    return ask, {"ingredients": items}, {"recipes": [f"{items[0].title()} stew"]}, \
        f"I found a recipe: {items[0].title()} stew."


def _bmi(r: random.Random):
    weight, height = r.randint(45, 110), round(r.uniform(1.5, 2.0), 2)
    ask = r.choice([f"Calculate my BMI. I weigh {weight} kg and I am {height} m tall.",
                    f"What's the BMI for {weight} kilograms and {height} meters?"])
    bmi = round(weight / height**2, 2)
    return ask, {"weight": weight, "height": height}, {"bmi": bmi}, f"Your BMI is {bmi}."


def _stock(r: random.Random):
    symbol = r.choice(SYMBOLS)
    ask = r.choice([f"What is the current stock price of {symbol}?", f"Give me the latest price for {symbol} shares."])
    price = round(r.uniform(50, 900), 2)
    return ask, {"symbol": symbol}, {"price": price}, f"{symbol} is trading at {price} dollars."


def _translate(r: random.Random):
    text, lang = r.choice(PHRASES), r.choice(LANGUAGES)
    ask = r.choice([f"Translate \"{text}\" into {lang}.", f"How do you say '{text}' in {lang}?"])
    return ask, {"text": text, "target_language": lang}, {"translated_text": f"[{lang}] {text}"}, \
        f"In {lang} that is: [{lang}] {text}."


def _todo(r: random.Random):
    task, day, urgent = r.choice(TASKS), r.randint(1, 28), r.random() < 0.5
    flag = "It's urgent." if urgent else "It isn't urgent."
    ask = f"Add '{task}' to my to-do list for 2024-05-{day:02d}. {flag}"
    return ask, {"title": task, "due_date": f"2024-05-{day:02d}", "urgent": urgent}, {"status": "created"}, \
        f"I added '{task}' to your to-do list."


def _language(r: random.Random):
    text = r.choice(PHRASES)
    ask = r.choice([f"Which language is this: \"{text}\"?", f"Detect the language of '{text}'."])
    return ask, {"text": text}, {"language": "French"}, "The text is in French."


SCENARIOS = [
    Scenario(_schema("get_current_weather", "Get the current weather in a location",
                     {"location": _prop("string", "The city name"),
                      "unit": _prop("string", "The temperature unit", enum=["celsius", "fahrenheit"])},
                     ["location"]), _weather),
    Scenario(_schema("calculate_tax", "Calculate the tax amount for an income",
                     {"income": _prop("number", "The annual income"),
                      "tax_rate": _prop("number", "The tax rate in percent")}, ["income", "tax_rate"]), _tax),
    Scenario(_schema("convert_currency", "Convert an amount from one currency to another",
                     {"amount": _prop("number", "The amount to convert"),
                      "from_currency": _prop("string", "The currency to convert from"),
                      "to_currency": _prop("string", "The currency to convert to")},
                     ["amount", "from_currency", "to_currency"]), _currency),
    Scenario(_schema("send_email", "Send an email to a recipient",
                     {"recipient": _prop("string", "The email address of the recipient"),
                      "subject": _prop("string", "The subject of the email"),
                      "message": _prop("string", "The body of the email")},
                     ["recipient", "subject", "message"]), _email),
    Scenario(_schema("search_recipes", "Search for recipes by ingredients",
                     {"ingredients": {"type": "array", "items": {"type": "string"},
                                      "description": "The ingredients to use"}}, ["ingredients"]), _recipes),
    Scenario(_schema("calculate_bmi", "Calculate the Body Mass Index",
                     {"weight": _prop("number", "The weight in kilograms"),
                      "height": _prop("number", "The height in meters")}, ["weight", "height"]), _bmi),
    Scenario(_schema("get_stock_price", "Get the current price of a stock",
                     {"symbol": _prop("string", "The stock symbol, e.g. AAPL")}, ["symbol"]), _stock),
    Scenario(_schema("translate_text", "Translate a text into another language",
                     {"text": _prop("string", "The text to translate"),
                      "target_language": _prop("string", "The language to translate into")},
                     ["text", "target_language"]), _translate),
    Scenario(_schema("create_todo", "Create a new item in the to-do list",
                     {"title": _prop("string", "The title of the task"),
                      "due_date": _prop("string", "The due date, YYYY-MM-DD"),
                      "urgent": _prop("boolean", "Whether the task is urgent")}, ["title"]), _todo),
    Scenario(_schema("detect_language", "Detect the language of a given text",
                     {"text": _prop("string", "The text to detect the language of")}, ["text"]), _language),
]

CHITCHAT = [
    ("Tell me a fun fact.", "Honey never spoils: edible honey has been found in ancient Egyptian tombs."),
    ("What's the capital of Australia?", "The capital of Australia is Canberra."),
    ("Can you explain what a CLASS is in programming?", "A class is a blueprint for creating objects."),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen wrote 'Pride and Prejudice'."),
    ("How do I PASS my exams?", "Plan your revision, practise past papers and sleep well."),
]
OUT_OF_SCOPE = ("Can you order a pizza for me?",
                "I'm sorry, but I can't order a pizza. My capabilities are limited to the functions provided to me.")
ACKS = ["Sure, let me check that for you.", "Of course, one moment please.", "Let me look that up."]


def _function_row(r: random.Random) -> dict[str, str]:
    chosen = r.sample(SCENARIOS, r.choice([1, 1, 2, 3]))
    target = chosen[0]
    r.shuffle(chosen)
    ask, args, response, answer = target.sample(r)
    call = call_turn([FunctionCall(target.name, args)])
    after = [call, Turn("function_response", json.dumps(response, ensure_ascii=False)), Turn("assistant", answer)]
    pattern = r.random()
    if pattern < 0.55:
        turns = [Turn("user", ask)] + after
    elif pattern < 0.8:
        turns = [Turn("user", ask), Turn("assistant", r.choice(ACKS))] + after
    elif pattern < 0.92:
        turns = [Turn("user", "Can you help me with something?"),
                 Turn("assistant", "Of course! What do you need?"), Turn("user", ask)] + after
    else:
        turns = [Turn("user", OUT_OF_SCOPE[0]), Turn("assistant", OUT_OF_SCOPE[1])]
    return {"system": build_system_prompt([c.schema for c in chosen]), "chat": render_chat(turns)}


def _chitchat_row(r: random.Random) -> dict[str, str]:
    question, answer = r.choice(CHITCHAT)
    # Rows without functions reportedly use two newlines between turns.
    return {"system": build_system_prompt([]), "chat": render_chat([Turn("user", question), Turn("assistant", answer)], "\n\n")}


def generate_rows(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` glaive rows (about 15% without functions), reproducible from ``seed``."""
    r = random.Random(seed)
    return [_chitchat_row(r) if r.random() < 0.15 else _function_row(r) for _ in range(n)]


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


TRAIN_SEED, HELDOUT_SEED = 1234, 98765


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write the shipped sample data files (glaive format).")
    parser.add_argument("--out_dir", default="data", help="folder for sample_train.jsonl and sample_heldout.jsonl")
    parser.add_argument("--train_rows", type=int, default=600)
    parser.add_argument("--heldout_rows", type=int, default=60)
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(generate_rows(args.train_rows, TRAIN_SEED), out / "sample_train.jsonl")
    write_jsonl(generate_rows(args.heldout_rows, HELDOUT_SEED), out / "sample_heldout.jsonl")
    print(f"wrote {args.train_rows} + {args.heldout_rows} rows to {out}")


if __name__ == "__main__":
    main()
