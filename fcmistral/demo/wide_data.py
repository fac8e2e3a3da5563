"""Wider generated glaive rows: 240 functions over 30 kinds of bookable thing, for experiments that
must measure reading a schema rather than recalling a name.

The shipped sample data (``sample_data.py``) has 10 functions: a model trained on it learns names,
not judgment. Here each of 30 kinds (flights, hotel rooms, tennis courts...) has the same eight
operations (search, details, book, cancel, update, rate, availability, cost), so 240 functions with
every JSON type among their parameters: strings, integers with bounds, numbers, booleans, enums
(each kind its own), arrays of strings, a nested object (the booking contact), optional arguments.
Requests are composed from a phrase per argument, so optional arguments appear in some requests and
not others and the values (names with apostrophes and accents, quotes in comments) must be copied.

Rows follow the glaive format byte for byte (prompt.py) with its patterns and a few more: direct
calls, "acknowledge, then call", a clarifying question for a missing required argument, two requests
answered by parallel calls in one turn (prompt.py's convention), refusals of requests no offered
function serves (many different ones: another kind's operation), and chit-chat without functions.
Distractor functions are often the same kind's other operations, so the choice is a real one.

``--heldout_kinds`` kinds (the last ones) never occur in the training rows: the held-out file
measures new schemas, as BFCL does. ``--general_share`` replaces a share of the train rows with rows
calling 31 functions of other fields (fcmistral.demo.general_functions: finance, geometry, physics,
statistics, units, health, chemistry, dates, text, cooking, energy), the held-out rows unchanged;
``--several_values_share`` likewise with requests naming several values of one argument, one call each;
``--composed_share`` with rows calling functions composed from a library of optional parameters
(fcmistral.demo.composed_functions); ``--formula_share`` with rows calling formulas of ten fields
(fcmistral.demo.formula_functions); ``--follow_up_share`` lets that share of the train rows' refusals go
on with a request an offered function serves. A third file, whatever the options, holds rows over the
formulas of four other fields (astronomy, probability, sports, ecology) that no training row calls:
transfer to new fields, measured on our own data.

    python -m fcmistral.demo.wide_data --out_dir outputs/wide
    # wide_train.jsonl, wide_heldout.jsonl, wide_heldout_fields.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fcmistral.data.augment import join_requests, refusal
from fcmistral.demo.composed_functions import composed_groups
from fcmistral.demo.formula_functions import formula_groups
from fcmistral.demo.general_functions import general_groups
from fcmistral.demo.operations import Argument, Operation
from fcmistral.demo.sample_data import _chitchat_row, _function_row, _prop, write_jsonl
from fcmistral.format.glaive import parse_functions
from fcmistral.prompt import FunctionCall, Turn, build_system_prompt, call_turn, render_chat


@dataclass(frozen=True)
class Kind:
    """A bookable thing: its name in function names, how many of it a booking takes (the parameter
    and its noun), and its own option (an enum)."""

    name: str
    plural: str
    quantity: str  # parameter name, also the noun in requests ("3 seats")
    option: str
    choices: tuple[str, ...]
    extras: tuple[str, ...]

    @property
    def noun(self) -> str:
        return self.name.replace("_", " ")


KINDS = [
    Kind("flight", "flights", "seats", "cabin", ("economy", "premium", "business", "first"), ("window seat", "extra legroom", "vegetarian meal")),
    Kind("hotel_room", "hotel rooms", "guests", "room_type", ("single", "double", "suite"), ("breakfast", "late checkout", "parking")),
    Kind("restaurant_table", "restaurant tables", "party_size", "seating", ("indoor", "outdoor", "bar"), ("high chair", "birthday cake", "quiet corner")),
    Kind("movie_ticket", "movie tickets", "tickets", "screen_format", ("2D", "3D", "IMAX"), ("popcorn", "recliner seat")),
    Kind("rental_car", "rental cars", "days", "car_class", ("compact", "suv", "van", "electric"), ("child seat", "GPS", "snow chains")),
    Kind("gym_class", "gym classes", "spots", "level", ("beginner", "intermediate", "advanced"), ("towel", "locker")),
    Kind("concert_ticket", "concert tickets", "tickets", "section", ("floor", "balcony", "box"), ("parking pass", "merch bundle")),
    Kind("train_ticket", "train tickets", "passengers", "travel_class", ("first", "second"), ("bicycle space", "quiet coach", "power socket")),
    Kind("bike_rental", "bike rentals", "hours", "bike_type", ("city", "mountain", "electric"), ("helmet", "lock", "child seat")),
    Kind("parking_spot", "parking spots", "hours", "spot_type", ("standard", "covered", "ev_charging"), ("car wash", "valet")),
    Kind("cooking_class", "cooking classes", "participants", "cuisine", ("italian", "thai", "mexican", "japanese"), ("apron", "recipe booklet")),
    Kind("museum_tour", "museum tours", "visitors", "tour_language", ("english", "french", "spanish", "german"), ("audio guide", "wheelchair")),
    Kind("boat_trip", "boat trips", "passengers", "trip_type", ("sunset", "fishing", "island"), ("life jacket", "lunch box")),
    Kind("spa_treatment", "spa treatments", "guests", "treatment", ("massage", "facial", "sauna"), ("robe", "herbal tea")),
    Kind("coworking_desk", "coworking desks", "desks", "desk_type", ("hot", "fixed", "private_office"), ("monitor", "locker", "coffee")),
    Kind("tennis_court", "tennis courts", "hours", "surface", ("clay", "grass", "hard"), ("racket rental", "ball machine")),
    Kind("ski_pass", "ski passes", "days", "pass_type", ("adult", "child", "senior"), ("insurance", "locker")),
    Kind("camping_site", "camping sites", "nights", "site_type", ("tent", "caravan", "cabin"), ("electricity", "firewood")),
    Kind("language_lesson", "language lessons", "lessons", "language", ("english", "spanish", "mandarin", "arabic"),
         ("textbook", "recording")),
    Kind("piano_lesson", "piano lessons", "lessons", "lesson_level", ("beginner", "intermediate", "advanced"), ("sheet music",)),
    Kind("dog_walker", "dog walkers", "walks", "dog_size", ("small", "medium", "large"), ("photo updates", "treats")),
    Kind("moving_van", "moving vans", "hours", "van_size", ("small", "medium", "large"), ("dolly", "blankets", "two helpers")),
    Kind("photography_session", "photography sessions", "hours", "style", ("portrait", "wedding", "product"), ("prints", "retouching")),
    Kind("escape_room", "escape rooms", "players", "difficulty", ("easy", "medium", "hard"), ("hint pack", "photo")),
    Kind("wine_tasting", "wine tastings", "guests", "wine", ("red", "white", "sparkling"), ("cheese plate", "bottle to take home")),
    Kind("bowling_lane", "bowling lanes", "players", "lane_type", ("standard", "vip"), ("shoe rental", "pizza")),
    Kind("laundry_pickup", "laundry pickups", "bags", "service", ("wash", "dry_clean", "iron"), ("fragrance free", "express")),
    Kind("ferry_ticket", "ferry tickets", "passengers", "deck", ("upper", "lower"), ("cabin", "car space")),
    Kind("karaoke_room", "karaoke rooms", "singers", "room_size", ("small", "medium", "party"), ("snacks", "extra microphone")),
    Kind("golf_tee_time", "golf tee times", "golfers", "holes", ("9", "18"), ("cart", "club rental")),
]
HELDOUT_KINDS = 5

CITIES = ["Paris", "New York", "Zürich", "São Paulo", "Tokyo", "Cairo", "Reykjavík", "Denver", "Kraków", "Lagos", "Lyon",
          "Osaka", "Seville", "Québec"]
PEOPLE = [("Zoë O'Brien", "zoe.obrien@example.com"), ("José Álvarez", "jose@example.es"), ("Mei Chen", "mei.chen@example.cn"),
          ("Liam O'Connor", "liam@example.ie"), ("Ana Łukasz", "ana.l@example.pl"), ("Sam Smith", "sam@example.com")]
REASONS = ["my plans changed", "I'm ill", "the weather looks bad", "we found a cheaper option", "my flight was cancelled"]
COMMENTS = ["Great, would book again!", "It was \"fine\", nothing more.", "Staff didn't show up on time.", "Loved it - 10/10",
            "Too noisy for my taste"]


def _date(r: random.Random) -> str:
    return f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def _code(kind: Kind, r: random.Random) -> str:
    return "".join(w[0] for w in kind.name.split("_")).upper() + f"-{r.randint(100, 9999)}"


def _booking(r: random.Random) -> str:
    return f"BK{r.randint(100000, 999999)}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def operations(kind: Kind) -> list[Operation]:
    """The eight functions of ``kind``."""
    n, ident, q = kind.noun, f"{kind.name}_id", kind.quantity
    a_n = ("an " if n[0] in "aeiou" else "a ") + n
    identifier: Argument = (ident, _prop("string", f"The {n} identifier"), True, lambda r: _code(kind, r),
                            lambda v: f"{n} {v}")
    booking: Argument = ("booking_id", _prop("string", "The booking reference"), True, _booking, lambda v: f"booking {v}")
    quantity: Argument = (q, _prop("integer", f"Number of {q.replace('_', ' ')}", minimum=1, maximum=12), True,
                          lambda r: r.randint(2, 8), lambda v: f"for {v} {q.replace('_', ' ')}")
    date: Argument = ("date", _prop("string", "The date, YYYY-MM-DD"), True, _date, lambda v: f"on {v}")
    option: Argument = (kind.option, _prop("string", f"The {kind.option.replace('_', ' ')}", enum=list(kind.choices)), True,
                        lambda r: r.choice(kind.choices), lambda v: f"with {kind.option.replace('_', ' ')} {v}")

    def optional(argument: Argument) -> Argument:
        return (argument[0], argument[1], False, *argument[3:])

    price = lambda r: round(r.uniform(20, 400), 2)  # noqa: E731
    return [
        Operation(f"search_{kind.plural.replace(' ', '_')}", f"Search for {kind.plural} in a city", [
            ("city", _prop("string", "The city"), True, lambda r: r.choice(CITIES), lambda v: f"in {v}"),
            ("max_price", _prop("number", "The highest price in USD"), False, lambda r: float(r.choice([50, 99.5, 150, 250])),
             lambda v: f"under {v:g} dollars"),
            optional(option),
            ("limit", _prop("integer", "How many results at most", minimum=1, maximum=10), False, lambda r: r.randint(2, 5),
             lambda v: f"showing at most {v} results")],
            (f"Find {kind.plural}", f"Search for {kind.plural}", f"Can you look up {kind.plural}", f"I'm looking for {kind.plural}"),
            lambda a, r: {"results": [{"id": _code(kind, r), "price": price(r)} for _ in range(2)]},
            lambda a, res: f"I found 2 {kind.plural} in {a['city']}: {res['results'][0]['id']} at ${res['results'][0]['price']} "
                           f"and {res['results'][1]['id']} at ${res['results'][1]['price']}."),
        Operation(f"get_{kind.name}_details", f"Get the details of {a_n}", [identifier],
                  ("Tell me more about", "What are the details of", "Show me the details of"),
                  lambda a, r: {"id": a[ident], "city": r.choice(CITIES), "price": price(r), "rating": round(r.uniform(2, 5), 1)},
                  lambda a, res: f"{n.capitalize()} {a[ident]} is in {res['city']}, costs ${res['price']} and is rated "
                                 f"{res['rating']}."),
        Operation(f"book_{kind.name}", f"Book {a_n}", [
            identifier, date, quantity,
            ("contact", {"type": "object", "description": "Who the booking is for", "properties": {
                "name": _prop("string", "Full name"), "email": _prop("string", "Email address")},
                "required": ["name", "email"]}, True,
             lambda r: dict(zip(("name", "email"), r.choice(PEOPLE))), lambda v: f"under the name {v['name']} ({v['email']})"),
            ("extras", {"type": "array", "description": "Extras to add", "items": {"type": "string"}}, False,
             lambda r: r.sample(kind.extras, r.randint(1, len(kind.extras))), lambda v: f"with {_and(v)}")],
            ("Book", "Please book", "I'd like to book"),
            lambda a, r: {"status": "confirmed", "booking_id": _booking(r)},
            lambda a, res: f"Your {n} {a[ident]} is booked for {a['date']}. Your booking reference is {res['booking_id']}."),
        Operation(f"cancel_{kind.name}_booking", f"Cancel {a_n} booking", [
            booking,
            ("reason", _prop("string", "Why the booking is cancelled"), False, lambda r: r.choice(REASONS), lambda v: f"because {v}"),
            ("notify", _prop("boolean", "Whether to send a confirmation email"), False, lambda r: r.random() < 0.5,
             lambda v: "and email me a confirmation" if v else "without any email")],
            (f"Cancel my {n}", f"Please cancel my {n}", f"I need to cancel my {n}"),
            lambda a, r: {"status": "cancelled", "booking_id": a["booking_id"]},
            lambda a, res: f"Your {n} booking {a['booking_id']} has been cancelled."),
        Operation(f"update_{kind.name}_booking", f"Change the date or the size of {a_n} booking", [
            booking, ("new_date", _prop("string", "The new date, YYYY-MM-DD"), True, _date, lambda v: f"to {v}"),
            optional(quantity)],
            (f"Move my {n}", f"Change my {n}", f"Please reschedule my {n}"),
            lambda a, r: {"status": "updated", "booking_id": a["booking_id"], "date": a["new_date"]},
            lambda a, res: f"Done: your {n} booking {a['booking_id']} is now on {a['new_date']}."),
        Operation(f"rate_{kind.name}", f"Rate {a_n} from 1 to 5 stars", [
            identifier, ("stars", _prop("integer", "The rating", minimum=1, maximum=5), True, lambda r: r.randint(1, 5),
                         lambda v: f"{v} stars"),
            ("comment", _prop("string", "A short review"), False, lambda r: r.choice(COMMENTS), lambda v: f"saying: {v}")],
            ("Rate", "Please give", "I want to give"),
            lambda a, r: {"status": "recorded"},
            lambda a, res: f"Thanks! Your {a['stars']}-star rating of {n} {a[ident]} has been recorded."),
        Operation(f"check_{kind.name}_availability", f"Check whether {a_n} is available on a date", [
            identifier, date, optional(quantity)],
            ("Is there room at", "Check availability of", "Can I still get"),
            lambda a, r: {"available": r.random() < 0.7},
            lambda a, res: f"{'Yes' if res['available'] else 'Sorry, no'}: {n} {a[ident]} is "
                           f"{'' if res['available'] else 'not '}available on {a['date']}."),
        Operation(f"estimate_{kind.name}_cost", f"Estimate the cost of {a_n}", [
            option, quantity,
            ("include_tax", _prop("boolean", "Whether the estimate includes tax"), False, lambda r: r.random() < 0.5,
             lambda v: "including tax" if v else "before tax")],
            (f"How much would it cost to get {a_n}", f"Estimate the price of {a_n}", f"What would I pay for {a_n}"),
            lambda a, r: {"total": price(r), "currency": "USD"},
            lambda a, res: f"That would cost about ${res['total']}."),
    ]


def _request(op: Operation, arguments: dict[str, Any], r: random.Random, omit: str | None = None,
             said: dict[str, str] | None = None) -> str:
    """A request naming ``arguments`` (less ``omit``), each by its phrase or as ``said`` has it."""
    said = said or {}
    phrases = [said.get(name) or say(arguments[name]) for name, _, _, _, say in op.arguments
               if name in arguments and name != omit]
    opening = r.choice(op.openings)
    return r.choice(["{o} {p}.", "{o} {p}, please.", "Hi! {o} {p}.", "{o} {p}?"]).format(o=opening, p=" ".join(phrases))


def _arguments(op: Operation, r: random.Random) -> dict[str, Any]:
    return {name: sample(r) for name, _, required, sample, _ in op.arguments if required or r.random() < 0.5}


def _exchange(op: Operation, r: random.Random) -> tuple[str, dict[str, Any], str, str]:
    arguments = _arguments(op, r)
    result = op.result(arguments, r)
    return _request(op, arguments, r), arguments, json.dumps(result, ensure_ascii=False), op.answer(arguments, result)


def _offered(op: Operation, pool: list[list[Operation]], r: random.Random) -> list[Operation]:
    """The target and 0-2 distractors, often the same kind's other operations."""
    same = next(ops for ops in pool if op in ops)
    others = [o for o in (same if r.random() < 0.6 else [o for ops in pool for o in ops]) if o is not op]
    chosen = [op, *r.sample(others, min(r.choice([0, 1, 1, 2]), len(others)))]  # a field may have two functions
    r.shuffle(chosen)
    return chosen


