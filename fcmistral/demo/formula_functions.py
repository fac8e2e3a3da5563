"""Functions that compute a quantity from others, over fourteen fields of a school curriculum
(mechanics, algebra, astronomy...), composed from a library of quantities, for the wide data's
``--formula_share`` and its held-out fields file.

Why: across five runs of row l and one of row m (docs/training.md) the held-out figure (unseen booking
functions) rose to 66-83% exact arguments while BFCL simple stayed at 40-57%, and a four-times larger
adapter did not move simple beyond that spread: the model reads the schemas of the fields it was
trained on, and the 31 hand-written functions of fcmistral.demo.general_functions are the only ones
outside bookings. Here each field has a few formulas, each function one formula under one of several
names, descriptions and parameter names, with the quantities it takes asked for in varied words;
values are numbers of every size, whole counts, lists of numbers, points and names to copy, and
some inputs are optional (a default the request may override). Four fields (``HELD_OUT_FIELDS``) never
occur in training whatever the options: their rows measure transfer to new fields on our own data,
as the booking kinds' held-out file measures new schemas. The formulas and fields are textbook ones,
chosen for breadth; none is taken from a benchmark's questions or functions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from fcmistral.demo.operations import Argument, Operation, number, numbers, written
from fcmistral.demo.sample_data import _prop


def _say_point(value: list[float]) -> str:
    return f"({written(value[0])}, {written(value[1])})"


def _whole(low: int, high: int) -> Callable[[random.Random], int]:
    return lambda r: r.randint(low, high)


def _point(r: random.Random) -> list[float]:
    """A latitude and longitude, four decimals."""
    return [round(r.uniform(-60, 70), 4), round(r.uniform(-170, 170), 4)]


@dataclass(frozen=True)
class Quantity:
    """An input: its parameter names, descriptions, JSON type (``array`` of numbers for lists and
    points), sampler and the phrases naming a value in a request (``{v}``: the value as ``writing`` writes it)."""

    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    kind: str
    sample: Callable[[random.Random], Any]
    phrases: tuple[str, ...]
    writing: Callable[[Any], str] = written

    def argument(self, required: bool, r: random.Random) -> Argument:
        """The quantity as one function's parameter: one name, description and phrasing drawn by ``r``."""
        schema = _prop(self.kind, r.choice(self.descriptions))
        if self.kind == "array":
            schema["items"] = {"type": "number"}
        phrase, writing = r.choice(self.phrases), self.writing
        return (r.choice(self.names), schema, required, self.sample, lambda v: phrase.format(v=writing(v)))


