"""Generate the bundled function-calling task in data/fc/: user requests, the tool schemas on offer, and the calls.

CATALOG holds 44 realistic tools as BFCL-style JSON schemas (`"parameters": {"type": "dict", ...}`; types
string, integer, float, boolean, array and string enums), each with a few phrasings of a request and small pools
of values (cities, dates, amounts, names). The tools are split once, by hand, into train tools and held-out test
tools: the test split calls no function that train, dev or the demos offer. An example is one of four kinds, as
in BFCL: `single` (one function offered, one call), `multiple` (one call among 2-4 offered functions),
`parallel` (2-3 calls, of one function or several, plus 0-2 unused functions) and `no_call` (nothing offered can
serve the request; the gold call list is empty). Arguments hold exactly what the request states: an optional
parameter appears only when its value is asked for. Demonstrations use train tools only and are full responses
in ToolRL's format (`<think>`, then `<tool_call>` JSON lines or a `<response>`).
Stdlib only and seeded: running it twice writes byte-identical files, README included.

    python scripts/make_fc_task.py [--out-dir data/fc]
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import string
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

SEED = 4242
OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "fc"
SIZES = {"test": 200, "dev": 100, "train": 800}  # drawn in this order, after the demos: test never depends on train
MIX = {"single": 0.35, "multiple": 0.25, "parallel": 0.25, "no_call": 0.15}
DEMO_PLANS = ["single"] * 4 + ["multiple"] * 3 + ["parallel:same", "parallel:mixed", "parallel", "no_call:tool",
                                                 "no_call:general"]
GENERAL_NO_CALL_SHARE = 0.3  # of no_call requests: chit-chat; the rest ask for a tool that is not offered
NEVER_OFFERED_FOR_NO_CALL = ("search",)  # a search engine could serve almost any request

# ---------------------------------------------------------------------------------------------- schema helpers


def string_param(description: str, **extra) -> dict:
    return {"type": "string", "description": description, **extra}


def integer_param(description: str, **extra) -> dict:
    return {"type": "integer", "description": description, **extra}


def float_param(description: str, **extra) -> dict:
    return {"type": "float", "description": description, **extra}  # BFCL's spelling of a JSON-schema number


def boolean_param(description: str, default: bool = False) -> dict:
    return {"type": "boolean", "description": description, "default": default}


def array_param(description: str, items: str) -> dict:
    return {"type": "array", "items": {"type": items}, "description": description}


def enum_param(description: str, values: list[str], default: str | None = None) -> dict:
    spec = {"type": "string", "enum": values, "description": description}
    return spec if default is None else {**spec, "default": default}


def schema(name: str, description: str, required: list[str], /, **properties: dict) -> dict:
    return {"name": name, "description": description,
            "parameters": {"type": "dict", "properties": properties, "required": required}}


# ---------------------------------------------------------------------------------------------- value pools
# A pool draws one argument: (rng, values drawn so far for this call) -> (value, how the request writes it).
Pool = Callable[[random.Random, dict], tuple[object, str]]


def number_text(x: object) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def choice(values: list) -> Pool:
    return lambda rng, drawn: (v := rng.choice(values), number_text(v))


def floats(values: list) -> Pool:
    return lambda rng, drawn: (v := float(rng.choice(values)), number_text(v))


def labelled(texts: dict[str, str]) -> Pool:
    """An enum value and the words a request uses for it: {"gas_station": "gas station"}."""
    return lambda rng, drawn: (v := rng.choice(list(texts)), texts[v])


def listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def several(values: list, low: int, high: int, exclude: str | None = None) -> Pool:
    """A list of `low`-`high` distinct values, written "a, b and c"; none equal to the items of `exclude`."""
    def draw(rng: random.Random, drawn: dict) -> tuple[list, str]:
        taken = drawn.get(exclude, [])
        items = rng.sample([v for v in values if v not in taken], rng.randint(low, high))
        return items, listing([number_text(v) for v in items])
    return draw


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def date_value(day: datetime.date, rng: random.Random) -> tuple[str, str]:
    """An ISO date, written ISO or "March 14, 2025" (the schema asks for YYYY-MM-DD)."""
    iso = day.isoformat()
    return iso, rng.choice([iso, f"{MONTHS[day.month - 1]} {day.day}, {day.year}"])


def date_in_2025(rng: random.Random, drawn: dict) -> tuple[str, str]:
    return date_value(datetime.date(2025, 1, 1) + datetime.timedelta(days=rng.randint(0, 364)), rng)


def date_after(key: str, low: int, high: int) -> Pool:
    """A date `low`-`high` days after the one drawn for `key`."""
    def draw(rng: random.Random, drawn: dict) -> tuple[str, str]:
        start = datetime.date.fromisoformat(drawn[key])
        return date_value(start + datetime.timedelta(days=rng.randint(low, high)), rng)
    return draw


def clock_time(rng: random.Random, drawn: dict) -> tuple[str, str]:
    """24-hour "14:30", written so or as "2:30 pm"."""
    hour, minute = rng.randint(7, 20), rng.choice([0, 15, 30, 45])
    twelve = f"{(hour - 1) % 12 + 1}:{minute:02d} {'am' if hour < 12 else 'pm'}"
    return f"{hour:02d}:{minute:02d}", rng.choice([f"{hour:02d}:{minute:02d}", twelve])


def partner(key: str, pairs: dict[str, list[str]]) -> Pool:
    """A value that goes with the one drawn for `key` (the artist of a song, a city near a city)."""
    return lambda rng, drawn: (v := rng.choice(pairs[drawn[key]]), v)


CITIES = ["Paris", "Tokyo", "New York", "London", "Sydney", "Berlin", "Toronto", "Mumbai", "Cairo", "Madrid",
          "Seoul", "Rome", "Chicago", "Lisbon", "Nairobi", "Mexico City", "Istanbul", "Singapore", "Boston", "Dublin"]
ROUTES = {"Boston": ["New York", "Montreal"], "New York": ["Boston", "Washington"], "Paris": ["Lyon", "Brussels"],
          "Berlin": ["Munich", "Hamburg"], "London": ["Manchester", "Edinburgh"], "Madrid": ["Barcelona", "Valencia"],
          "Rome": ["Florence", "Naples"], "Tokyo": ["Osaka", "Kyoto"], "Seattle": ["Portland", "Vancouver"],
          "Sydney": ["Canberra", "Melbourne"], "Chicago": ["Milwaukee", "Detroit"], "Toronto": ["Montreal", "Ottawa"]}
PEOPLE = ["alice", "ben.ortiz", "chen.wei", "diana", "omar.haddad", "priya", "lucas.m", "sofia", "kenji", "maria.r"]
EMAILS = [f"{p}@example.com" for p in PEOPLE]
STOCKS = {"AAPL": "NASDAQ", "MSFT": "NASDAQ", "NVDA": "NASDAQ", "AMZN": "NASDAQ", "TSLA": "NASDAQ", "GOOGL": "NASDAQ",
          "NFLX": "NASDAQ", "INTC": "NASDAQ", "KO": "NYSE", "JPM": "NYSE", "DIS": "NYSE", "IBM": "NYSE", "WMT": "NYSE",
          "NKE": "NYSE", "MCD": "NYSE", "XOM": "NYSE", "VOD": "LSE", "BP": "LSE", "HSBA": "LSE", "AZN": "LSE",
          "ULVR": "LSE", "BARC": "LSE"}
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "INR", "CAD", "AUD", "CHF"]
LANGUAGE_PHRASES = {
    "English": ["Where is the train station?", "I would like a cup of coffee, please.", "The meeting starts at noon."],
    "Spanish": ["¿Dónde está la estación de tren?", "Me gustaría un café, por favor.",
                "La reunión empieza a mediodía."],
    "French": ["Où est la gare ?", "Je voudrais un café, s'il vous plaît.", "La réunion commence à midi."],
    "German": ["Wo ist der Bahnhof?", "Ich hätte gern einen Kaffee, bitte.", "Das Treffen beginnt um zwölf Uhr."],
    "Italian": ["Dov'è la stazione?", "Vorrei un caffè, per favore.", "La riunione inizia a mezzogiorno."],
}
LANGUAGES = list(LANGUAGE_PHRASES) + ["Japanese", "Portuguese"]
INGREDIENTS = {"chicken": "meat", "salmon": "meat", "eggs": "animal", "feta": "animal", "rice": "carb",
               "potatoes": "carb", "lentils": "carb", "chickpeas": "carb", "spinach": "veg", "tomatoes": "veg",
               "mushrooms": "veg", "tofu": "veg", "zucchini": "veg", "garlic": "veg"}
DIET_EXCLUDES = {"vegan": ("meat", "animal"), "vegetarian": ("meat",), "keto": ("carb",), "gluten_free": ()}
SONGS = {"Bohemian Rhapsody": "Queen", "Shape of You": "Ed Sheeran", "Billie Jean": "Michael Jackson",
         "Rolling in the Deep": "Adele", "Hotel California": "Eagles", "Blinding Lights": "The Weeknd",
         "Imagine": "John Lennon", "Clocks": "Coldplay", "Dancing Queen": "ABBA", "Hey Jude": "The Beatles"}
TEAMS = {"Lakers": "basketball", "Celtics": "basketball", "Yankees": "baseball", "Dodgers": "baseball",
         "Patriots": "football", "Packers": "football", "Maple Leafs": "hockey", "Bruins": "hockey",
         "Arsenal": "soccer", "Real Madrid": "soccer"}
UNITS = {"length": ["kilometers", "miles", "meters", "feet", "inches", "centimeters"],
         "weight": ["kilograms", "pounds", "grams", "ounces"], "volume": ["liters", "gallons", "milliliters", "cups"]}
TEMPERATURE_SCALES = {"celsius": "Celsius", "fahrenheit": "Fahrenheit", "kelvin": "Kelvin"}

CITY = choice(CITIES)
DATE: Pool = date_in_2025
TIME: Pool = clock_time
TEMP_UNIT = labelled({"celsius": "Celsius", "fahrenheit": "Fahrenheit"})
EMAIL_TO = several(EMAILS, 1, 2)
SONG = choice(list(SONGS))
CURRENCY = choice(CURRENCIES)  # one pool for both ends of a conversion, so they differ
SCALE = labelled(TEMPERATURE_SCALES)


def stock_exchange(rng: random.Random, drawn: dict) -> tuple[str, str]:
    return STOCKS[drawn["symbol"]], STOCKS[drawn["symbol"]]


def unit_to(rng: random.Random, drawn: dict) -> tuple[str, str]:
    kind = next(k for k, units in UNITS.items() if drawn["from_unit"] in units)
    return (v := rng.choice([u for u in UNITS[kind] if u != drawn["from_unit"]])), v


def phrase_in_source(rng: random.Random, drawn: dict) -> tuple[str, str]:
    return (v := rng.choice(LANGUAGE_PHRASES[drawn["source_language"]])), v


def target_language(rng: random.Random, drawn: dict) -> tuple[str, str]:
    return (v := rng.choice([lang for lang in LANGUAGES if lang != drawn["source_language"]])), v


def ingredients_for_diet(rng: random.Random, drawn: dict) -> tuple[list[str], str]:
    banned = DIET_EXCLUDES[drawn["diet"]]
    return several([i for i, group in INGREDIENTS.items() if group not in banned], 1, 3)(rng, drawn)


def part_of_whole(rng: random.Random, drawn: dict) -> tuple[float, str]:
    return (v := float(rng.randint(1, int(drawn["whole"]) - 1))), number_text(v)


# ---------------------------------------------------------------------------------------------- the catalog
class Tool(NamedTuple):
    """One function: its split, a domain (no_call never offers a tool of the request's domain), what it does
    as a verb phrase, its schema, request phrasings and a pool per parameter (drawn in this order).

    A phrasing is a request in lower case with {parameter} slots, or (phrasing, arguments the words imply)."""

    split: str
    domain: str
    goal: str
    schema: dict
    asks: tuple
    pools: dict[str, Pool]


CATALOG = [
    # ---- weather
    Tool("train", "weather", "get the current weather in a city",
         schema("get_current_weather", "Get the current weather conditions and temperature for a city.", ["city"],
                city=string_param("Name of the city, e.g. 'Paris'."),
                unit=enum_param("Temperature unit of the result.", ["celsius", "fahrenheit"], "celsius")),
         ("what's the weather like in {city} right now?", "tell me the current weather in {city}.",
          "how warm is it in {city} at the moment, in {unit}?", "is it raining in {city} right now?",
          "could you check the current conditions in {city} and give me the temperature in {unit}?"),
         {"city": CITY, "unit": TEMP_UNIT}),
    Tool("train", "weather", "check the air quality in a city",
         schema("get_air_quality", "Get the current air quality index (AQI) of a city.", ["city"],
                city=string_param("Name of the city."),
                include_pollutants=boolean_param("Also return the level of each pollutant (PM2.5, PM10, ozone).")),
         ("how's the air quality in {city} today?", "what is the current air quality index for {city}?",
          ("check the air quality in {city} and list the individual pollutants too.", {"include_pollutants": True}),
          ("give me the AQI for {city} with a breakdown by pollutant.", {"include_pollutants": True})),
         {"city": CITY}),
    Tool("test", "weather", "get a weather forecast for the coming days",
         schema("get_weather_forecast", "Get the daily weather forecast for a city.", ["city", "days"],
                city=string_param("Name of the city."),
                days=integer_param("Number of days to forecast, from 1 to 14."),
                unit=enum_param("Temperature unit of the forecast.", ["celsius", "fahrenheit"], "celsius")),
         ("what's the forecast for {city} for the next {days} days?",
          "give me a {days}-day weather forecast for {city} in {unit}.",
          "will it rain in {city} over the next {days} days?",
          "show me the weather forecast for {city}, {days} days ahead, with temperatures in {unit}."),
         {"city": CITY, "days": choice(list(range(2, 11))), "unit": TEMP_UNIT}),
    # ---- calendar, reminders, timers
    Tool("train", "calendar", "add an event to the calendar",
         schema("create_calendar_event", "Create an event in the user's calendar.", ["title", "date", "start_time"],
                title=string_param("Title of the event."),
                date=string_param("Date of the event, YYYY-MM-DD."),
                start_time=string_param("Start time, 24-hour HH:MM."),
                duration_minutes=integer_param("Length of the event in minutes.", default=60),
                attendees=array_param("Email addresses of the people to invite.", "string")),
         ("schedule '{title}' on {date} at {start_time}.",
          "put '{title}' in my calendar for {date} at {start_time}, lasting {duration_minutes} minutes.",
          "create a calendar event called '{title}' on {date} at {start_time} and invite {attendees}.",
          "block {duration_minutes} minutes on {date} at {start_time} for '{title}' with {attendees}."),
         {"title": choice(["Team standup", "Dentist appointment", "Project review", "Lunch with Sara",
                           "Budget meeting", "Yoga class", "Book club", "Quarterly planning"]),
          "date": DATE, "start_time": TIME, "duration_minutes": choice([15, 30, 45, 90, 120]),
          "attendees": several(EMAILS, 1, 3)}),
    Tool("train", "calendar", "set a reminder",
         schema("set_reminder", "Set a reminder that notifies the user at a given date and time.", ["message", "date"],
                message=string_param("What to remind the user of."),
                date=string_param("Date of the reminder, YYYY-MM-DD."),
                time=string_param("Time of the reminder, 24-hour HH:MM.", default="09:00")),
         ("remind me to {message} on {date}.", "set a reminder for {date} at {time} to {message}.",
          "please remind me at {time} on {date} that I need to {message}."),
         {"message": choice(["call the plumber", "renew my passport", "water the plants", "pay the electricity bill",
                             "pick up the dry cleaning", "send the quarterly report", "book a dentist appointment",
                             "buy a birthday gift for Sam"]),
          "date": DATE, "time": TIME}),
    Tool("test", "calendar", "list the events on a calendar",
         schema("list_calendar_events", "List the events of one of the user's calendars on a date.", ["date"],
                date=string_param("The day to list, YYYY-MM-DD."),
                calendar=enum_param("Which calendar to read.", ["work", "personal", "family", "all"], "all")),
         ("what's on my calendar for {date}?", "list my {calendar} events on {date}.",
          "do I have anything in my {calendar} calendar on {date}?"),
         {"date": DATE, "calendar": labelled({"work": "work", "personal": "personal", "family": "family"})}),
    Tool("test", "calendar", "start a countdown timer",
         schema("start_timer", "Start a countdown timer.", ["minutes"],
                minutes=integer_param("Length of the countdown in minutes."),
                label=string_param("A name shown when the timer ends.")),
         ("start a timer for {minutes} minutes.", "set a {minutes}-minute timer labelled '{label}'.",
          "count down {minutes} minutes for the {label}, please."),
         {"minutes": choice([3, 5, 8, 10, 12, 20, 25, 45]),
          "label": choice(["pasta", "tea", "laundry", "workout", "pizza", "study break"])}),
    Tool("train", "events", "find events happening in a city",
         schema("find_local_events", "Find public events (concerts, games, shows) in a city.", ["city"],
                city=string_param("Name of the city."),
                category=enum_param("Kind of event.", ["music", "sports", "theater", "food", "art"]),
                date=string_param("Only events on this day, YYYY-MM-DD.")),
         ("what {category} events are on in {city} on {date}?", "find things to do in {city} this weekend.",
          "are there any {category} events in {city}?", "look up events in {city} on {date}."),
         {"city": CITY, "category": labelled({c: c for c in ["music", "sports", "theater", "food", "art"]}),
          "date": DATE}),
    # ---- conversion
    Tool("train", "conversion", "convert between units of measurement",
         schema("convert_units", "Convert a quantity from one unit of length, weight or volume to another.",
                ["value", "from_unit", "to_unit"],
                value=float_param("The quantity to convert."),
                from_unit=string_param("Unit of the quantity, e.g. 'kilometers', 'pounds', 'liters'."),
                to_unit=string_param("Unit to convert to, of the same kind.")),
         ("convert {value} {from_unit} to {to_unit}.", "how many {to_unit} is {value} {from_unit}?",
          "what is {value} {from_unit} in {to_unit}?"),
         {"value": floats([2.5, 5, 10, 12, 18, 42.195, 75, 100, 250, 3.5]),
          "from_unit": choice([u for units in UNITS.values() for u in units]), "to_unit": unit_to}),
    Tool("train", "conversion", "convert money between currencies",
         schema("convert_currency", "Convert an amount of money between currencies at today's rate.",
                ["amount", "from_currency", "to_currency"],
                amount=float_param("The amount to convert."),
                from_currency=string_param("ISO 4217 code of the currency held, e.g. 'USD'."),
                to_currency=string_param("ISO 4217 code of the currency wanted.")),
         ("convert {amount} {from_currency} to {to_currency}.",
          "how much is {amount} {from_currency} in {to_currency}?",
          "if I exchange {amount} {from_currency}, how many {to_currency} do I get?"),
         {"amount": floats([20, 50, 120, 250, 499.99, 1000, 1500, 75.5, 3200]),
          "from_currency": CURRENCY, "to_currency": CURRENCY}),
    Tool("test", "conversion", "convert a temperature between scales",
         schema("convert_temperature", "Convert a temperature between Celsius, Fahrenheit and Kelvin.",
                ["temperature", "from_scale", "to_scale"],
                temperature=float_param("The temperature to convert."),
                from_scale=enum_param("Scale of the given temperature.", ["celsius", "fahrenheit", "kelvin"]),
                to_scale=enum_param("Scale to convert to.", ["celsius", "fahrenheit", "kelvin"])),
         ("convert {temperature} degrees {from_scale} to {to_scale}.",
          "what is {temperature} {from_scale} in {to_scale}?", "how much is {temperature} {from_scale} in {to_scale}?"),
         {"temperature": floats([-5, 0, 21.5, 37, 100, 68, 300, 451]),
          "from_scale": SCALE, "to_scale": SCALE}),
    # ---- finance
    Tool("train", "finance", "look up a stock price",
         schema("get_stock_price", "Get the latest trading price of a stock.", ["symbol"],
                symbol=string_param("Ticker symbol, e.g. 'AAPL'."),
                exchange=enum_param("Stock exchange the ticker is listed on.", ["NASDAQ", "NYSE", "LSE"])),
         ("what's the current price of {symbol} stock?", "how much is one share of {symbol} trading for?",
          "get me the latest quote for {symbol} on the {exchange}."),
         {"symbol": choice(list(STOCKS)), "exchange": stock_exchange}),
    Tool("train", "finance", "calculate compound interest",
         schema("calculate_compound_interest", "Compute the final balance of an investment with compound interest.",
                ["principal", "annual_rate", "years"],
                principal=float_param("Amount invested."),
                annual_rate=float_param("Yearly interest rate in percent, e.g. 4.5."),
                years=integer_param("Number of years invested."),
                compounds_per_year=integer_param("Times interest is compounded each year.", default=1)),
         ("if I invest ${principal} at {annual_rate}% a year for {years} years, what will it grow to?",
          "calculate compound interest on ${principal} at an annual rate of {annual_rate}% over {years} years, "
          "compounded {compounds_per_year} times a year.",
          "what's the final balance of ${principal} after {years} years at {annual_rate}% interest compounded "
          "{compounds_per_year} times per year?"),
         {"principal": floats([1000, 2500, 5000, 10000, 25000, 750]), "annual_rate": floats([2, 3.5, 4.5, 5, 6.25, 7]),
          "years": choice([2, 3, 5, 10, 15, 20]), "compounds_per_year": choice([4, 12, 365])}),
    Tool("test", "finance", "calculate a monthly loan payment",
         schema("calculate_loan_payment", "Compute the fixed monthly payment of an amortised loan.",
                ["principal", "annual_rate", "years"],
                principal=float_param("Amount borrowed."),
                annual_rate=float_param("Yearly interest rate in percent."),
                years=integer_param("Length of the loan in years.")),
         ("what would the monthly payment be on a ${principal} loan at {annual_rate}% over {years} years?",
          "calculate my monthly mortgage payment: ${principal} borrowed, {annual_rate}% interest, {years}-year term.",
          "how much would I pay each month for a loan of ${principal} at {annual_rate}% for {years} years?"),
         {"principal": floats([15000, 30000, 200000, 350000, 8000, 450000]),
          "annual_rate": floats([3.2, 4, 5.5, 6.75, 7.9]), "years": choice([3, 5, 10, 15, 25, 30])}),
    Tool("test", "finance", "get the price history of a stock",
         schema("get_stock_history", "Get the historical prices of a stock between two dates.",
                ["symbol", "start_date", "end_date"],
                symbol=string_param("Ticker symbol."),
                start_date=string_param("First day, YYYY-MM-DD."),
                end_date=string_param("Last day, YYYY-MM-DD."),
                interval=enum_param("Spacing of the prices.", ["daily", "weekly", "monthly"], "daily")),
         ("show me the price history of {symbol} from {start_date} to {end_date}.",
          "get the {interval} prices of {symbol} between {start_date} and {end_date}.",
          "list the {interval} closing prices of {symbol} from {start_date} until {end_date}."),
         {"symbol": choice(list(STOCKS)), "start_date": DATE, "end_date": date_after("start_date", 7, 120),
          "interval": labelled({"daily": "daily", "weekly": "weekly", "monthly": "monthly"})}),
    # ---- search
    Tool("train", "search", "search the web",
         schema("web_search", "Search the web and return the top results.", ["query"],
                query=string_param("The search query."),
                num_results=integer_param("How many results to return.", default=10)),
         ("search the web for {query}.", "look up {query} online and give me the top {num_results} results.",
          "find me {num_results} web pages about {query}."),
         {"query": choice(["best hiking trails near Denver", "how to repot a cactus", "history of the printing press",
                           "electric car tax credits", "symptoms of vitamin D deficiency", "beginner sourdough recipe",
                           "Python asyncio tutorial", "how solar panels work", "marathon training plan"]),
          "num_results": choice([3, 5, 8, 20])}),
    Tool("test", "search", "search the news",
         schema("search_news", "Search recent news articles on a topic.", ["topic"],
                topic=string_param("What the articles should be about."),
                language=enum_param("Language of the articles.", ["en", "es", "fr", "de"], "en"),
                max_results=integer_param("Maximum number of articles.", default=5)),
         ("what's the latest news about {topic}?", "find {max_results} news articles about {topic}.",
          "get me news on {topic} in {language}."),
         {"topic": choice(["the Mars rover", "interest rates", "the World Cup", "renewable energy", "AI regulation",
                           "the housing market", "the Olympics"]),
          "language": labelled({"es": "Spanish", "fr": "French", "de": "German", "en": "English"}),
          "max_results": choice([3, 10, 15])}),
    # ---- files
    Tool("train", "files", "read a file",
         schema("read_file", "Read a text file and return its contents.", ["path"],
                path=string_param("Path of the file."),
                encoding=enum_param("Text encoding of the file.", ["utf-8", "ascii", "latin-1"], "utf-8")),
         ("open {path} and show me what's in it.", "read the contents of {path}.",
          "read {path} using {encoding} encoding."),
         {"path": choice(["/home/alex/notes.txt", "reports/q3_summary.md", "data/users.csv", "/etc/hosts",
                          "config/settings.yaml", "logs/server.log", "docs/README.md", "src/main.py",
                          "/var/log/nginx/error.log", "recipes/pancakes.txt", "data/sales_2024.csv",
                          "letters/cover_letter.txt"]),
          "encoding": labelled({"ascii": "ascii", "latin-1": "latin-1"})}),
    Tool("train", "files", "list the files in a directory",
         schema("list_directory", "List the files in a directory.", ["path"],
                path=string_param("Directory to list."),
                recursive=boolean_param("Include the contents of subdirectories."),
                pattern=string_param("Only names matching this glob pattern, e.g. '*.py'.")),
         ("list the files in {path}.", ("show everything under {path}, including subfolders.", {"recursive": True}),
          "which {pattern} files are in {path}?"),
         {"path": choice(["/home/alex/Documents", "src", "data/raw", "/var/log", "photos/2024", "projects/website"]),
          "pattern": choice(["*.py", "*.csv", "*.jpg", "*.log", "*.md"])}),
    Tool("train", "files", "delete a file",
         schema("delete_file", "Delete a file, moving it to the trash unless told otherwise.", ["path"],
                path=string_param("Path of the file."),
                permanent=boolean_param("Delete for good instead of moving to the trash.")),
         ("delete {path}.", ("permanently delete {path}, skipping the trash.", {"permanent": True}),
          "remove the file {path}."),
         {"path": choice(["old/draft_v1.docx", "/tmp/cache.db", "downloads/setup.exe", "notes/todo_2023.txt",
                          "photos/blurry.jpg", "build/output.log", "/home/alex/Desktop/copy_of_copy.png",
                          "archive/2019_taxes.zip", "src/legacy_utils.py", "tmp/session_4411.json",
                          "music/duplicate_track.mp3", "reports/q1_summary_old.xlsx"])}),
    Tool("test", "files", "compress files into an archive",
         schema("compress_files", "Pack files into a compressed archive.", ["paths", "archive_name"],
                paths=array_param("Paths of the files to include.", "string"),
                archive_name=string_param("Name of the archive, without extension."),
                format=enum_param("Archive format.", ["zip", "tar.gz"], "zip")),
         ("put {paths} into an archive named {archive_name}.",
          "compress {paths} into {archive_name} as a {format} file.",
          "bundle {paths} together into an archive called {archive_name}."),
         {"paths": several(["report.pdf", "slides.pptx", "data.csv", "photo1.jpg", "photo2.jpg", "notes.txt"], 2, 3),
          "archive_name": choice(["backup", "project_files", "photos_2024", "q3_reports", "submission"]),
          "format": labelled({"zip": "zip", "tar.gz": "tar.gz"})}),
    # ---- email
    Tool("train", "email", "send an email",
         schema("send_email", "Send an email from the user's account.", ["to", "subject", "body"],
                to=array_param("Email addresses of the recipients.", "string"),
                subject=string_param("Subject line."),
                body=string_param("Text of the email."),
                cc=array_param("Email addresses to copy.", "string")),
         ("send an email to {to} with the subject '{subject}' saying '{body}'",
          "email {to}: subject '{subject}', message '{body}', and cc {cc}.",
          "write to {to} with subject '{subject}' and the text '{body}'"),
         {"to": EMAIL_TO, "subject": choice(["Meeting moved", "Invoice 4512", "Weekend plans", "Project update",
                                             "Happy birthday!", "Quick question"]),
          "body": choice(["The meeting is now at 3 pm on Thursday.", "Please find the invoice attached.",
                          "Are you free for dinner on Saturday?", "The draft is ready for your review.",
                          "Can we talk tomorrow morning?"]),
          "cc": several(EMAILS, 1, 1, exclude="to")}),
    Tool("test", "email", "search the user's emails",
         schema("search_emails", "Search the user's mailbox.", ["query"],
                query=string_param("Words to look for in the emails."),
                sender=string_param("Only emails from this address."),
                folder=enum_param("Folder to search.", ["inbox", "sent", "archive", "spam"], "inbox"),
                unread_only=boolean_param("Only unread emails.")),
         ("find emails about {query}.", "search my {folder} folder for emails from {sender} about {query}.",
          ("show unread emails about {query} from {sender}.", {"unread_only": True})),
         {"query": choice(["the invoice", "flight tickets", "the quarterly report", "the job offer", "the party"]),
          "sender": choice(EMAILS), "folder": labelled({"sent": "sent", "archive": "archive", "spam": "spam"})}),
    # ---- maps
    Tool("train", "maps", "measure the distance between two places",
         schema("get_distance", "Get the travel distance and time between two places.", ["origin", "destination"],
                origin=string_param("Starting place."),
                destination=string_param("Place to reach."),
                mode=enum_param("How to travel.", ["driving", "walking", "cycling", "transit"], "driving")),
         ("how far is it from {origin} to {destination}?",
          "what's the {mode} distance between {origin} and {destination}?",
          "how long is the {mode} route from {origin} to {destination}?"),
         {"origin": choice(list(ROUTES)), "destination": partner("origin", ROUTES),
          "mode": labelled({"driving": "driving", "cycling": "cycling", "transit": "transit"})}),
    Tool("train", "maps", "find the time zone of a place",
         schema("get_timezone", "Get the IANA time zone of a place.", ["location"],
                location=string_param("City or address.")),
         ("what time zone is {location} in?", "which time zone does {location} use?",
          "look up the local time zone for {location}."),
         {"location": CITY}),
    Tool("test", "maps", "find places nearby",
         schema("find_nearby_places", "Find places of a kind near a location.", ["location", "place_type"],
                location=string_param("Where to search around."),
                place_type=enum_param("Kind of place.", ["restaurant", "cafe", "pharmacy", "gas_station", "atm"]),
                radius_km=float_param("Search radius in kilometres.", default=1.0),
                open_now=boolean_param("Only places open right now.")),
         ("find the nearest {place_type} to {location}.",
          "show me every {place_type} within {radius_km} km of {location}.",
          ("is any {place_type} open now near {location}?", {"open_now": True})),
         {"location": choice(["Times Square, New York", "Shibuya, Tokyo", "the Louvre, Paris", "Union Station, Chicago",
                              "Covent Garden, London", "Bondi Beach, Sydney"]),
          "place_type": labelled({"restaurant": "restaurant", "cafe": "cafe", "pharmacy": "pharmacy",
                                  "gas_station": "gas station", "atm": "ATM"}),
          "radius_km": floats([0.5, 2, 3, 5])}),
    # ---- language
    Tool("train", "language", "translate text",
         schema("translate_text", "Translate text into another language.", ["text", "target_language"],
                text=string_param("The text to translate."),
                target_language=string_param("Language to translate into, e.g. 'Spanish'."),
                source_language=string_param("Language of the text; detected when omitted.")),
         ('translate "{text}" into {target_language}.', 'how do you say "{text}" in {target_language}?',
          'translate this {source_language} sentence into {target_language}: "{text}"'),
         {"source_language": choice(list(LANGUAGE_PHRASES)), "text": phrase_in_source,
          "target_language": target_language}),
    Tool("test", "language", "detect the language of a text",
         schema("detect_language", "Detect which language a text is written in.", ["text"],
                text=string_param("The text to examine.")),
         ('tell me what language this is: "{text}"', 'detect the language of "{text}"',
          'which language is "{text}" written in?'),
         {"text": choice([p for phrases in LANGUAGE_PHRASES.values() for p in phrases])}),
    # ---- maths
    Tool("train", "math", "average a list of numbers",
         schema("calculate_average", "Compute the arithmetic mean of a list of numbers.", ["numbers"],
                numbers=array_param("The numbers to average.", "float")),
         ("what's the average of {numbers}?", "find the mean of these values: {numbers}.",
          "average these numbers for me: {numbers}."),
         {"numbers": several([float(x) for x in (4, 8, 15, 16, 23, 42, 7.5, 12.25, 19, 3, 88, 61)], 3, 5)}),
    Tool("train", "math", "find the greatest common divisor of two integers",
         schema("find_gcd", "Greatest common divisor of two integers.", ["a", "b"],
                a=integer_param("First integer."), b=integer_param("Second integer.")),
         ("what's the greatest common divisor of {a} and {b}?", "find the GCD of {a} and {b}.",
          "compute gcd({a}, {b})."),
         {"a": choice([12, 18, 48, 84, 120, 252, 360, 1071]), "b": choice([30, 42, 64, 105, 180, 462, 1029])}),
    Tool("train", "math", "work out a percentage",
         schema("calculate_percentage", "What percentage one number is of another.", ["part", "whole"],
                part=float_param("The part."), whole=float_param("The whole.")),
         ("what percentage of {whole} is {part}?", "{part} out of {whole} is what percent?",
          "express {part} as a percentage of {whole}."),
         {"whole": floats([40, 80, 150, 200, 360, 1200]), "part": part_of_whole}),
    Tool("train", "math", "check whether a number is prime",
         schema("is_prime", "Check whether an integer is a prime number.", ["number"],
                number=integer_param("The integer to check.")),
         ("is {number} a prime number?", "check whether {number} is prime.", "tell me if {number} is prime or not."),
         {"number": choice([97, 221, 1009, 7919, 561, 8191, 1001, 4093])}),
    Tool("test", "math", "solve a quadratic equation",
         schema("solve_quadratic", "Find the real roots of a*x^2 + b*x + c = 0.", ["a", "b", "c"],
                a=float_param("Coefficient of x^2."), b=float_param("Coefficient of x."),
                c=float_param("Constant term.")),
         ("find the roots of the quadratic with a = {a}, b = {b} and c = {c}.",
          "solve the quadratic equation whose coefficients are a={a}, b={b}, c={c}."),
         {"a": floats([1, 2, 3, 0.5]), "b": floats([-7, -3, 4, 5, 2.5]), "c": floats([-10, -4, 1, 6, 12])}),
    Tool("test", "math", "compute a factorial",
         schema("calculate_factorial", "Compute n! for a non-negative integer n.", ["n"],
                n=integer_param("A non-negative integer.")),
         ("what is {n} factorial?", "compute {n}!", "calculate the factorial of {n}."),
         {"n": choice([5, 7, 10, 12, 15, 20])}),
    # ---- food
    Tool("train", "food", "find recipes",
         schema("find_recipes", "Find recipes that use given ingredients.", ["ingredients"],
                ingredients=array_param("Ingredients the recipe should use.", "string"),
                diet=enum_param("Dietary restriction.", ["vegetarian", "vegan", "gluten_free", "keto"]),
                max_prep_minutes=integer_param("Longest acceptable preparation time in minutes.")),
         ("find me a recipe that uses {ingredients}.",
          "what can I cook with {ingredients} in under {max_prep_minutes} minutes?",
          "suggest a {diet} recipe with {ingredients}."),
         {"diet": labelled({"vegetarian": "vegetarian", "vegan": "vegan", "gluten_free": "gluten-free",
                            "keto": "keto"}),
          "ingredients": ingredients_for_diet, "max_prep_minutes": choice([15, 20, 30, 45])}),
    Tool("test", "food", "look up nutrition facts",
         schema("get_nutrition_info", "Get calories and macronutrients of a food.", ["food"],
                food=string_param("The food, e.g. 'banana'."),
                serving_grams=float_param("Serving size in grams.", default=100.0)),
         ("how many calories are in {food}?", "give me the nutrition facts for {serving_grams} grams of {food}.",
          "what's the protein content of a {serving_grams} g serving of {food}?"),
         {"food": choice(["banana", "oatmeal", "greek yogurt", "almonds", "brown rice", "avocado", "salmon"]),
          "serving_grams": floats([30, 50, 150, 200, 250])}),
    # ---- travel
    Tool("train", "travel", "search for flights",
         schema("search_flights", "Search flights between two cities.", ["origin", "destination", "departure_date"],
                origin=string_param("City to fly from."),
                destination=string_param("City to fly to."),
                departure_date=string_param("Day of departure, YYYY-MM-DD."),
                return_date=string_param("Day of the return flight, YYYY-MM-DD; one way when omitted."),
                passengers=integer_param("Number of travellers.", default=1),
                cabin_class=enum_param("Cabin class.", ["economy", "premium_economy", "business", "first"], "economy"),
                nonstop_only=boolean_param("Only flights without stops.")),
         ("find flights from {origin} to {destination} on {departure_date}.",
          ("search for nonstop flights from {origin} to {destination} leaving {departure_date}.",
           {"nonstop_only": True}),
          "look for {cabin_class} tickets from {origin} to {destination} on {departure_date} for {passengers} people.",
          "find a round trip from {origin} to {destination}, leaving {departure_date} and returning {return_date}."),
         {"origin": CITY, "destination": CITY, "departure_date": DATE,
          "return_date": date_after("departure_date", 2, 21),
          "passengers": choice([2, 3, 4, 5]),
          "cabin_class": labelled({"premium_economy": "premium economy", "business": "business class",
                                   "first": "first class"})}),
    Tool("train", "travel", "check the status of a flight",
         schema("get_flight_status", "Get the departure and arrival status of a flight.", ["flight_number"],
                flight_number=string_param("Airline code and number, e.g. 'BA117'."),
                date=string_param("Day of the flight, YYYY-MM-DD; today when omitted.")),
         ("is flight {flight_number} on time?", "what's the status of {flight_number} on {date}?",
          "check whether flight {flight_number} on {date} is delayed."),
         {"flight_number": choice(["BA117", "LH400", "AF1680", "UA857", "DL44", "QF1", "EK202", "AA100"]),
          "date": DATE}),
    Tool("test", "travel", "book a hotel",
         schema("book_hotel", "Book a hotel room.", ["city", "check_in", "check_out"],
                city=string_param("City of the hotel."),
                check_in=string_param("Arrival day, YYYY-MM-DD."),
                check_out=string_param("Departure day, YYYY-MM-DD."),
                guests=integer_param("Number of guests.", default=1),
                rooms=integer_param("Number of rooms.", default=1),
                max_price_per_night=float_param("Highest acceptable price per night in US dollars.")),
         ("book a hotel in {city} from {check_in} to {check_out}.",
          "reserve {rooms} rooms in {city} for {guests} guests, checking in {check_in} and out {check_out}.",
          "book me a hotel in {city} under ${max_price_per_night} a night from {check_in} to {check_out}."),
         {"city": CITY, "check_in": DATE, "check_out": date_after("check_in", 1, 10), "guests": choice([2, 3, 4, 6]),
          "rooms": choice([2, 3]), "max_price_per_night": floats([80, 120, 150, 200, 250])}),
    # ---- music
    Tool("train", "music", "play a song",
         schema("play_music", "Play a song on the user's speaker.", ["song"],
                song=string_param("Title of the song."),
                artist=string_param("Performer, to tell apart songs with the same title."),
                volume=integer_param("Volume from 0 to 100.")),
         ("play {song}.", "put on {song} by {artist}.", "play {song} by {artist} at volume {volume}."),
         {"song": SONG, "artist": lambda rng, drawn: (SONGS[drawn["song"]], SONGS[drawn["song"]]),
          "volume": choice([20, 35, 50, 70, 80])}),
    Tool("train", "music", "get the lyrics of a song",
         schema("get_song_lyrics", "Get the lyrics of a song.", ["song"],
                song=string_param("Title of the song."), artist=string_param("Performer of the song.")),
         ("show me the lyrics of {song}.", "what are the lyrics to {song} by {artist}?",
          "find the words of {artist}'s song {song}."),
         {"song": SONG, "artist": lambda rng, drawn: (SONGS[drawn["song"]], SONGS[drawn["song"]])}),
    Tool("test", "music", "create a playlist",
         schema("create_playlist", "Create a playlist in the user's music library.", ["name", "songs"],
                name=string_param("Name of the playlist."),
                songs=array_param("Titles of the songs to add.", "string"),
                public=boolean_param("Make the playlist visible to everyone.")),
         ("make a playlist called '{name}' with {songs}.",
          ("create a public playlist named '{name}' containing {songs}.", {"public": True}),
          "start a new playlist, '{name}', and add {songs}."),
         {"name": choice(["Road Trip", "Workout", "Sunday Morning", "Party Mix", "Focus"]),
          "songs": several(list(SONGS), 2, 3)}),
    # ---- sports
    Tool("train", "sports", "get the score of a game",
         schema("get_sports_score", "Get the final or live score of a team's game.", ["team"],
                team=string_param("Name of the team."),
                sport=enum_param("The sport.", ["football", "basketball", "baseball", "hockey", "soccer"]),
                date=string_param("Day of the game, YYYY-MM-DD; the latest game when omitted.")),
         ("what was the score of the {team} game on {date}?", "how did the {team} do in their last game?",
          "did the {team} win their {sport} game on {date}?"),
         {"team": choice(list(TEAMS)), "sport": lambda rng, drawn: (TEAMS[drawn["team"]], TEAMS[drawn["team"]]),
          "date": DATE}),
    Tool("test", "sports", "get league standings",
         schema("get_league_standings", "Get the standings table of a sports league.", ["league"],
                league=enum_param("The league.", ["NBA", "NFL", "MLB", "NHL", "Premier League", "La Liga"]),
                season=integer_param("Year the season started; the current season when omitted.")),
         ("show me the current {league} standings.", "what were the {league} standings in the {season} season?",
          "who finished first in the {league} in {season}?"),
         {"league": labelled({x: x for x in ["NBA", "NFL", "MLB", "NHL", "Premier League", "La Liga"]}),
          "season": choice([2018, 2019, 2021, 2022, 2023])}),
]

# Requests no tool serves, with what they ask for (the demo's refusal names it).
GENERAL_ASKS = [("write a short poem about {topic}.", "write a poem"),
                ("tell me a joke about {topic}.", "tell a joke"),
                ("give me three tips for {activity}.", "give advice"),
                ("summarize the plot of {book} in two sentences.", "summarize a book"),
                ("suggest a good name for my new {animal}.", "suggest a pet name"),
                ('rewrite this message to sound more formal: "{sentence}"', "rewrite a message"),
                ("explain {concept} to a ten-year-old.", "explain a concept")]
GENERAL_POOLS = {"topic": choice(["autumn", "the ocean", "coffee", "Mondays", "cats", "the moon", "city life"]),
                 "activity": choice(["public speaking", "learning the guitar", "sleeping better", "a first marathon"]),
                 "book": choice(["Pride and Prejudice", "Moby-Dick", "The Hobbit", "Nineteen Eighty-Four"]),
                 "animal": choice(["cat", "puppy", "parrot", "hamster", "turtle"]),
                 "sentence": choice(["gonna be late, sorry", "can u send me the file", "thx for the help, cya"]),
                 "concept": choice(["photosynthesis", "inflation", "black holes", "gravity", "the water cycle"])}


# ---------------------------------------------------------------------------------------------- drawing
class Call(NamedTuple):
    tool: Tool
    template: str  # the phrasing used
    text: str  # the request, lower-case first letter
    arguments: dict


def fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def draw_values(pools: dict[str, Pool], rng: random.Random) -> dict[str, tuple[object, str]]:
    """(value, text) per parameter; parameters drawn from the same pool get different values."""
    for _ in range(100):
        drawn, values = {}, {}
        for name, pool in pools.items():
            values[name] = pool(rng, drawn)
            drawn[name] = values[name][0]
        by_pool = Counter((id(pool), json.dumps(drawn[name])) for name, pool in pools.items())
        if max(by_pool.values()) == 1:
            return values
    raise AssertionError("could not draw distinct values")


def draw_call(tool: Tool, rng: random.Random) -> Call:
    ask = rng.choice(tool.asks)
    template, implied = ask if isinstance(ask, tuple) else (ask, {})
    values = draw_values(tool.pools, rng)
    used = fields(template)
    stated = {**{name: values[name][0] for name in used}, **implied}
    arguments = {name: stated[name] for name in tool.schema["parameters"]["properties"] if name in stated}
    return Call(tool, template, template.format(**{name: values[name][1] for name in used}), arguments)


def sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def join_requests(texts: list[str], rng: random.Random) -> str:
    """Several requests as one message: "What's ... ? Also, convert ... . And ..."."""
    parts = [sentence(texts[0])]
    for text in texts[1:]:
        parts.append(rng.choice(["Also, " + text, "And " + text, sentence(text)]))
    return " ".join(parts)


class Rotation:
    """Tools taken in turn (reshuffled every round) so each gets an equal share of the examples."""

    def __init__(self, tools: list[Tool], rng: random.Random):
        self.tools, self.rng, self.queue = tools, rng, []

    def next(self) -> Tool:
        if not self.queue:
            self.queue = self.rng.sample(self.tools, len(self.tools))
        return self.queue.pop()


def offered(needed: list[Tool], pool: list[Tool], n_extra: int, rng: random.Random) -> list[dict]:
    """The schemas shown: the needed tools (once each) plus `n_extra` others from `pool`, in a random order."""
    unique = list({t.schema["name"]: t for t in needed}.values())
    extra = rng.sample([t for t in pool if t not in unique], n_extra)
    return [t.schema for t in rng.sample(unique + extra, len(unique) + len(extra))]


def example(plan: str, tools: list[Tool], rotation: Rotation, rng: random.Random) -> dict:
    """One example with the split's `tools`: question, functions, and for the writers `calls` (the drawn calls)
    and, for no_call, `need` (what the request asks for). `plan` is a kind, optionally with a variant
    ("parallel:same" / "parallel:mixed", "no_call:general" / "no_call:tool"), else the variant is drawn."""
    kind, _, variant = plan.partition(":")
    if kind in ("single", "multiple"):
        call = draw_call(rotation.next(), rng)
        extra = 0 if kind == "single" else rng.randint(1, 3)
        return {"question": sentence(call.text), "functions": offered([call.tool], tools, extra, rng), "calls": [call]}
    if kind == "parallel":
        n = rng.choice([2, 2, 3])
        if (variant or rng.choice(["same", "mixed"])) == "same":  # one function, different arguments and wording
            tool = rotation.next()
            calls = [draw_call(tool, rng)]
            while len(calls) < n:
                call = draw_call(tool, rng)
                reworded = len(tool.asks) < n or all(call.template != c.template for c in calls)
                if reworded and all(call.arguments != c.arguments for c in calls):
                    calls.append(call)
        else:
            calls = [draw_call(tool, rng) for tool in rng.sample(tools, n)]
        functions = offered([c.tool for c in calls], tools, rng.randint(0, 2), rng)
        return {"question": join_requests([c.text for c in calls], rng), "functions": functions, "calls": calls}
    if kind == "no_call":
        if (variant or ("general" if rng.random() < GENERAL_NO_CALL_SHARE else "tool")) == "general":
            template, need = rng.choice(GENERAL_ASKS)
            text = template.format(**{k: GENERAL_POOLS[k](rng, {})[1] for k in fields(template)})
            excluded = NEVER_OFFERED_FOR_NO_CALL
        else:  # a request for a tool of the split, with none of its domain on offer
            call = draw_call(rng.choice(tools), rng)
            text, need, excluded = call.text, call.tool.goal, (*NEVER_OFFERED_FOR_NO_CALL, call.tool.domain)
        candidates = [t for t in tools if t.domain not in excluded]
        return {"question": sentence(text), "functions": offered([], candidates, rng.randint(1, 3), rng),
                "calls": [], "need": need}
    raise ValueError(f"unknown kind {kind!r}")


def draw_examples(plans: list[str], tools: list[Tool], rng: random.Random, seen: set[str]) -> list[dict]:
    """One example per entry of `plans`; no question text repeats one in `seen` (which is updated)."""
    rotation = Rotation(tools, rng)
    examples = []
    for plan in plans:
        for _ in range(200):
            ex = example(plan, tools, rotation, rng)
            if ex["question"] not in seen:
                break
        else:
            raise AssertionError(f"ran out of distinct {plan} questions; add phrasings or pool values")
        seen.add(ex["question"])
        examples.append({"kind": plan.partition(":")[0], **ex})
    return examples


def kinds_for(size: int, rng: random.Random) -> list[str]:
    counts = {kind: round(size * share) for kind, share in MIX.items()}
    counts["single"] += size - sum(counts.values())
    kinds = [kind for kind, n in counts.items() for _ in range(n)]
    return rng.sample(kinds, len(kinds))


# ---------------------------------------------------------------------------------------------- demos
def argument_text(arguments: dict) -> str:
    return ", ".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


def solution(ex: dict) -> str:
    """The full response in ToolRL's format: <think>, then <tool_call> JSON lines or a <response>."""
    calls = ex["calls"]
    if not calls:
        names = ", ".join(f["name"] for f in ex["functions"])
        return (f"<think> The user wants me to {ex['need']}. None of the offered functions ({names}) can do that, "
                f"so I will not call any. </think>\n"
                f"<response> Sorry, none of the available functions can {ex['need']}. </response>")
    if len(calls) == 1:
        call = calls[0]
        chosen = ("It is the only function offered" if len(ex["functions"]) == 1
                  else f"Of the {len(ex['functions'])} functions offered, it is the one that fits")
        thought = (f"The user wants to {call.tool.goal}: that is {call.tool.schema['name']}. {chosen}; "
                   f"the question gives {argument_text(call.arguments)}.")
    else:
        steps = "; ".join(f"{c.tool.schema['name']} with {argument_text(c.arguments)}" for c in calls)
        thought = f"The user asks for {len(calls)} things, one call each: {steps}."
    lines = [json.dumps({"name": c.tool.schema["name"], "parameters": c.arguments}, ensure_ascii=False) for c in calls]
    return f"<think> {thought} </think>\n<tool_call>\n" + "\n".join(lines) + "\n</tool_call>"


# ---------------------------------------------------------------------------------------------- output
def record(ex: dict, qid: str) -> dict:
    ground_truth = [{"name": c.tool.schema["name"], "arguments": c.arguments} for c in ex["calls"]]
    return {"id": qid, "question": ex["question"], "functions": ex["functions"], "ground_truth": ground_truth,
            "kind": ex["kind"]}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def readme(files: dict[str, list[dict]]) -> str:
    """data/fc/README.md, with the statistics of the files just written."""
    def mix(records: list[dict]) -> str:
        counts = Counter(r["kind"] for r in records)
        return ", ".join(f"{counts[kind]} {kind}" for kind in MIX)

    def tool_rows(split: str) -> str:
        names = {"train": ("train", "dev", "demos"), "test": ("test",)}[split]
        calls = Counter(c["name"] for name in names for r in files[name] for c in r["ground_truth"])
        return "\n".join(f"| `{t.schema['name']}` | {t.domain} | "
                         f"{', '.join(f'{p}: {spec_type(s)}' for p, s in t.schema['parameters']['properties'].items())}"
                         f" | {calls[t.schema['name']]} |" for t in CATALOG if t.split == split)

    examples = {}
    for r in files["train"]:
        examples.setdefault(r["kind"], r)
    example_rows = "\n".join(f"| {kind} | {examples[kind]['question']} | "
                             f"`{json.dumps(examples[kind]['ground_truth'], ensure_ascii=False)}` |" for kind in MIX)
    n_train = sum(t.split == "train" for t in CATALOG)
    return f"""# Bundled function-calling task

Requests to a tool-using assistant, the functions it may call (BFCL-style JSON schemas) and the calls that serve
each request, over a catalog of {len(CATALOG)} realistic tools (weather, calendars, reminders, unit and currency
conversion, stocks and loans, search, files, email, maps, translation, maths, recipes, flights and hotels, music,
sports). The tools are split by hand: {n_train} train tools, {len(CATALOG) - n_train} held-out test tools; no
function appears in both.

Generated by `scripts/make_fc_task.py` (stdlib only, fixed seed; running it again gives byte-identical files,
this README included):

    python scripts/make_fc_task.py            # writes data/fc/
    python scripts/make_fc_task.py --out-dir /tmp/fc

Load with `icrl_lite.data.load_fc(bundled_fc_path("train"))`.

| file          | records | tools | fields |
|---------------|---------|-------|--------|
| `train.jsonl` | {len(files['train'])} ({mix(files['train'])}) | train | `id`, `question`, `functions`, `ground_truth`, `kind` |
| `dev.jsonl`   | {len(files['dev'])} ({mix(files['dev'])}) | train | same |
| `test.jsonl`  | {len(files['test'])} ({mix(files['test'])}) | test (held out) | same |
| `demos.jsonl` | {len(files['demos'])} worked responses ({mix(files['demos'])}) | train | same + `solution` |

- `functions`: the schemas offered, `{{"name", "description", "parameters": {{"type": "dict", "properties",
  "required"}}}}`. Parameter types: `string` (some with an `enum`), `integer`, `float` (BFCL's name for a JSON-schema
  number), `boolean`, `array` (with `items`). Optional parameters may carry a `default`.
- `ground_truth`: the calls, `[{{"name": ..., "arguments": {{...}}}}]`, in the order the request asks for them;
  `[]` when no call should be made. Arguments hold exactly what the request states: an optional parameter is
  present only when the request gives its value (or implies it, "nonstop flights" -> `"nonstop_only": true`).
- `kind` (as in BFCL): `single` (one function offered, one call); `multiple` (one call, with 1-3 unused
  functions offered besides); `parallel` (2-3 calls, of one function with different arguments or of several
  functions, with 0-2 unused functions); `no_call` (1-3 functions, none of which serves the request: either a
  chit-chat request or a request for a tool of a domain not on offer; search tools are never offered here).
- Dates are `YYYY-MM-DD` in the arguments and either so or "March 14, 2025" in the request; times are `HH:MM`,
  written either so or "2:30 pm". Every other string argument outside an enum appears verbatim in the
  request.
- Question texts are unique across all four files. Dev and the demos use the train tools with requests not in
  train; test uses only the held-out tools.
- Demos are full responses in ToolRL's format: `<think> ... </think>` then `<tool_call>` with one
  `{{"name": ..., "parameters": {{...}}}}` JSON object per line and `</tool_call>`, or, for `no_call`,
  `<think> ... </think>` then `<response> ... </response>` saying no available function can do it.

One example of each kind (train):

| kind | question | ground_truth |
|------|----------|--------------|
{example_rows}

Train tools (calls counted over train, dev and demos):

| function | domain | parameters | calls |
|----------|--------|------------|-------|
{tool_rows('train')}

Test tools (calls counted over test):

| function | domain | parameters | calls |
|----------|--------|------------|-------|
{tool_rows('test')}
"""


def spec_type(spec: dict) -> str:
    if "enum" in spec:
        return "enum"
    return f"array[{spec['items']['type']}]" if spec["type"] == "array" else spec["type"]


def generate(out_dir: Path = OUT_DIR, seed: int = SEED) -> dict[str, int]:
    """Write train, dev, test and demos JSONL files and README.md to `out_dir`; return the record counts."""
    rng = random.Random(seed)
    tools = {split: [t for t in CATALOG if t.split == split] for split in ("train", "test")}
    seen: set[str] = set()
    demos = draw_examples(DEMO_PLANS, tools["train"], rng, seen)
    drawn = {split: draw_examples(kinds_for(size, rng), tools["test" if split == "test" else "train"], rng, seen)
             for split, size in SIZES.items()}
    files = {split: [record(ex, f"{split}-{i:04d}") for i, ex in enumerate(drawn[split], 1)]
             for split in ("train", "dev", "test")}
    files["demos"] = [{**record(ex, f"demo-{i:02d}"), "solution": solution(ex)} for i, ex in enumerate(demos, 1)]

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, records in files.items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
    (out_dir / "README.md").write_text(readme(files), encoding="utf-8")
    return {name: len(records) for name, records in files.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where to write the JSONL files and README")
    args = parser.parse_args(argv)
    sizes = generate(args.out_dir)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{name} {n}" for name, n in sizes.items()))


if __name__ == "__main__":
    main()