ACKS = ["Sure, let me check that for you.", "Of course, one moment please.", "Let me take care of that."]


def _row(pool: list[list[Operation]], r: random.Random, follow_up: Callable[[], bool] = lambda: False) -> dict[str, str]:
    """A row over ``pool``'s functions; a refusal goes on with a request an offered function serves
    where ``follow_up()`` says so (its own draws: ``r``'s stream, and so every other row, is the same)."""
    ops = [o for group in pool for o in group]
    op = r.choice(ops)
    functions = _offered(op, pool, r)
    pattern = r.random()
    request, arguments, result, answer = _exchange(op, r)
    if pattern < 0.1:  # a request no offered function serves
        other = r.choice([o for o in ops if o not in functions])
        turns = [Turn("user", _exchange(other, r)[0]), Turn("assistant", refusal(other.description, other.name, r))]
        if follow_up():  # the user's turn after a refusal, then a call: the refusal hands the conversation back
            turns += [Turn("user", request), call_turn([FunctionCall(op.name, arguments)]),
                      Turn("function_response", result), Turn("assistant", answer)]
    elif pattern < 0.22:  # two requests, parallel calls
        second = r.choice(functions)
        request2, arguments2, result2, answer2 = _exchange(second, r)
        if arguments2 == arguments:
            request2, arguments2, result2, answer2 = _exchange(second, r)
        turns = [Turn("user", join_requests(request, request2, r)),
                 call_turn([FunctionCall(op.name, arguments), FunctionCall(second.name, arguments2)]),
                 Turn("function_response", result), Turn("function_response", result2),
                 Turn("assistant", f"{answer} {answer2}")]
    else:
        after = [call_turn([FunctionCall(op.name, arguments)]), Turn("function_response", result), Turn("assistant", answer)]
        required = [name for name, _, req, _, _ in op.arguments if req]
        if pattern < 0.32 and len(required) > 1:  # a required argument missing: the assistant asks for it
            missing = r.choice(required)
            schema = next(a for a in op.arguments if a[0] == missing)
            described = schema[1]["description"][0].lower() + schema[1]["description"][1:]
            described = described if described.startswith("the ") else "the " + described
            turns = [Turn("user", _request(op, arguments, r, omit=missing)),
                     Turn("assistant", f"Sure. Could you tell me {described}?"),
                     Turn("user", _sentence(schema[4](arguments[missing])))] + after
        elif pattern < 0.45:
            turns = [Turn("user", request), Turn("assistant", r.choice(ACKS))] + after
        else:
            turns = [Turn("user", request)] + after
    return {"system": build_system_prompt([f.schema for f in functions]), "chat": render_chat(turns)}


