"""Implementations of some of the bundled function-calling set's functions, for multi-step episodes.

    icrl-lite train --config fc functions=examples/fc_steps/functions.py demo_pool=examples/fc_steps/demos.jsonl

With `functions=`, a `<tool_call>` block runs: each call's result comes back between `<obs>` and `</obs>` and
the policy continues until it answers in `<response>`. Every public function here is an implementation,
found by its name; a call of a function with no implementation gets an "unknown function" error result.

The arithmetic ones compute the real answer. The ones that would need a live service (weather, stock
prices, exchange rates, time zones) return SIMULATED values: deterministic for the same arguments, so a
rollout can be replayed, but not real data. Replace them with real clients for real work.
"""

from __future__ import annotations

import hashlib
import math

_LENGTH = {"millimeters": 0.001, "centimeters": 0.01, "meters": 1.0, "kilometers": 1000.0, "inches": 0.0254,
           "feet": 0.3048, "yards": 0.9144, "miles": 1609.344}
_WEIGHT = {"grams": 0.001, "kilograms": 1.0, "ounces": 0.028349523125, "pounds": 0.45359237, "tonnes": 1000.0}
_VOLUME = {"milliliters": 0.001, "liters": 1.0, "cups": 0.2365882365, "pints": 0.473176473, "gallons": 3.785411784}
_PER_USD = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88, "CAD": 1.37, "AUD": 1.52, "INR": 83.3}


def _unit(name: str) -> tuple[dict, float]:
    key = name.lower().strip()
    key = key if key.endswith("s") or key + "s" not in {**_LENGTH, **_WEIGHT, **_VOLUME} else key + "s"
    for table in (_LENGTH, _WEIGHT, _VOLUME):
        if key in table:
            return table, table[key]
    raise ValueError(f"unknown unit {name!r}")


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    (kind_from, a), (kind_to, b) = _unit(from_unit), _unit(to_unit)
    if kind_from is not kind_to:
        raise ValueError(f"cannot convert {from_unit} to {to_unit}: not the same kind of quantity")
    return round(value * a / b, 6)


def convert_temperature(temperature: float, from_scale: str, to_scale: str) -> float:
    kelvin = {"celsius": temperature + 273.15, "fahrenheit": (temperature - 32) * 5 / 9 + 273.15,
              "kelvin": temperature}[from_scale]
    return round({"celsius": kelvin - 273.15, "fahrenheit": (kelvin - 273.15) * 9 / 5 + 32, "kelvin": kelvin}[to_scale], 4)


def is_prime(number: int) -> bool:
    return number > 1 and all(number % d for d in range(2, math.isqrt(number) + 1))


def find_gcd(a: int, b: int) -> int:
    return math.gcd(a, b)


def calculate_factorial(n: int) -> int:
    if n < 0 or n > 500:
        raise ValueError("n must be between 0 and 500")
    return math.factorial(n)


def calculate_percentage(part: float, whole: float) -> float:
    return round(100 * part / whole, 4)


def calculate_average(numbers: list[float]) -> float:
    return sum(numbers) / len(numbers)


def calculate_compound_interest(principal: float, annual_rate: float, years: int, compounds_per_year: int = 1) -> float:
    return round(principal * (1 + annual_rate / 100 / compounds_per_year) ** (compounds_per_year * years), 2)


def calculate_loan_payment(principal: float, annual_rate: float, years: int) -> float:
    r, n = annual_rate / 100 / 12, years * 12
    return round(principal / n if r == 0 else principal * r / (1 - (1 + r) ** -n), 2)


def solve_quadratic(a: float, b: float, c: float) -> list:
    if a == 0:
        raise ValueError("a must not be 0: the equation is not quadratic")
    d = b * b - 4 * a * c
    if d < 0:
        re, im = -b / (2 * a), math.sqrt(-d) / (2 * a)
        return [f"{re:g}+{im:g}i", f"{re:g}-{im:g}i"]
    return sorted({(-b + math.sqrt(d)) / (2 * a), (-b - math.sqrt(d)) / (2 * a)})


def _simulated(*key) -> float:
    """A number in [0, 1) fixed by the arguments (simulated data, see the module docstring)."""
    return int(hashlib.sha256(repr(key).encode()).hexdigest()[:8], 16) / 16**8


def convert_currency(amount: float, from_currency: str, to_currency: str) -> float:
    rates = {k: v for k, v in _PER_USD.items()}  # SIMULATED fixed rates, not today's
    if from_currency not in rates or to_currency not in rates:
        raise ValueError(f"unknown currency; known: {', '.join(rates)}")
    return round(amount / rates[from_currency] * rates[to_currency], 2)


def get_current_weather(city: str, unit: str = "celsius") -> dict:
    celsius = round(-5 + 35 * _simulated("weather", city.lower()), 1)  # SIMULATED
    temperature = celsius if unit == "celsius" else round(celsius * 9 / 5 + 32, 1)
    return {"city": city, "temperature": temperature, "unit": unit, "simulated": True}


def get_stock_price(symbol: str, exchange: str = "NASDAQ") -> dict:
    return {"symbol": symbol.upper(), "price": round(10 + 490 * _simulated("stock", symbol.upper()), 2),
            "currency": "GBP" if exchange == "LSE" else "USD", "simulated": True}


def get_timezone(location: str) -> str:
    return f"UTC{int(24 * _simulated('tz', location.lower())) - 11:+d}"  # SIMULATED
