"""Functions of everyday computing across fields (finance, geometry, physics, statistics, units,
health, chemistry, dates, cooking, energy, text), for the wide data's ``--general_share``.

Why: the wide data's 240 functions are 30 kinds of bookable thing with the same eight operations,
so a model trained on them reads booking schemas (identifiers, dates, party sizes). Requests to call
a function elsewhere ask for other things: numbers with decimals and thousands separators, lists of
numbers, units as enums, a list of objects, a formula. These are written for variety across fields,
each with its own arguments, phrasings, result and answer; none is taken from a benchmark.

Each field is a group: a row's distractor functions are often the same field's others, so the
choice between them is a real one (as the booking kinds' operations are for each other).
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from typing import Any

from fcmistral.demo.operations import Argument, Operation, as_written, number, numbers, written
from fcmistral.demo.sample_data import _prop

UNITS_LENGTH = {"m": 1.0, "km": 1000.0, "cm": 0.01, "mi": 1609.344, "ft": 0.3048, "in": 0.0254}
ATOMIC_MASS = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "Na": 22.99, "Cl": 35.45, "S": 32.06, "Ca": 40.078}
FORMULAS = ["H2O", "CO2", "NaCl", "C6H12O6", "CH4", "NH3", "H2SO4", "CaCO3", "C2H5OH", "O2"]
TEXTS = ["The quick brown fox jumps over the lazy dog", "To be or not to be, that is the question",
         "Il pleut à Paris et il fait froid", "Data beats opinions when the data is good",
         "One fish, two fish, red fish, blue fish"]
INGREDIENTS = ["flour", "sugar", "butter", "salt", "milk", "rice", "cocoa", "oats"]
ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "Africa/Lagos", "Australia/Sydney", "America/Sao_Paulo"]


def _date(r: random.Random) -> str:
    return (date(2026, 1, 1) + timedelta(days=r.randint(0, 700))).isoformat()


def _unit(description: str, units: list[str], required: bool, say) -> Argument:
    return ("unit", _prop("string", description, enum=units), required, lambda r: r.choice(units), say)


def _molar_mass(formula: str) -> float:
    total, i = 0.0, 0
    while i < len(formula):
        j = i + 1 + (i + 1 < len(formula) and formula[i + 1].islower())
        k = j
        while k < len(formula) and formula[k].isdigit():
            k += 1
        total += ATOMIC_MASS[formula[i:j]] * int(formula[j:k] or 1)
        i = k
    return round(total, 3)


def _finance() -> list[Operation]:
    return [
        Operation("calculate_loan_payment", "Calculate the payment per period of a fixed-rate loan", [
            ("principal", _prop("number", "The amount borrowed"), True, lambda r: r.randint(5, 400) * 1000,
             lambda v: f"of {v:,.0f} dollars"),
            ("annual_rate", _prop("number", "The yearly interest rate in percent"), True, number(1, 9, 2),
             lambda v: f"at {v:g}% a year"),
            ("years", _prop("integer", "The loan's length in years", minimum=1, maximum=40), True,
             lambda r: r.choice([5, 10, 15, 20, 25, 30]), lambda v: f"over {v} years"),
            ("payments_per_year", _prop("integer", "Payments per year (12: monthly)", minimum=1, maximum=52), False,
             lambda r: r.choice([4, 12, 26]), lambda v: {4: "paid quarterly", 12: "paid monthly", 26: "paid every two weeks"}[v])],
            ("What would I pay for a loan", "Work out the repayments on a loan", "Calculate the payment for a loan"),
            lambda a, r: {"payment": round(_annuity(a["principal"], a["annual_rate"], a["years"],
                                                    a.get("payments_per_year", 12)), 2)},
            lambda a, res: f"Each payment would be about ${res['payment']:,}."),
        Operation("project_savings", "Project the balance of savings with compound interest", [
            ("deposit", _prop("number", "The starting deposit"), True, lambda r: r.randint(1, 90) * 100,
             lambda v: f"of {v:,.0f} euros"),
            ("annual_rate", _prop("number", "The yearly interest rate in percent"), True, number(0.5, 6, 2),
             lambda v: f"growing at {v:g}% a year"),
            ("years", _prop("integer", "How many years", minimum=1, maximum=50), True, lambda r: r.randint(2, 30),
             lambda v: f"for {v} years"),
            ("compounding", _prop("string", "How often interest is added", enum=["yearly", "monthly", "daily"]), False,
             lambda r: r.choice(["yearly", "monthly", "daily"]), lambda v: f"compounded {v}")],
            ("How much will I have from a deposit", "Project my savings for a deposit", "What will a deposit become"),
            lambda a, r: {"balance": round(a["deposit"] * (1 + a["annual_rate"] / 100 / _per_year(a)) ** (
                _per_year(a) * a["years"]), 2)},
            lambda a, res: f"After {a['years']} years the balance would be about €{res['balance']:,}."),
        Operation("split_bill", "Split a bill between people, with an optional tip", [
            ("total", _prop("number", "The bill's total"), True, number(20, 600, 2), lambda v: f"of ${v:g}"),
            ("people", _prop("integer", "How many people share it", minimum=1, maximum=30), True, lambda r: r.randint(2, 9),
             lambda v: f"between {v} people"),
            ("tip_percent", _prop("number", "The tip in percent"), False, lambda r: r.choice([10, 12.5, 15, 18, 20]),
             lambda v: f"with a {v:g}% tip")],
            ("Split a bill", "Help me divide a bill", "How much does each of us pay for a bill"),
            lambda a, r: {"each": round(a["total"] * (1 + a.get("tip_percent", 0) / 100) / a["people"], 2)},
            lambda a, res: f"Each person pays ${res['each']}."),
        Operation("apply_discount", "The price after a percentage discount", [
            ("price", _prop("number", "The original price"), True, number(5, 900, 2), lambda v: f"on an item costing {v:g}"),
            ("discount_percent", _prop("number", "The discount in percent"), True, lambda r: r.choice([5, 10, 15, 25, 30, 40]),
             lambda v: f"with {v:g}% off"),
            ("coupon_code", _prop("string", "A coupon code to add"), False, lambda r: r.choice(["SPRING5", "WELCOME", "VIP-2026"]),
             lambda v: f"and the coupon {v}")],
            ("What is the price", "Work out the sale price", "Apply a discount"),
            lambda a, r: {"final_price": round(a["price"] * (1 - a["discount_percent"] / 100), 2)},
            lambda a, res: f"The price comes to {res['final_price']}."),
    ]


def _annuity(principal: float, rate: float, years: int, per_year: int) -> float:
    i, n = rate / 100 / per_year, years * per_year
    return principal * i / (1 - (1 + i) ** -n)


def _per_year(a: dict[str, Any]) -> int:
    return {"yearly": 1, "monthly": 12, "daily": 365}[a.get("compounding", "yearly")]


def _geometry() -> list[Operation]:
    in_unit = lambda v: f"in {v}"  # noqa: E731
    return [
        Operation("rectangle_area", "The area of a rectangle", [
            ("length", _prop("number", "The length"), True, number(1, 80), lambda v: f"{v:g} long"),
            ("width", _prop("number", "The width"), True, number(1, 50), lambda v: f"and {v:g} wide"),
            _unit("The unit of both sides", ["m", "cm", "ft", "in"], False, in_unit)],
            ("What is the area of a rectangle", "Find the area of a rectangle", "Compute the area of a rectangle"),
            lambda a, r: {"area": round(a["length"] * a["width"], 3), "unit": a.get("unit", "m") + "^2"},
            lambda a, res: f"The area is {res['area']} {res['unit']}."),
        Operation("cylinder_volume", "The volume of a cylinder", [
            ("radius", _prop("number", "The radius of the base"), True, number(0.5, 20), lambda v: f"with a radius of {v:g}"),
            ("height", _prop("number", "The height"), True, number(1, 40), lambda v: f"and a height of {v:g}"),
            _unit("The unit of the lengths", ["m", "cm", "ft"], False, in_unit)],
            ("What is the volume of a cylinder", "Calculate the volume of a cylinder", "How much does a cylinder hold"),
            lambda a, r: {"volume": round(math.pi * a["radius"] ** 2 * a["height"], 3)},
            lambda a, res: f"The volume is {res['volume']} cubic {a.get('unit', 'm')}."),
        Operation("right_triangle_hypotenuse", "The hypotenuse of a right triangle from its two legs", [
            ("leg_a", _prop("number", "The first leg"), True, lambda r: r.randint(3, 30), lambda v: f"with legs {v:g}"),
            ("leg_b", _prop("number", "The second leg"), True, lambda r: r.randint(3, 40), lambda v: f"and {v:g}")],
            ("How long is the hypotenuse of a right triangle", "Find the hypotenuse of a right triangle"),
            lambda a, r: {"hypotenuse": round(math.hypot(a["leg_a"], a["leg_b"]), 4)},
            lambda a, res: f"The hypotenuse is {res['hypotenuse']}."),
        Operation("polygon_perimeter", "The perimeter of a polygon from its side lengths", [
            ("sides", {"type": "array", "description": "The length of each side", "items": {"type": "number"}}, True,
             numbers((3, 6), 1, 20), lambda v: f"with sides {written(v)}")],
            ("What is the perimeter of a polygon", "Add up the perimeter of a shape", "Find the perimeter of a polygon"),
            lambda a, r: {"perimeter": round(sum(a["sides"]), 3)},
            lambda a, res: f"The perimeter is {res['perimeter']}."),
    ]


def _physics() -> list[Operation]:
    return [
        Operation("average_speed", "The average speed of a trip", [
            ("distance_km", _prop("number", "The distance in kilometres"), True, number(1, 900), lambda v: f"covering {v:g} km"),
            ("hours", _prop("number", "The time taken in hours"), True, number(0.2, 12, 2), lambda v: f"in {v:g} hours")],
            ("What was my average speed on a trip", "Compute the average speed of a journey"),
            lambda a, r: {"km_per_hour": round(a["distance_km"] / a["hours"], 2)},
            lambda a, res: f"The average speed was {res['km_per_hour']} km/h."),
        Operation("kinetic_energy", "The kinetic energy of a moving mass", [
            ("mass_kg", _prop("number", "The mass in kilograms"), True, number(0.1, 2000, 1), lambda v: f"of a {v:g} kg object"),
            ("velocity", _prop("number", "The speed in metres per second"), True, number(0.5, 90, 1), lambda v: f"moving at {v:g} m/s")],
            ("What is the kinetic energy", "Calculate the kinetic energy", "How much kinetic energy is there"),
            lambda a, r: {"joules": round(0.5 * a["mass_kg"] * a["velocity"] ** 2, 2)},
            lambda a, res: f"The kinetic energy is {res['joules']} J."),
        Operation("electric_current", "The current through a resistor (Ohm's law)", [
            ("voltage", _prop("number", "The voltage in volts"), True, lambda r: r.choice([1.5, 3.3, 5, 9, 12, 24, 230]),
             lambda v: f"at {v:g} V"),
            ("resistance", _prop("number", "The resistance in ohms"), True, lambda r: r.randint(10, 4700), lambda v: f"through {v:g} ohms")],
            ("What current flows", "Work out the current", "How many amps flow"),
            lambda a, r: {"amperes": round(a["voltage"] / a["resistance"], 5)},
            lambda a, res: f"The current is {res['amperes']} A."),
        Operation("free_fall_time", "How long an object takes to fall from a height, without air resistance", [
            ("height_m", _prop("number", "The height in metres"), True, number(1, 300), lambda v: f"from {v:g} m"),
            ("gravity", _prop("number", "The gravitational acceleration in m/s^2 (Earth: 9.81)"), False,
             lambda r: r.choice([1.62, 3.71, 24.79]), lambda v: {1.62: "on the Moon (1.62 m/s^2)", 3.71: "on Mars (3.71 m/s^2)",
                                                                   24.79: "on Jupiter (24.79 m/s^2)"}[v])],
            ("How long does it take to fall", "Compute the fall time of a dropped ball", "How many seconds to drop"),
            lambda a, r: {"seconds": round(math.sqrt(2 * a["height_m"] / a.get("gravity", 9.81)), 3)},
            lambda a, res: f"It takes about {res['seconds']} seconds."),
    ]


def _statistics() -> list[Operation]:
    values = ("values", {"type": "array", "description": "The numbers", "items": {"type": "number"}}, True,
              numbers((4, 8), 1, 100), lambda v: f"of {written(v)}")
    return [
        Operation("median_of", "The median of a list of numbers", [values],
                  ("What is the median", "Find the median", "Give me the middle value"),
                  lambda a, r: {"median": _median(a["values"])}, lambda a, res: f"The median is {res['median']:g}."),
        Operation("standard_deviation", "The standard deviation of a list of numbers", [
            values, ("sample", _prop("boolean", "Treat the numbers as a sample (n - 1) rather than a population"), False,
                     lambda r: r.random() < 0.5, lambda v: "as a sample" if v else "as the whole population")],
            ("What is the standard deviation", "Compute the spread", "Calculate the standard deviation"),
            lambda a, r: {"std": round(_std(a["values"], a.get("sample", False)), 4)},
            lambda a, res: f"The standard deviation is {res['std']}."),
        Operation("percentile_of", "A percentile of a list of whole numbers", [
            ("scores", {"type": "array", "description": "The numbers", "items": {"type": "integer"}}, True,
             lambda r: [r.randint(0, 100) for _ in range(r.randint(5, 9))], lambda v: f"of the scores {written(v)}"),
            ("percentile", _prop("integer", "Which percentile, 0-100", minimum=0, maximum=100), True,
             lambda r: r.choice([10, 25, 75, 90, 95]), lambda v: f"at the {v}th percentile")],
            ("What is the value", "Find the percentile", "Which score sits"),
            lambda a, r: {"value": sorted(a["scores"])[min(len(a["scores"]) - 1, a["percentile"] * len(a["scores"]) // 100)]},
            lambda a, res: f"The {a['percentile']}th percentile is {res['value']}."),
        Operation("weighted_average", "The weighted average of numbers", [
            ("values", {"type": "array", "description": "The numbers", "items": {"type": "number"}}, True,
             lambda r: [r.randint(50, 100) for _ in range(3)], lambda v: f"of the grades {written(v)}"),
            ("weights", {"type": "array", "description": "The weight of each number", "items": {"type": "number"}}, True,
             lambda r: r.choice([[0.2, 0.3, 0.5], [0.5, 0.25, 0.25], [1, 2, 3]]), lambda v: f"weighted {written(v)}")],
            ("What is the weighted average", "Compute my weighted grade", "Work out the weighted mean"),
            lambda a, r: {"average": round(sum(v * w for v, w in zip(a["values"], a["weights"])) / sum(a["weights"]), 3)},
            lambda a, res: f"The weighted average is {res['average']}."),
    ]


def _median(values: list[float]) -> float:
    ordered, middle = sorted(values), len(values) // 2
    return ordered[middle] if len(values) % 2 else round((ordered[middle - 1] + ordered[middle]) / 2, 3)


def _std(values: list[float], sample: bool) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - sample))


def _units() -> list[Operation]:
    scales = ["celsius", "fahrenheit", "kelvin"]
    lengths = list(UNITS_LENGTH)
    return [
        Operation("convert_temperature", "Convert a temperature between scales", [
            ("value", _prop("number", "The temperature"), True, number(-40, 120), lambda v: f"{v:g} degrees"),
            ("from_scale", _prop("string", "The scale of the value", enum=scales), True, lambda r: r.choice(scales),
             lambda v: f"{v.capitalize()}"),
            ("to_scale", _prop("string", "The scale to convert to", enum=scales), True, lambda r: r.choice(scales),
             lambda v: f"into {v}")],
            ("Convert", "What is", "Please change"),
            lambda a, r: {"value": round(_from_kelvin(_to_kelvin(a["value"], a["from_scale"]), a["to_scale"]), 2)},
            lambda a, res: f"That is {res['value']} degrees {a['to_scale']}."),
        Operation("convert_length", "Convert a length between units", [
            ("value", _prop("number", "The length"), True, number(0.1, 5000, 2), lambda v: f"{v:g}"),
            ("from_unit", _prop("string", "The unit of the value", enum=lengths), True, lambda r: r.choice(lengths),
             lambda v: v),
            ("to_unit", _prop("string", "The unit to convert to", enum=lengths), True, lambda r: r.choice(lengths),
             lambda v: f"in {v}")],
            ("How much is", "Convert", "Express"),
            lambda a, r: {"value": round(a["value"] * UNITS_LENGTH[a["from_unit"]] / UNITS_LENGTH[a["to_unit"]], 4)},
            lambda a, res: f"That is {res['value']} {a['to_unit']}."),
    ]


def _to_kelvin(value: float, scale: str) -> float:
    return {"celsius": value + 273.15, "fahrenheit": (value - 32) * 5 / 9 + 273.15, "kelvin": value}[scale]


def _from_kelvin(value: float, scale: str) -> float:
    return {"celsius": value - 273.15, "fahrenheit": (value - 273.15) * 9 / 5 + 32, "kelvin": value}[scale]


def _health() -> list[Operation]:
    return [
        Operation("body_mass_index", "The body mass index from weight and height", [
            ("weight_kg", _prop("number", "The weight in kilograms"), True, number(40, 130), lambda v: f"for {v:g} kg"),
            ("height_m", _prop("number", "The height in metres"), True, number(1.45, 2.05, 2), lambda v: f"at {v:g} m tall")],
            ("What is my BMI", "Calculate the body mass index", "Compute a BMI"),
            lambda a, r: {"bmi": round(a["weight_kg"] / a["height_m"] ** 2, 1)},
            lambda a, res: f"The BMI is {res['bmi']}."),
        Operation("daily_water_intake", "The recommended daily water intake", [
            ("weight_kg", _prop("number", "The body weight in kilograms"), True, number(40, 130), lambda v: f"for someone of {v:g} kg"),
            ("activity_minutes", _prop("integer", "Minutes of exercise a day", minimum=0, maximum=600), False,
             lambda r: r.choice([20, 30, 45, 60, 90]), lambda v: f"who exercises {v} minutes a day"),
            ("climate", _prop("string", "The climate", enum=["temperate", "hot", "cold"]), False,
             lambda r: r.choice(["temperate", "hot", "cold"]), lambda v: f"in a {v} climate")],
            ("How much water should I drink", "Recommend a daily water intake", "What is the daily water need"),
            lambda a, r: {"litres": round(a["weight_kg"] * 0.033 + a.get("activity_minutes", 0) / 30 * 0.35
                                          + (0.5 if a.get("climate") == "hot" else 0), 2)},
            lambda a, res: f"About {res['litres']} litres a day."),
        Operation("target_heart_rate", "The target heart rate range for an exercise intensity", [
            ("age", _prop("integer", "Age in years", minimum=10, maximum=100), True, lambda r: r.randint(16, 80),
             lambda v: f"for a {v}-year-old"),
            ("intensity", _prop("string", "How hard the exercise is", enum=["light", "moderate", "vigorous"]), True,
             lambda r: r.choice(["light", "moderate", "vigorous"]), lambda v: f"at {v} intensity")],
            ("What heart rate should I aim for", "Give me the target heart rate", "Which heart rate zone fits"),
            lambda a, r: {"low": round((220 - a["age"]) * {"light": 0.5, "moderate": 0.64, "vigorous": 0.77}[a["intensity"]]),
                          "high": round((220 - a["age"]) * {"light": 0.63, "moderate": 0.76, "vigorous": 0.93}[a["intensity"]])},
            lambda a, res: f"Aim for {res['low']} to {res['high']} beats a minute."),
    ]


def _chemistry() -> list[Operation]:
    return [
        Operation("molar_mass", "The molar mass of a chemical formula", [
            ("formula", _prop("string", "The chemical formula, e.g. H2O"), True, lambda r: r.choice(FORMULAS), lambda v: f"of {v}")],
            ("What is the molar mass", "Compute the molar mass", "How heavy is a mole"),
            lambda a, r: {"grams_per_mole": _molar_mass(a["formula"])},
            lambda a, res: f"The molar mass of {a['formula']} is {res['grams_per_mole']} g/mol."),
        Operation("dilution_volume", "The volume of stock solution needed for a dilution (C1V1 = C2V2)", [
            ("stock_molarity", _prop("number", "The stock concentration in mol/L"), True, number(0.5, 12, 2),
             lambda v: f"from a {v:g} M stock"),
            ("target_molarity", _prop("number", "The wanted concentration in mol/L"), True, number(0.01, 0.4, 3),
             lambda v: f"to get {v:g} M"),
            ("target_volume_ml", _prop("number", "The wanted volume in millilitres"), True, lambda r: r.randint(50, 2000),
             lambda v: f"in {v:g} mL")],
            ("How much stock do I need", "Plan a dilution", "Work out the dilution"),
            lambda a, r: {"stock_ml": round(a["target_molarity"] * a["target_volume_ml"] / a["stock_molarity"], 3)},
            lambda a, res: f"Use {res['stock_ml']} mL of stock and fill up to {a['target_volume_ml']:g} mL."),
        Operation("ideal_gas_pressure", "The pressure of an ideal gas (PV = nRT)", [
            ("moles", _prop("number", "Amount of gas in moles"), True, number(0.1, 10, 2), lambda v: f"for {v:g} mol of gas"),
            ("temperature_k", _prop("number", "Temperature in kelvin"), True, number(200, 600, 1), lambda v: f"at {v:g} K"),
            ("volume_l", _prop("number", "Volume in litres"), True, number(0.5, 100, 1), lambda v: f"in {v:g} L")],
            ("What is the pressure", "Compute the gas pressure", "Find the pressure"),
            lambda a, r: {"kilopascals": round(a["moles"] * 8.314 * a["temperature_k"] / a["volume_l"], 2)},
            lambda a, res: f"The pressure is {res['kilopascals']} kPa."),
    ]


def _dates_and_text() -> list[Operation]:
    return [
        Operation("days_between", "The number of days between two dates", [
            ("start_date", _prop("string", "The first date, YYYY-MM-DD"), True, _date, lambda v: f"from {v}"),
            ("end_date", _prop("string", "The second date, YYYY-MM-DD"), True, _date, lambda v: f"to {v}"),
            ("include_end", _prop("boolean", "Count the end date too"), False, lambda r: r.random() < 0.5,
             lambda v: "counting both ends" if v else "not counting the last day")],
            ("How many days are there", "Count the days", "How long is it"),
            lambda a, r: {"days": abs((date.fromisoformat(a["end_date"]) - date.fromisoformat(a["start_date"])).days)
                          + bool(a.get("include_end"))},
            lambda a, res: f"That is {res['days']} days."),
        Operation("convert_time_zone", "Convert a time of day from one time zone to another", [
            ("time", _prop("string", "The time, HH:MM (24-hour)"), True, lambda r: f"{r.randint(0, 23):02d}:{r.choice([0, 15, 30, 45]):02d}",
             lambda v: f"{v}"),
            ("from_zone", _prop("string", "The IANA time zone of the time"), True, lambda r: r.choice(ZONES), lambda v: f"in {v}"),
            ("to_zone", _prop("string", "The IANA time zone to convert to"), True, lambda r: r.choice(ZONES), lambda v: f"in {v} time")],
            ("What time is", "Convert", "When is"),
            lambda a, r: {"time": f"{r.randint(0, 23):02d}:{a['time'][3:]}"},
            lambda a, res: f"That is {res['time']} in {a['to_zone']}."),
        Operation("count_words", "Count the words of a text", [
            ("text", _prop("string", "The text"), True, lambda r: r.choice(TEXTS), lambda v: f'in "{v}"'),
            ("unique_only", _prop("boolean", "Count each different word once"), False, lambda r: r.random() < 0.5,
             lambda v: "counting each different word once" if v else "counting every word")],
            ("How many words are there", "Count the words", "Give me the word count"),
            lambda a, r: {"words": len({w.strip(",.").lower() for w in a["text"].split()}) if a.get("unique_only")
                          else len(a["text"].split())},
            lambda a, res: f"There are {res['words']} words."),
    ]


def _cooking_and_energy() -> list[Operation]:
    return [
        Operation("scale_recipe", "Scale a recipe's ingredients by a factor", [
            ("ingredients", {"type": "array", "description": "The ingredients and their amounts", "items": {
                "type": "object", "properties": {"name": _prop("string", "The ingredient"),
                                                 "grams": _prop("number", "The amount in grams")},
                "required": ["name", "grams"]}}, True,
             lambda r: [{"name": name, "grams": r.choice([5, 50, 100, 125, 200, 250, 500])}
                        for name in r.sample(INGREDIENTS, r.randint(2, 4))],
             lambda v: "with " + written([f"{i['grams']:g} g of {i['name']}" for i in v])),
            ("factor", _prop("number", "The multiplier (2: double)"), True, lambda r: r.choice([0.5, 1.5, 2, 3]),
             lambda v: f"scaled by {v:g}")],
            ("Scale my recipe", "Adjust a recipe", "Resize a recipe"),
            lambda a, r: {"ingredients": [{"name": i["name"], "grams": as_written(i["grams"] * a["factor"])} for i in a["ingredients"]]},
            lambda a, res: "You need " + written([f"{i['grams']:g} g of {i['name']}" for i in res["ingredients"]]) + "."),
        Operation("roasting_time", "The roasting time for a piece of meat", [
            ("weight_kg", _prop("number", "The weight in kilograms"), True, number(0.5, 6, 1), lambda v: f"of {v:g} kg"),
            ("meat", _prop("string", "The meat", enum=["beef", "pork", "lamb", "chicken"]), True,
             lambda r: r.choice(["beef", "pork", "lamb", "chicken"]), lambda v: f"for a {v} roast"),
            ("doneness", _prop("string", "How well done", enum=["rare", "medium", "well_done"]), False,
             lambda r: r.choice(["rare", "medium", "well_done"]), lambda v: f"cooked {v.replace('_', ' ')}")],
            ("How long should I roast", "Give me the roasting time", "What cooking time"),
            lambda a, r: {"minutes": round(a["weight_kg"] * {"beef": 40, "pork": 60, "lamb": 50, "chicken": 45}[a["meat"]]
                                           * {"rare": 0.8, "medium": 1.0, "well_done": 1.2}[a.get("doneness", "medium")])},
            lambda a, res: f"Roast it for about {res['minutes']} minutes."),
        Operation("electricity_cost", "The cost of electricity used", [
            ("kwh", _prop("number", "Energy used in kilowatt-hours"), True, number(0.5, 900, 1), lambda v: f"for {v:g} kWh"),
            ("price_per_kwh", _prop("number", "The price of one kWh"), True, number(0.08, 0.45, 3), lambda v: f"at {v:g} per kWh"),
            ("days", _prop("integer", "Repeat for this many days", minimum=1, maximum=366), False, lambda r: r.choice([7, 30, 365]),
             lambda v: f"every day for {v} days")],
            ("What does the electricity cost", "Work out my power bill", "How much do I pay"),
            lambda a, r: {"cost": round(a["kwh"] * a["price_per_kwh"] * a.get("days", 1), 2)},
            lambda a, res: f"That costs {res['cost']}."),
        Operation("trip_emissions", "The CO2 emitted by a trip", [
            ("distance_km", _prop("number", "The distance in kilometres"), True, lambda r: r.randint(2, 3000), lambda v: f"of {v:g} km"),
            ("mode", _prop("string", "How you travel", enum=["car", "train", "plane", "bus"]), True,
             lambda r: r.choice(["car", "train", "plane", "bus"]), lambda v: f"by {v}"),
            ("passengers", _prop("integer", "People sharing the vehicle", minimum=1, maximum=9), False,
             lambda r: r.randint(2, 5), lambda v: f"shared by {v} people")],
            ("What are the emissions of a trip", "How much CO2 is a journey", "Estimate the carbon footprint of a trip"),
            lambda a, r: {"kg_co2": round(a["distance_km"] * {"car": 0.17, "train": 0.04, "plane": 0.25, "bus": 0.1}[a["mode"]]
                                          / a.get("passengers", 1), 2)},
            lambda a, res: f"About {res['kg_co2']} kg of CO2."),
    ]


def general_groups() -> list[list[Operation]]:
    """The functions, by field."""
    return [_finance(), _geometry(), _physics(), _statistics(), _units(), _health(), _chemistry(), _dates_and_text(),
            _cooking_and_energy()]