SAME_AGAIN = ["Then the same {p}.", "Do the same {p} too.", "And again {p}, please.", "Same again {p}."]


def _several_values_row(pool: list[list[Operation]], r: random.Random) -> dict[str, str] | None:
    """One request naming two to four values of one argument ("in Paris and in Tokyo"), answered by one
    call per value in one turn (prompt.py's parallel convention), then every result and one answer;
    None when the drawn call has no argument with several values to draw.

    Why: ``_row``'s parallel rows join two requests, each with its own values; a request that lists
    several values of one argument never occurs there, and row i's model wrote one call, or the first
    value in every call, for such requests (BFCL parallel, read after its run). Training's
    ``--parallel_rate`` makes such rows from any data (fcmistral.data.augment.with_listed_values), but
    only from partner rows whose call differs in one value, two or three of them; here the generator
    draws the values itself, so every function with a string or number argument gets them, up to four."""
    ops = [o for group in pool for o in group]
    op = r.choice(ops)
    functions = _offered(op, pool, r)
    arguments = _arguments(op, r)
    varied = [a for a in op.arguments if a[0] in arguments and a[1].get("type") in ("string", "integer", "number")]
    if not varied:
        return None
    name, _, _, sample, say = r.choice(varied)
    values, wanted = [arguments[name]], r.choice([2, 2, 3, 4])
    for _ in range(20):
        value = sample(r)
        if len(values) < wanted and value not in values:
            values.append(value)
    if len(values) < 2:
        return None
    calls = [{**arguments, name: value} for value in values]
    results = [op.result(call, r) for call in calls]
    phrases = [say(value).removeprefix("and ") for value in values]
    if r.random() < 0.5:  # the values side by side where the argument is named
        request = _request(op, arguments, r, said={name: _and([say(values[0])] + phrases[1:])})
    else:  # the first value in the request, the others after it
        request = _request(op, arguments, r) + " " + r.choice(SAME_AGAIN).format(p=_and(phrases[1:]))
    turns = [Turn("user", request), call_turn([FunctionCall(op.name, call) for call in calls]),
             *(Turn("function_response", json.dumps(result, ensure_ascii=False)) for result in results),
             Turn("assistant", " ".join(op.answer(call, result) for call, result in zip(calls, results)))]
    return {"system": build_system_prompt([f.schema for f in functions]), "chat": render_chat(turns)}


