"""Functions composed at random from a library of subjects, topics and optional parameters, for the
wide data's ``--composed_share``.

Why: the wide data's booking kinds share eight operations, and the other fields' 31 functions are
written one by one, so an optional argument is one of a few dozen, each always asked for in the same
words ("including tax"); a model trained on them learns those pairs, not to read a schema. Read
after row j's runs (docs/training.md), the largest class of its failures on functions it never saw:
an optional argument the request asks for, left out, or one it does not ask for, filled with a
value made up. Here each function draws its optional parameters from a library of generic ones
(units, flags to include something, counts, orders, languages, formats, ranges), each under one of
several names and descriptions, asked for in one of several ways and placed anywhere among the
arguments, so the same concept reads differently from one function to the next and only the
schema and the request say whether and how to fill it. Every function also has a required subject
(a city, a company, a species...) whose value is copied. Nothing here is taken from a benchmark.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from fcmistral.demo.operations import Argument, Operation
from fcmistral.demo.sample_data import _prop

# A subject: (parameter names, description, values, phrases naming a value, topics asked about it).
Subject = tuple[tuple[str, ...], str, list[str], tuple[str, ...], tuple[str, ...]]
SUBJECTS: list[Subject] = [
    (("city", "location"), "The city", ["Lisbon", "Nairobi", "Toronto", "Hanoi", "Oslo", "Lima", "Perth", "Dubai"],
     ("in {v}", "for {v}"), ("air quality", "weather forecast", "public events", "traffic report", "population")),
    (("company", "company_name"), "The company's name", ["Acme Corp", "Globex", "Initech", "Umbrella Ltd", "Hooli"],
     ("for {v}", "of {v}"), ("stock price", "latest news", "quarterly earnings", "job openings")),
    (("country", "country_name"), "The country", ["Kenya", "Chile", "Norway", "Vietnam", "Portugal", "Canada"],
     ("in {v}", "for {v}"), ("public holidays", "exchange rate", "population growth", "visa rules")),
    (("species", "animal"), "The species", ["red fox", "snow leopard", "barn owl", "green turtle", "honey bee"],
     ("of the {v}", "for the {v}"), ("habitat", "population trend", "diet", "lifespan")),
    (("artist", "musician"), "The artist's name", ["Nina Simone", "Daft Punk", "Björk", "Miles Davis", "Aurora"],
     ("by {v}", "from {v}"), ("top songs", "concert dates", "album list")),
    (("team", "team_name"), "The sports team", ["Lakers", "Ajax", "All Blacks", "Yankees", "Boca Juniors"],
     ("of the {v}", "for the {v}"), ("match results", "league standing", "player roster")),
    (("title", "book_title"), "The book's title", ["Dune", "Beloved", "The Hobbit", "Things Fall Apart", "Emma"],
     ("of \"{v}\"", "for \"{v}\""), ("reader reviews", "author details", "similar books")),
    (("product", "product_name"), "The product", ["air fryer", "e-reader", "standing desk", "robot vacuum"],
     ("for the {v}", "of the {v}"), ("price history", "user ratings", "store availability")),
    (("dish", "recipe"), "The dish", ["paella", "pad thai", "lentil soup", "banana bread", "ramen"],
     ("for {v}", "of {v}"), ("recipes", "nutrition facts", "cooking time")),
    (("compound", "substance"), "The chemical compound", ["ethanol", "caffeine", "aspirin", "ozone", "glucose"],
     ("of {v}", "for {v}"), ("boiling point", "safety data", "molecular structure")),
    (("planet", "body"), "The planet or moon", ["Mars", "Jupiter", "Europa", "Titan", "Venus"],
     ("of {v}", "for {v}"), ("orbit data", "surface temperature", "moons")),
    (("airport", "airport_code"), "The airport's code", ["LIS", "NBO", "YYZ", "HAN", "OSL"],
     ("at {v}", "for {v}"), ("departures", "delays", "parking prices")),
]

VERBS = ("get", "fetch", "find", "lookup", "retrieve")
OPENINGS = ("What is the {t}", "Get me the {t}", "Look up the {t}", "Show the {t}", "I need the {t}",
            "Can you find the {t}")
FLAGS = ["photos", "reviews", "history", "a summary", "sources", "comments", "charts", "translations", "maps",
         "contact details", "hourly details", "related items", "statistics", "warnings"]
ENUMS = {  # names, descriptions, choices, phrases naming a choice
    "unit": (("unit", "units", "measurement_unit"), ("The unit of measure", "Units for the result"),
             [["metric", "imperial"], ["celsius", "fahrenheit"], ["km", "miles"], ["kg", "lb"]],
             ("in {v}", "using {v} units", "with {v} units")),
    "order": (("sort_order", "order"), ("The order of the results", "How the results are sorted"),
              [["ascending", "descending"], ["newest", "oldest"]], ("sorted {v}", "in {v} order")),
    "language": (("language", "lang"), ("The language of the answer", "Language to reply in"),
                 [["English", "French", "Spanish", "German", "Japanese"]], ("in {v}", "written in {v}")),
    "format": (("format", "output_format"), ("The format of the output", "Output format"),
               [["json", "csv", "text", "pdf"]], ("as {v}", "in {v} format")),
    "level": (("detail_level", "detail"), ("How detailed the answer is", "The level of detail"),
              [["brief", "standard", "full"]], ("at the {v} level of detail", "{v} detail")),
    "method": (("method", "model"), ("The method to use", "The model used for the estimate"),
               [["statistical", "machine learning", "historical average"], ["fast", "exact"]],
               ("using the {v} method", "with the {v} model")),
}
NUMBERS = {  # names, description, type, sampler, phrases
    "limit": (("limit", "max_results", "top_n"), "How many results at most", "integer", lambda r: r.randint(2, 20),
              ("showing at most {v} results", "only the top {v}", "limited to {v} items")),
    "days": (("days", "num_days", "period_days"), "How many days ahead", "integer", lambda r: r.randint(2, 14),
             ("for the next {v} days", "over {v} days", "covering {v} days")),
    "year": (("year",), "The year", "integer", lambda r: r.randint(1995, 2026), ("in {v}", "for the year {v}", "as of {v}")),
    "radius": (("radius_km", "distance_km"), "The search radius in kilometres", "number",
               lambda r: r.choice([1.5, 2, 5, 10, 12.5, 25]), ("within {v:g} km", "no farther than {v:g} km")),
    "rating": (("min_rating", "rating_at_least"), "The lowest rating to include", "number",
               lambda r: r.choice([3, 3.5, 4, 4.5]), ("rated at least {v:g}", "with a rating of {v:g} or more")),
    "budget": (("max_price", "budget"), "The highest price in dollars", "number",
               lambda r: r.choice([15, 40, 99.99, 250, 1200]), ("under {v:g} dollars", "for at most ${v:g}")),
}
STRINGS = {  # names, description, values, phrases
    "since": (("start_date", "since", "from_date"), "The first date, YYYY-MM-DD",
              ["2025-03-01", "2026-01-15", "2024-11-30", "2026-06-10"], ("since {v}", "starting {v}", "from {v}")),
    "category": (("category", "topic"), "The category to keep", ["sports", "science", "finance", "travel", "health"],
                 ("in the {v} category", "about {v}")),
    "region": (("region", "area"), "The region to cover", ["north", "south", "east", "west", "downtown"],
               ("in the {v} region", "for the {v} area")),
    "keyword": (("keyword", "query"), "A word the results must contain", ["organic", "wireless", "vintage", "solar"],
                ("matching \"{v}\"", "with the keyword {v}")),
}


def _phrase(template: str) -> Callable[[Any], str]:
    return lambda v: template.format(v=v)


def _flag(r: random.Random) -> Argument:
    thing = r.choice(FLAGS)
    name = "include_" + thing.removeprefix("a ").replace(" ", "_")
    yes, no = r.choice([("including {t}", "without {t}"), ("with {t}", "leaving out {t}"),
                        ("and include {t}", "and skip the {t}")])
    return (name, _prop("boolean", r.choice([f"Whether to include {thing}", f"Add {thing} to the result"])), False,
            lambda g: g.random() < 0.5, lambda v: (yes if v else no).format(t=thing.removeprefix("a ")))


def _parameter(key: str, required: bool, r: random.Random) -> Argument:
    """A parameter of the library, under one of its names, descriptions and phrasings."""
    if key == "flag":
        return _flag(r)
    if key in ENUMS:
        names, descriptions, choice_sets, phrases = ENUMS[key]
        choices = r.choice(choice_sets)
        return (r.choice(names), _prop("string", r.choice(descriptions), enum=list(choices)), required,
                lambda g: g.choice(choices), _phrase(r.choice(phrases)))
    if key in NUMBERS:
        names, description, kind, sample, phrases = NUMBERS[key]
        return (r.choice(names), _prop(kind, description), required, sample, _phrase(r.choice(phrases)))
    names, description, values, phrases = STRINGS[key]
    return (r.choice(names), _prop("string", description), required, lambda g: g.choice(values),
            _phrase(r.choice(phrases)))


LIBRARY = ["flag", "flag", *ENUMS, *NUMBERS, *STRINGS]


def _function(subject: Subject, topic: str, verb: str, r: random.Random) -> Operation:
    names, description, values, phrases, _ = subject
    main_name = r.choice(names)
    main: Argument = (main_name, _prop("string", description), True, lambda g: g.choice(values),
                      _phrase(r.choice(phrases)))
    keys = r.sample(LIBRARY, r.choice([1, 2, 2, 3]))
    arguments = [main]
    for i, key in enumerate(keys):
        # A second required parameter in a third of the functions (then a request may leave it out and
        # be asked for it, as in the wide data's other rows); flags are always optional.
        argument = _parameter(key, i == 0 and key != "flag" and r.random() < 0.3, r)
        if argument[0] not in {a[0] for a in arguments}:
            arguments.insert(r.randint(1, len(arguments)), argument)  # anywhere after the subject
    slug = topic.replace(" ", "_")
    name = f"{verb}_{names[0]}_{slug}"
    openings = tuple(o.format(t=topic) for o in r.sample(OPENINGS, 3))

    def result(a: dict[str, Any], g: random.Random) -> dict[str, Any]:
        return {slug: round(g.uniform(1, 500), 1), main_name: a[main_name]}

    def answer(a: dict[str, Any], res: dict[str, Any]) -> str:
        return f"The {topic} for {a[main_name]}: {res[slug]}."

    noun = names[0].replace("_", " ")
    return Operation(name, f"{r.choice(['Get', 'Look up', 'Retrieve'])} the {topic} of a given {noun}",
                     arguments, openings, result, answer)


def composed_groups(seed: int = 7, variants: int = 3) -> list[list[Operation]]:
    """The functions: ``variants`` of each subject's topics, each under its own verb, parameters and
    phrasings, one group per subject and variant (a row's distractors are often the group's other
    topics, never another variant of the same topic); the same ``seed``, the same functions."""
    r = random.Random(seed)
    groups: list[list[Operation]] = [[] for _ in range(variants * len(SUBJECTS))]
    for s, subject in enumerate(SUBJECTS):
        for topic in subject[4]:
            for v, verb in enumerate(r.sample(VERBS, variants)):
                groups[v * len(SUBJECTS) + s].append(_function(subject, topic, verb, r))
    return groups