Q = Quantity
QUANTITIES: dict[str, Quantity] = {
    # mechanics
    "mass": Q(("mass", "mass_kg", "m"), ("The mass in kilograms", "Mass of the object (kg)"), "number",
              number(0.2, 900, 1), ("of {v} kg", "with a mass of {v} kg", "weighing {v} kg")),
    "velocity": Q(("velocity", "speed", "v"), ("The speed in metres per second", "Velocity (m/s)"), "number",
                  number(0.5, 120, 1), ("moving at {v} m/s", "at a speed of {v} m/s", "travelling at {v} m/s")),
    "initial_velocity": Q(("initial_velocity", "start_speed", "v0"), ("The starting speed in m/s (default 0)",
                          "Initial velocity, m/s; 0 if not given"), "number", number(1, 40, 1),
                          ("starting at {v} m/s", "with an initial speed of {v} m/s")),
    "acceleration": Q(("acceleration", "accel", "a"), ("The acceleration in m/s^2", "Constant acceleration (m/s²)"),
                      "number", number(0.1, 15, 2), ("accelerating at {v} m/s^2", "with an acceleration of {v} m/s²")),
    "time": Q(("time", "duration", "seconds", "t"), ("The time in seconds", "Elapsed time (s)"), "number",
              number(0.5, 300, 1), ("for {v} seconds", "over {v} s", "after {v} seconds")),
    "height": Q(("height", "height_m", "h"), ("The height in metres", "Height above the ground (m)"), "number",
                number(0.5, 500, 1), ("at a height of {v} m", "{v} metres up", "raised {v} m")),
    "angle": Q(("angle", "launch_angle", "angle_degrees"), ("The angle in degrees", "Launch angle (degrees)"), "number",
               number(5, 85, 0), ("at {v} degrees", "launched at an angle of {v}°")),
    "gravity": Q(("gravity", "g"), ("Gravitational acceleration in m/s^2 (default 9.81)",), "number",
                 lambda r: r.choice([1.62, 3.71, 9.8, 24.79]), ("with g = {v} m/s^2", "where gravity is {v} m/s²")),
    # electricity
    "voltage": Q(("voltage", "volts", "V"), ("The voltage in volts", "Potential difference (V)"), "number",
                 lambda r: r.choice([1.5, 3.3, 5, 9, 12, 48, 120, 230]), ("at {v} V", "with {v} volts", "across {v} V")),
    "current": Q(("current", "amps", "I"), ("The current in amperes", "Current (A)"), "number", number(0.01, 30, 2),
                 ("drawing {v} A", "with a current of {v} amps")),
    "capacitance": Q(("capacitance", "farads", "C"), ("The capacitance in farads", "Capacitance (F)"), "number",
                     lambda r: r.choice([0.0001, 0.00047, 0.001, 0.022, 0.1, 1.5]), ("of {v} F", "with a {v} farad capacitor")),
    "resistances": Q(("resistances", "resistors", "ohms"), ("Each resistor's resistance in ohms",), "array",
                     numbers((2, 5), 10, 4700, 0), ("of {v} ohms", "with resistors of {v} ohms")),
    # heat and gases
    "specific_heat": Q(("specific_heat", "heat_capacity", "c"), ("Specific heat in J/(kg·K)", "Specific heat capacity"),
                       "number", lambda r: r.choice([4186, 897, 385, 2100, 840, 129]),
                       ("with a specific heat of {v} J/kg·K", "whose specific heat is {v}")),
    "temperature_change": Q(("temperature_change", "delta_t", "delta_temperature"), ("The change of temperature in K",
                            "Temperature rise (°C or K)"), "number", number(1, 90, 1),
                            ("warmed by {v} degrees", "heated {v} K", "for a {v} °C rise")),
    # waves and light
    "frequency": Q(("frequency", "freq_hz", "f"), ("The frequency in hertz", "Frequency (Hz)"), "number",
                   lambda r: r.choice([50, 440, 1000, 2400000000, 88500000, 500000000000000]), ("at {v} Hz", "with a frequency of {v} Hz")),
    "wavelength": Q(("wavelength", "lambda_m", "wave_length"), ("The wavelength in metres", "Wavelength (m)"), "number",
                    number(0.01, 20, 2), ("with a wavelength of {v} m", "{v} m long")),
    "focal_length": Q(("focal_length", "focal_length_cm", "f"), ("The lens's focal length in cm",), "number",
                      number(2, 60, 1), ("with a focal length of {v} cm", "for a {v} cm lens")),
    "object_distance": Q(("object_distance", "distance_object", "do"), ("The object's distance from the lens in cm",),
                         "number", number(5, 200, 1), ("with the object {v} cm away", "an object at {v} cm")),
    # algebra and numbers
    "a": Q(("a", "coef_a", "coefficient_a"), ("The coefficient of x squared", "Quadratic coefficient a"), "number",
           number(-9, 9, 0), ("where a is {v}", "with a = {v}")),
    "b": Q(("b", "coef_b", "coefficient_b"), ("The coefficient of x", "Linear coefficient b"), "number",
           number(-20, 20, 0), ("b is {v}", "b = {v}")),
    "c": Q(("c", "coef_c", "constant"), ("The constant term", "Constant c"), "number", number(-30, 30, 0),
           ("and c is {v}", "and c = {v}")),
    "coefficients": Q(("coefficients", "coeffs", "polynomial"), ("The polynomial's coefficients, highest power first",),
                      "array", numbers((2, 5), -9, 9, 0), ("with coefficients {v}", "whose coefficients are {v}")),
    "x": Q(("x", "value", "at"), ("The value of x", "Where to evaluate"), "number", number(-10, 10, 1),
           ("at x = {v}", "for x equal to {v}")),
    "n": Q(("n", "number", "num"), ("A whole number", "The integer n"), "integer", _whole(2, 60),
           ("of {v}", "for n = {v}")),
    "k": Q(("k", "choose", "r"), ("How many are chosen", "The number of items picked"), "integer", _whole(1, 8),
           ("choosing {v}", "taking {v} at a time", "picking {v}")),
    "integers": Q(("numbers", "integers", "values"), ("The whole numbers",), "array", numbers((2, 4), 6, 240, 0),
                  ("of {v}", "for {v}")),
    "point1": Q(("point1", "start_point", "p1"), ("The first point [x, y]",), "array", _point, ("from {v}", "between {v}"),
                _say_point),
    "point2": Q(("point2", "end_point", "p2"), ("The second point [x, y]",), "array", _point, ("to {v}", "and {v}"),
                _say_point),
    # geometry
    "radius": Q(("radius", "r", "radius_cm"), ("The radius", "Radius of the base"), "number", number(0.5, 50, 1),
                ("with a radius of {v}", "of radius {v}")),
    "side": Q(("side", "edge_length", "side_length"), ("The length of a side", "Edge length"), "number",
              number(0.5, 40, 1), ("with sides of {v}", "of side {v}")),
    "base": Q(("base", "base_length", "b"), ("The base length", "Length of the base"), "number", number(1, 60, 1),
              ("with a base of {v}", "base {v}")),
    # economics
    "revenue": Q(("revenue", "sales", "income"), ("Total revenue in dollars", "Sales revenue"), "number",
                 number(1000, 900000, 0), ("with revenue of ${v}", "selling {v} dollars")),
    "cost": Q(("cost", "costs", "total_cost"), ("Total cost in dollars", "What it cost"), "number",
              number(500, 700000, 0), ("and costs of ${v}", "costing {v} dollars")),
    "price": Q(("price", "unit_price", "price_per_unit"), ("The price of one unit",), "number", number(0.5, 300, 2),
               ("at ${v} each", "selling at {v} a unit")),
    "rate": Q(("rate", "annual_rate", "percent"), ("The yearly rate in percent", "Rate per year (%)"), "number",
              number(0.5, 12, 1), ("at {v}% a year", "with a {v} percent yearly rate")),
    "years": Q(("years", "period_years", "duration_years"), ("How many years", "Number of years"), "integer",
               _whole(1, 40), ("over {v} years", "for {v} years")),
    "amount": Q(("amount", "value", "sum"), ("The amount of money",), "number", number(10, 50000, 2),
                ("of {v} dollars", "for ${v}")),
    # computing
    "file_size": Q(("file_size_mb", "size_mb", "file_size"), ("The file size in megabytes",), "number",
                   number(1, 60000, 1), ("of {v} MB", "for a {v} MB file")),
    "bandwidth": Q(("bandwidth_mbps", "speed_mbps", "bandwidth"), ("The connection speed in megabits per second",),
                   "number", lambda r: r.choice([8, 25, 50, 100, 300, 940]), ("at {v} Mbps", "over a {v} Mbps line")),
    "count": Q(("count", "items", "quantity"), ("How many", "The number of items"), "integer", _whole(2, 5000),
               ("for {v} items", "{v} of them")),
    # geography and travel
    "city1": Q(("origin", "from_city", "start_city"), ("The starting city",), "string",
               lambda r: r.choice(["Lisbon", "Cape Town", "Osaka", "Winnipeg", "Valparaíso", "Tbilisi", "Da Nang"]),
               ("from {v}", "leaving {v}")),
    "city2": Q(("destination", "to_city", "end_city"), ("The destination city",), "string",
               lambda r: r.choice(["Marrakesh", "Bergen", "Hobart", "Ushuaia", "Kyoto", "Québec City", "Aarhus"]),
               ("to {v}", "and {v}")),
    "speed_kmh": Q(("speed_kmh", "average_speed", "kmh"), ("Average speed in km/h",), "number", number(4, 900, 0),
                   ("at {v} km/h", "averaging {v} km/h")),
    "distance_km": Q(("distance_km", "distance", "km"), ("The distance in kilometres",), "number", number(0.4, 12000, 1),
                     ("over {v} km", "for {v} kilometres", "covering {v} km")),
    # astronomy (held out)
    "orbit_radius": Q(("orbital_radius", "semi_major_axis", "orbit_radius_km"), ("The orbit's radius in km",), "number",
                      number(7000, 800000000, 0), ("at an orbit of {v} km", "orbiting at {v} km")),
    "body_mass": Q(("central_mass", "body_mass", "planet_mass"), ("The mass of the central body in kg",), "number",
                   lambda r: r.choice([5.97e24, 1.989e30, 6.42e23, 1.898e27, 7.35e22]),
                   ("around a body of {v} kg", "of a planet with mass {v} kg")),
    "body_radius": Q(("body_radius", "planet_radius", "radius_km"), ("The body's radius in km",), "number",
                     lambda r: r.choice([6371, 3389.5, 1737.4, 69911, 2439.7]), ("of radius {v} km", "{v} km across")),
    "light_years": Q(("distance_ly", "light_years", "distance"), ("The distance in light years",), "number",
                     number(0.5, 3000, 2), ("{v} light years away", "at {v} ly")),
    "magnitude": Q(("apparent_magnitude", "magnitude", "mag"), ("The star's apparent magnitude",), "number",
                   number(-1.5, 12, 2), ("with apparent magnitude {v}", "shining at magnitude {v}")),
    # probability (held out)
    "trials": Q(("trials", "n_trials", "attempts"), ("How many trials", "Number of independent trials"), "integer",
                _whole(2, 60), ("in {v} trials", "over {v} attempts")),
    "successes": Q(("successes", "k_successes", "hits"), ("How many successes",), "integer", _whole(0, 12),
                   ("exactly {v} successes", "{v} times")),
    "probability": Q(("probability", "p", "p_success"), ("The chance of success in one trial, 0 to 1",), "number",
                     number(0.01, 0.99, 2), ("with a chance of {v} each", "each with probability {v}")),
    "mean": Q(("mean", "mu", "average"), ("The distribution's mean",), "number", number(-50, 200, 1),
              ("with mean {v}", "a mean of {v}")),
    "std_dev": Q(("std_dev", "sigma", "standard_deviation"), ("The standard deviation",), "number", number(0.5, 40, 1),
                 ("and standard deviation {v}", "sigma {v}")),
    "score": Q(("x", "score", "observation"), ("The value to score",), "number", number(-60, 250, 1),
               ("for a value of {v}", "of {v}")),
    "dice": Q(("dice", "num_dice", "how_many"), ("How many dice are rolled (default 2)",), "integer", _whole(1, 5),
              ("rolling {v} dice", "with {v} dice")),
    "faces": Q(("sides", "faces", "die_sides"), ("The number of faces of each die",), "integer",
               lambda r: r.choice([4, 6, 8, 10, 12, 20]), ("with {v}-sided dice", "on a d{v}")),
    # sports (held out)
    "wins": Q(("wins", "games_won", "victories"), ("Games won",), "integer", _whole(0, 82), ("with {v} wins", "winning {v}")),
    "losses": Q(("losses", "games_lost", "defeats"), ("Games lost",), "integer", _whole(0, 82),
                ("and {v} losses", "losing {v}")),
    "hits": Q(("hits", "base_hits"), ("The hits",), "integer", _whole(0, 220), ("with {v} hits", "{v} hits")),
    "at_bats": Q(("at_bats", "attempts", "plate_appearances"), ("The at-bats",), "integer", _whole(10, 650),
                 ("in {v} at-bats", "from {v} at bats")),
    "minutes": Q(("minutes", "time_minutes", "duration_min"), ("The time in minutes",), "number", number(3, 300, 1),
                 ("in {v} minutes", "taking {v} min")),
    "points": Q(("points", "total_points", "score_total"), ("Points scored",), "integer", _whole(0, 3000),
                ("scoring {v} points", "with {v} points")),
    "games": Q(("games", "games_played", "matches"), ("Games played",), "integer", _whole(1, 82),
               ("over {v} games", "in {v} matches")),
    # ecology (held out)
    "population": Q(("initial_population", "population", "n0"), ("The starting population",), "integer",
                    _whole(10, 90000), ("starting from {v} individuals", "of {v}")),
    "growth_rate": Q(("growth_rate", "r", "rate_per_year"), ("The growth rate per year, as a fraction",), "number",
                     number(0.01, 0.9, 2), ("growing at {v} a year", "with a growth rate of {v}")),
    "capacity": Q(("carrying_capacity", "capacity", "k"), ("The carrying capacity",), "integer", _whole(1000, 500000),
                  ("with a carrying capacity of {v}", "capped at {v}")),
    "species_counts": Q(("counts", "species_counts", "abundances"), ("How many of each species were counted",), "array",
                        numbers((3, 6), 1, 400, 0), ("from counts of {v}", "with {v} individuals of each species")),
}