def _sentence(phrase: str) -> str:
    return phrase[0].upper() + phrase[1:] + "."


def generate(train_rows: int, heldout_rows: int, heldout_kinds: int = HELDOUT_KINDS, seed: int = 2024,
             general_share: float = 0.0, several_values_share: float = 0.0, composed_share: float = 0.0,
             follow_up_share: float = 0.0, formula_share: float = 0.0) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train rows over the first kinds (plus 10% chit-chat and 10% of the sample data's everyday
    functions), held-out rows over the last ``heldout_kinds`` kinds only.

    ``general_share``: that share of the train rows, drawn apart (their own random stream), is
    replaced by rows of fcmistral.demo.general_functions' fields; every other row, and the held-out
    rows, stay as they are without it (so a run with them is compared on the same held-out file).
    ``composed_share``: likewise (a stream of its own), by rows calling functions composed from a
    library of optional parameters (fcmistral.demo.composed_functions).
    ``formula_share``: likewise (a stream of its own), by rows calling the training fields' formulas
    (fcmistral.demo.formula_functions).
    ``several_values_share``: likewise (a stream of its own, drawn last), by requests naming several values
    of one argument (``_several_values_row``), over the booking kinds' and the other fields' functions.
    ``follow_up_share``: that share of the train rows' refusals (a stream of its own) go on with the
    user's next request, which an offered function serves, and its call; the held-out rows never do.
    """
    r = random.Random(seed)
    pool = [operations(kind) for kind in KINDS]
    seen, unseen = pool[:-heldout_kinds], pool[-heldout_kinds:]
    following = random.Random(seed + 4)

    def follow_up() -> bool:
        return follow_up_share > 0 and following.random() < follow_up_share

    train = []
    for _ in range(train_rows):
        draw = r.random()
        # the sample data's ten everyday functions (weather, stocks...) for variety
        train.append(_chitchat_row(r) if draw < 0.1 else _function_row(r) if draw < 0.2 else _row(seen, r, follow_up))
    heldout = [_row(unseen, r) for _ in range(heldout_rows)]
    fields = general_groups() if general_share else []
    if general_share:
        general = random.Random(seed + 1)
        train = [_row(fields, general, follow_up) if general.random() < general_share else row for row in train]
    if composed_share:
        composing, composed = random.Random(seed + 3), composed_groups()
        train = [_row(composed, composing, follow_up) if composing.random() < composed_share else row for row in train]
    if formula_share:
        computing, formulas = random.Random(seed + 5), formula_groups()
        train = [_row(formulas, computing, follow_up) if computing.random() < formula_share else row for row in train]
    if several_values_share:
        several, functions = random.Random(seed + 2), seen + fields
        train = [(several.random() < several_values_share and _several_values_row(functions, several)) or row
                 for row in train]
    return train, heldout


def heldout_fields(rows: int, seed: int = 2024) -> list[dict[str, str]]:
    """Rows over the formulas of fcmistral.demo.formula_functions' held-out fields, which no training
    row calls whatever ``generate``'s options (a stream of their own: the other files are the same
    with or without them)."""
    r, pool = random.Random(seed + 6), formula_groups(held_out=True)
    return [_row(pool, r) for _ in range(rows)]


def function_names(rows: list[dict[str, str]]) -> set[str]:
    return {f["name"] for row in rows for f in parse_functions(row["system"])}


FIELDS_FILE = "wide_heldout_fields.jsonl"

# generate()'s options, each a share in [0, 1] (0: off), and what the command's help says of them.
SHARES = {
    "general_share": "share of the train rows replaced by rows calling functions of other fields (finance, geometry, "
                     "physics, statistics...: fcmistral.demo.general_functions); 0: bookings only",
    "several_values_share": "share of the train rows replaced by requests naming several values of one argument "
                            "('in Paris and in Tokyo'), answered by one call per value in one turn; 0: none",
    "composed_share": "share of the train rows replaced by rows calling functions composed from a library of optional "
                      "parameters (fcmistral.demo.composed_functions); 0: none",
    "formula_share": "share of the train rows replaced by rows calling formulas of ten fields (mechanics, algebra, "
                     "economics...: fcmistral.demo.formula_functions); 0: none",
    "follow_up_share": "share of the train rows' refusals after which the user asks for something an offered function "
                       "does, and the assistant calls it; 0: a refusal ends its row",
}


def main() -> None:
    parser = argparse.ArgumentParser(description="Write wide_train.jsonl, wide_heldout.jsonl and "
                                                 "wide_heldout_fields.jsonl (glaive format; the held-out kinds and "
                                                 "fields never occur in training).")
    parser.add_argument("--out_dir", type=Path, default=Path("outputs/wide"))
    parser.add_argument("--train_rows", type=int, default=3000)
    parser.add_argument("--heldout_rows", type=int, default=200)
    parser.add_argument("--heldout_kinds", type=int, default=HELDOUT_KINDS)
    parser.add_argument("--heldout_field_rows", type=int, default=100,
                        help="rows of wide_heldout_fields.jsonl (formulas of fields no training row calls)")
    for share, help_text in SHARES.items():
        parser.add_argument(f"--{share}", type=float, default=0.0, help=help_text)
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args()
    paths = [args.out_dir / "wide_train.jsonl", args.out_dir / "wide_heldout.jsonl", args.out_dir / FIELDS_FILE]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not args.overwrite:
        raise SystemExit(f"error: {existing[0]} exists; pass --overwrite to replace it")
    if not 0 < args.heldout_kinds < len(KINDS):
        raise SystemExit(f"error: --heldout_kinds must be between 1 and {len(KINDS) - 1}")
    if args.heldout_field_rows < 0:
        raise SystemExit("error: --heldout_field_rows must be 0 or more")
    for option in SHARES:
        if not 0 <= getattr(args, option) <= 1:
            raise SystemExit(f"error: --{option} must be between 0 and 1, got {getattr(args, option)}")
    train, heldout = generate(args.train_rows, args.heldout_rows, args.heldout_kinds,
                              **{share: getattr(args, share) for share in SHARES})
    fields = heldout_fields(args.heldout_field_rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for rows, path in zip((train, heldout, fields), paths):
        write_jsonl(rows, path)
    print(f"wrote {len(train)} rows ({len(function_names(train))} functions), {len(heldout)} held-out rows "
          f"({len(function_names(heldout))} functions, none in training) and {len(fields)} rows of held-out fields "
          f"({len(function_names(fields))} functions) to {args.out_dir}")


if __name__ == "__main__":
    main()