# A formula: its field, what it computes, its required quantities and its optional ones.
Formula = tuple[str, str, tuple[str, ...], tuple[str, ...]]
FORMULAS: list[Formula] = [
    ("mechanics", "kinetic energy", ("mass", "velocity"), ()),
    ("mechanics", "potential energy", ("mass", "height"), ("gravity",)),
    ("mechanics", "final velocity", ("acceleration", "time"), ("initial_velocity",)),
    ("mechanics", "distance travelled", ("acceleration", "time"), ("initial_velocity",)),
    ("mechanics", "projectile range", ("velocity", "angle"), ("gravity",)),
    ("mechanics", "momentum", ("mass", "velocity"), ()),
    ("electricity", "electrical power", ("voltage", "current"), ()),
    ("electricity", "capacitor energy", ("capacitance", "voltage"), ()),
    ("electricity", "series resistance", ("resistances",), ()),
    ("electricity", "parallel resistance", ("resistances",), ()),
    ("heat", "heat energy", ("mass", "specific_heat", "temperature_change"), ()),
    ("heat", "cooling time", ("mass", "temperature_change"), ("specific_heat",)),
    ("waves", "wave speed", ("frequency", "wavelength"), ()),
    ("waves", "photon energy", ("frequency",), ()),
    ("waves", "image distance", ("focal_length", "object_distance"), ()),
    ("algebra", "quadratic roots", ("a", "b", "c"), ()),
    ("algebra", "polynomial value", ("coefficients", "x"), ()),
    ("algebra", "line slope", ("point1", "point2"), ()),
    ("numbers", "greatest common divisor", ("integers",), ()),
    ("numbers", "least common multiple", ("integers",), ()),
    ("numbers", "factorial", ("n",), ()),
    ("numbers", "prime factors", ("n",), ()),
    ("geometry", "sphere volume", ("radius",), ()),
    ("geometry", "cone volume", ("radius", "height"), ()),
    ("geometry", "cube surface area", ("side",), ()),
    ("geometry", "triangle area", ("base", "height"), ()),
    ("geometry", "circle circumference", ("radius",), ()),
    ("economics", "profit margin", ("revenue", "cost"), ()),
    ("economics", "break-even units", ("cost", "price"), ()),
    ("economics", "inflation-adjusted value", ("amount", "rate", "years"), ()),
    ("economics", "future value", ("amount", "rate"), ("years",)),
    ("computing", "download time", ("file_size", "bandwidth"), ()),
    ("computing", "storage needed", ("count", "file_size"), ()),
    ("geography", "travel distance", ("city1", "city2"), ()),
    ("geography", "travel time", ("distance_km", "speed_kmh"), ()),
    ("geography", "great-circle distance", ("point1", "point2"), ()),
    ("astronomy", "orbital period", ("orbit_radius", "body_mass"), ()),
    ("astronomy", "escape velocity", ("body_mass", "body_radius"), ()),
    ("astronomy", "light travel time", ("light_years",), ()),
    ("astronomy", "absolute magnitude", ("magnitude", "light_years"), ()),
    ("probability", "binomial probability", ("trials", "successes", "probability"), ()),
    ("probability", "z-score", ("score", "mean", "std_dev"), ()),
    ("probability", "combinations", ("n", "k"), ()),
    ("probability", "dice sum odds", ("faces",), ("dice",)),
    ("sports", "win percentage", ("wins", "losses"), ()),
    ("sports", "batting average", ("hits", "at_bats"), ()),
    ("sports", "running pace", ("distance_km", "minutes"), ()),
    ("sports", "points per game", ("points", "games"), ()),
    ("ecology", "exponential growth", ("population", "growth_rate", "years"), ()),
    ("ecology", "logistic growth", ("population", "growth_rate", "capacity"), ("years",)),
    ("ecology", "diversity index", ("species_counts",), ()),
    ("ecology", "doubling time", ("growth_rate",), ()),
]
HELD_OUT_FIELDS = ("astronomy", "probability", "sports", "ecology")

NAMINGS = ("calculate_{s}", "compute_{s}", "get_{s}", "{f}_{s}", "{s}")
DESCRIPTIONS = ("Calculate the {t} from {i}", "Compute the {t} given {i}", "The {t}, from {i}", "Work out the {t}")
OPENINGS = ("What is the {t}", "Calculate the {t}", "Find the {t}", "Compute the {t}", "I need the {t}",
            "Can you work out the {t}", "Tell me the {t}")
DECIMALS = Q(("decimals", "precision", "round_to"), ("Decimal places in the result (default 2)",), "integer",
             _whole(0, 6), ("rounded to {v} decimal places", "to {v} decimals"))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower())


def _function(formula: Formula, naming: str, r: random.Random) -> Operation:
    """One formula as a function named by ``naming``: a description, parameter names and phrasings
    drawn by ``r``; its required quantities in order, its optional ones (and, in a third, the result's
    decimals) anywhere after."""
    field, target, required, optional = formula
    arguments = [QUANTITIES[key].argument(True, r) for key in required]
    inputs = " and ".join(a[0].replace("_", " ") for a in arguments)
    extras = [QUANTITIES[key].argument(False, r) for key in optional]
    if r.random() < 0.33:
        extras.append(DECIMALS.argument(False, r))
    for extra in extras:
        if extra[0] not in {a[0] for a in arguments}:
            arguments.insert(r.randint(1, len(arguments)), extra)
    slug = _slug(target)
    result_name = r.choice([slug, "result", "value"])

    def result(a: dict[str, Any], g: random.Random) -> dict[str, Any]:
        return {result_name: round(g.uniform(0.1, 5000), 2)}

    def answer(a: dict[str, Any], res: dict[str, Any]) -> str:
        return f"The {target} is {res[result_name]}."

    return Operation(naming.format(s=slug, f=field), r.choice(DESCRIPTIONS).format(t=target, i=inputs),
                     arguments, tuple(o.format(t=target) for o in r.sample(OPENINGS, 3)), result, answer)


def formula_groups(held_out: bool = False, seed: int = 11, variants: int = 2) -> list[list[Operation]]:
    """The functions of the training fields (or, ``held_out``, of ``HELD_OUT_FIELDS``): ``variants`` of
    each formula, each under its own name, parameters and phrasings, one group per field and variant (a row's
    distractors are often the field's other formulas, never another variant of the same one); the same
    ``seed``, the same functions."""
    r = random.Random(seed)
    fields = list(dict.fromkeys(field for field, *_ in FORMULAS))
    groups: dict[tuple[str, int], list[Operation]] = {}
    for formula in FORMULAS:  # every function drawn, whichever are kept: the two sets never depend on each other
        for v, naming in enumerate(r.sample(NAMINGS, variants)):
            groups.setdefault((formula[0], v), []).append(_function(formula, naming, r))
    return [groups[field, v] for v in range(variants) for field in fields if (field in HELD_OUT_FIELDS) == held_out]
