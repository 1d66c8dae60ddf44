"""BFCL (Berkeley Function Calling Leaderboard, v4): data, output decoders, the AST checker and the scores.

Pure: stdlib and `function_calls` only, no model, no torch, no import of `bfcl_eval` (its imports pull heavy pinned
dependencies); the package is only located, to read its data files (`pip install --no-deps bfcl-eval`).

- `load_category` reads one Python single-turn category: the first turn's chat messages, the function
  schemas and, except for the (ir)relevance categories, which have none, the possible answers.
- `decode_python_calls` is bfcl-eval's `default_decode_ast_prompting` (a Python list of keyword calls,
  `[f(a=1), g.h(b=[1, 2])]`) by default (`decode="official"`), or a lenient reading on request;
  `decode_toolrl_calls` reads ToolRL's `<tool_call>` JSON lines with the reward's own parser.
- `check` mirrors `ast_checker.py` rule by rule (type checks, string normalisation, optional parameters,
  greedy any-order matching of parallel calls) and the runner's relevance / irrelevance rule; its error
  strings are the official ones (those on call counts also give the counts).
- `summarize` / `format_summary` turn per-category accuracies into the leaderboard's summary columns and Overall
  Acc, with the aggregation of its own code (`generate_leaderboard_csv`), for two versions: v4 (what the installed
  bfcl-eval 2026.3.23 computes: Overall = 10% Non-Live + 10% Live + 10% Irrelevance + 30% Multi Turn + 40% Agentic)
  and v3 (what ToolRL reports: Overall = the mean of Non-Live Overall, Live and Multi Turn). Multi-turn, agentic
  and Java / JavaScript categories cannot run here (`NOT_SUPPORTED` says why), so each Overall is reported over the
  columns that ran, with their share of its weight, beside the number the leaderboard's code prints, which
  scores every category not run as 0.

The official decoding, kept as the default because scores called BFCL must be the leaderboard's:
- the text after the last `</think>` is read, as bfcl-eval's Qwen handler (its Qwen3 prompting models) does
  before decoding; a handler without a thinking phase reads the whole text;
- backticks, newlines and spaces are stripped from both ends (not tabs or carriage returns), so a bare ```
  fence comes off but ```python or ```json stays and fails to parse, as does prose before or after the list;
  a failed decode is a wrong answer on the AST categories and "no call" (correct) on irrelevance;
- a unary operator negates its literal whatever it is (`+5` -> -5, `not True` -> -1, `~3` -> -3);
  `**kwargs` becomes a parameter named None; bytes, complex numbers and tuple dict keys are kept.
`decode="lenient"` (not the leaderboard's) reads the first markdown code block when there is one and reads
unary `+`/`-` as Python does (other unary operators fail).

Departures from bfcl-eval left in both modes, all on outputs where copying it would be unsafe:
- arithmetic inside an argument (`x=2*3`) is computed without `eval`, with Python's semantics, on literals only:
  numbers, strings, bytes, lists, tuples, sets and dicts, joined by any operator (bitwise, comparisons but `is`,
  `and` / `or`, `if` / `else` included) or subscripted. bfcl-eval `eval`s the expression in its own module,
  so names there (builtins such as `max(1, 2) + 1`, its imports and constants), f-strings and `is` evaluate;
  here they fail to decode;
- size limits: a repetition (`"a" * n`, `[0] * n`) longer than 100,000 items, an integer result wider than
  14,000 bits (Python cannot print one over 4,300 digits), a shift by more than that, and a printf field of width
  or precision `*` or 6+ digits fail to decode, where bfcl-eval would try to build them (and run out of memory
  or time on `9**9**9`);
- only Python is supported (Java and JavaScript need the official type converters).
`tests/test_bfcl.py` runs the official decoder (imported with three stubbed dependencies) beside ours on several
thousand outputs, fenced ones included: they agree on all but the departures above.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import operator
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icrl_lite.function_calls import parse_calls

# The Python single-turn categories (non-live, then live).
CATEGORIES = (
    "simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_irrelevance", "live_relevance",
)
NON_LIVE_AST = ("simple_python", "multiple", "parallel", "parallel_multiple")
LIVE_AST = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
VERSION_PREFIX = "BFCL_v4"

Call = dict[str, Any]  # {"name": str, "arguments": dict}


# ---- data ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    id: str
    category: str
    question: list[dict[str, str]]  # chat messages of the first turn (BFCL stores a list of turns)
    functions: list[dict]  # JSON schemas: name, description, parameters {type, properties, required}
    # [{func: {param: [acceptable values]}}]; None for the (ir)relevance categories, which have no answers
    ground_truth: list[dict[str, dict[str, list]]] | None


def bfcl_data_dir() -> Path:
    """The `data/` folder of the installed bfcl-eval package (located, not imported)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("BFCL data needs the bfcl-eval package: pip install --no-deps bfcl-eval")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_jsonl(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def load_category(name: str, limit: int | None = None) -> list[Entry]:
    """The entries of one category, in file order (the first `limit` if given)."""
    if name not in CATEGORIES:
        raise ValueError(f"unknown BFCL category {name!r}; choose from {', '.join(CATEGORIES)}")
    data = bfcl_data_dir()
    rows = _read_jsonl(data / f"{VERSION_PREFIX}_{name}.json")[:limit]
    answer_path = data / "possible_answer" / f"{VERSION_PREFIX}_{name}.json"
    answers = {r["id"]: r["ground_truth"] for r in _read_jsonl(answer_path)} if answer_path.exists() else None
    return [Entry(id=r["id"], category=name, question=r["question"][0], functions=r["function"],
                  ground_truth=None if answers is None else answers[r["id"]]) for r in rows]


# ---- decoders ----------------------------------------------------------------------------------------------


class _Undecodable(Exception):
    pass


DECODES = ("official", "lenient")
# lenient only: the first markdown code block (any language tag; an unclosed one runs to the end of the output)
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
           ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitOr: operator.or_,
           ast.BitXor: operator.xor, ast.BitAnd: operator.and_, ast.MatMult: operator.matmul}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
            ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}  # no `is`
_MAX_ITEMS = 100_000  # longest string, bytes or list that `*` may build inside an argument
# widest integer arithmetic may build: below Python's 4,300-digit limit on int -> str, so records stay writable
_MAX_INT_BITS = 14_000
# a printf field whose width or precision is `*` or 6+ digits: `"%999999999d" % 1` builds a 1 GB string
_WIDE_FORMAT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d{6}|\d*\.(?:\*|\d{6}))")


def _after_think(text: str) -> str:
    return text.rsplit("</think>", 1)[1] if "</think>" in text else text


def _call_name(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):  # math.factorial, a.b.c
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))  # "" for anything else, as bfcl-eval


def _keyword_call(node: ast.Call, lenient: bool) -> Call:
    # positional arguments are dropped, as bfcl-eval does (the call then misses its required parameters);
    # `**kwargs` becomes the parameter None, as there (the checker then finds an unexpected parameter)
    return {"name": _call_name(node.func), "arguments": {kw.arg: _value(kw.value, lenient) for kw in node.keywords}}


def _literal(node: ast.expr) -> Any:
    """A literal expression evaluated as Python would (bfcl-eval `eval`s arithmetic), without `eval`: numbers,
    strings, bytes, lists, tuples, sets and dicts joined by operators (arithmetic, bitwise, comparisons but `is`,
    `and` / `or`, `if` / `else`) and subscripts; anything else (names, calls, f-strings) fails."""
    try:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [_literal(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(_literal(e) for e in node.elts)
        if isinstance(node, ast.Set):
            return {_literal(e) for e in node.elts}
        if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
            return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](_literal(node.operand))
        if isinstance(node, ast.BinOp):
            left, right = _literal(node.left), _literal(node.right)
            _check_size(node.op, left, right)
            result = _BINARY[type(node.op)](left, right)
            if isinstance(result, int) and result.bit_length() > _MAX_INT_BITS:
                raise _Undecodable("integer too large")
            return result
        if isinstance(node, ast.Compare):  # 1 < x <= 3: pairwise, stopping at the first false one
            left = _literal(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                right = _literal(comparator)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):  # and / or return the deciding operand, skipping the rest
            for operand in node.values[:-1]:
                value = _literal(operand)
                if bool(value) == isinstance(node.op, ast.Or):
                    return value
            return _literal(node.values[-1])
        if isinstance(node, ast.IfExp):
            return _literal(node.body) if _literal(node.test) else _literal(node.orelse)
        if isinstance(node, ast.Subscript):
            return _literal(node.value)[_literal(node.slice)]
        if isinstance(node, ast.Slice):
            return slice(*(None if part is None else _literal(part) for part in (node.lower, node.upper, node.step)))
    except (TypeError, ValueError, ArithmeticError, LookupError) as e:  # "a" + 1, {[1]}, 1 / 0, [1][5]
        raise _Undecodable(str(e)) from e
    raise _Undecodable(f"{type(node).__name__} in arithmetic (bfcl-eval evaluates it with eval)")


def _check_size(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse operations whose result would be too large to build (bfcl-eval would try and exhaust memory)."""
    sequences = (str, bytes, list, tuple)
    if isinstance(op, ast.Mult) and isinstance(left, sequences) != isinstance(right, sequences):
        seq, n = (left, right) if isinstance(left, sequences) else (right, left)
        if isinstance(n, int) and n * len(seq) > _MAX_ITEMS:
            raise _Undecodable("repetition too large")
    if (isinstance(op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and abs(left) > 1
            and right * left.bit_length() > _MAX_INT_BITS):
        raise _Undecodable("power too large")
    if isinstance(op, ast.LShift) and isinstance(left, int) and isinstance(right, int) and right > _MAX_INT_BITS:
        raise _Undecodable("shift too large")
    if isinstance(op, ast.Mod) and isinstance(left, str | bytes) and _WIDE_FORMAT.search(
            left if isinstance(left, str) else left.decode("latin-1")):
        raise _Undecodable("printf width or precision too large")


def _value(node: ast.expr, lenient: bool) -> Any:
    """An argument's value, as bfcl-eval's `resolve_ast_by_type` reads it."""
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):
        operand = node.operand.value if isinstance(node.operand, ast.Constant) else None
        if lenient:  # Python's reading: `-` and `+` on a number
            if not isinstance(operand, int | float) or not isinstance(node.op, ast.USub | ast.UAdd):
                raise _Undecodable("unary operator other than - or + on a number")
            return -operand if isinstance(node.op, ast.USub) else operand
        if not isinstance(node.operand, ast.Constant):  # bfcl-eval reads `operand.value`, which these lack
            raise _Undecodable("unary operator on a non-literal")
        try:
            return -operand  # bfcl-eval negates whatever the operator: +5 -> -5, not True -> -1, ~3 -> -3
        except TypeError as e:  # -"x", -None
            raise _Undecodable(str(e)) from e
    if isinstance(node, ast.List):
        return [_value(v, lenient) for v in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(v, lenient) for v in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):  # {**other}
            raise _Undecodable("dict unpacking")
        try:
            return {_value(k, lenient): _value(v, lenient) for k, v in zip(node.keys, node.values)}
        except TypeError as e:  # an unhashable key: {[1]: 2}
            raise _Undecodable(str(e)) from e
    if isinstance(node, ast.BinOp):
        return _literal(node)
    if isinstance(node, ast.Name):  # an unquoted word: kept as its text
        return node.id
    if isinstance(node, ast.Call):  # a call with keywords nests as {name: arguments}; without, as its source
        if not node.keywords:
            return ast.unparse(node)
        call = _keyword_call(node, lenient)
        return {call["name"]: call["arguments"]}
    if isinstance(node, ast.Subscript):  # its source, the way bfcl-eval writes it: x[1, 2] -> "x[(1, 2)]"
        return ast.unparse(node.value) + "[" + ast.unparse(node.slice) + "]"
    raise _Undecodable(f"unsupported expression {type(node).__name__}")


def decode_python_calls(text: str, decode: str = "official") -> list[Call] | None:
    """`[func(a=1), pkg.other(b=[1, -2])]` (or a bare `func(a=1)`) -> calls; None if not a list of calls.

    decode="official" is bfcl-eval's `default_decode_ast_prompting`, as the leaderboard scores prompting models:
    read the text after the last `</think>` (bfcl-eval's Qwen handler), strip backticks, newlines and spaces from
    both ends, add the missing brackets, parse as a Python expression; every element must be a call, keyword
    arguments only. So a ```python (or ```json) fence, or prose around the list, fails to decode: on the
    irrelevance categories that counts as "no call" (correct), elsewhere as wrong. A bare ``` fence (no language
    tag) goes with the stripped backticks and newlines, so that list decodes. An empty output decodes to []
    (no call). The departures left are listed in the module docstring.

    decode="lenient" (not the leaderboard's) first reads the inside of the first markdown code block, if any
    (whatever its language tag and the text around it), and reads a unary `+`/`-` on a number as Python does
    (bfcl-eval negates under any unary operator: `+5` -> -5, `not True` -> -1) and refuses other unary operators.
    """
    if decode not in DECODES:
        raise ValueError(f"decode={decode!r}: use official (the leaderboard's) or lenient")
    text = _after_think(text)
    lenient = decode == "lenient"
    if lenient and (fenced := _FENCE.search(text)):
        text = fenced.group(1)
    text = text.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    try:
        tree = ast.parse(text.strip().strip("'"), mode="eval").body
        # a list (or, like bfcl-eval, a tuple) of calls, or one call
        elements = [tree] if isinstance(tree, ast.Call) else getattr(tree, "elts", None)
        if elements is None or not all(isinstance(e, ast.Call) for e in elements):
            return None
        return [_keyword_call(e, lenient) for e in elements]
    except (SyntaxError, ValueError, RecursionError, MemoryError, _Undecodable):  # ValueError: a null byte
        return None


_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)


def decode_toolrl_calls(text: str) -> list[Call] | None:
    """ToolRL's `<tool_call>` blocks, one `{"name": ..., "parameters"|"arguments": {...}}` JSON per line -> calls.

    Every block of the response counts (Qwen writes one per call); a last block left open by a stop string is
    read to the end. A block is parsed by the same rules as the ToolRL reward (`function_calls.parse_calls`), so a
    call the training reward counts as unparseable is unparseable here too. None when there is no block or any
    call is not such an object.
    """
    blocks = _TOOL_CALL.findall(_after_think(text))
    parsed = [parse_calls(block) for block in blocks]
    if not parsed or any(calls is None for calls in parsed):
        return None
    return [{"name": c["name"], "arguments": c["parameters"]} for calls in parsed for c in calls]


# ---- the AST checker ---------------------------------------------------------------------------------------

# Schema type -> the Python type a value must have ("any" is read as a string, as bfcl-eval does;
# number/object are the JSON-Schema spellings of float/dict).
PYTHON_TYPES = {"string": str, "integer": int, "float": float, "number": float, "boolean": bool,
                "array": list, "tuple": list, "dict": dict, "object": dict, "any": str}
_NESTED = ("array", "tuple")  # types whose items are type-checked too (one level, as bfcl-eval)
_STANDARDIZE = re.compile(r"[ ,./\-_*^]")


def standardize_string(s: str) -> str:
    """bfcl-eval's string normalisation: drop spaces and `,./-_*^`, lowercase, `'` -> `"`."""
    return _STANDARDIZE.sub("", s).lower().replace("'", '"')


def _std(x: Any) -> Any:
    return standardize_string(x) if isinstance(x, str) else x


def _answer_type(acceptable: list) -> type | None:
    """The type of the first non-optional acceptable value (how bfcl-eval spots variables)."""
    return next((type(a) for a in acceptable if a != ""), None)


def _type_check(param: str, value: Any, acceptable: list, schema_type: str, expected: type,
                nested: type | None, nested_name: str = "") -> tuple[bool, str, bool]:
    """-> (valid, error, is_variable). A value of the gold answers' type, when that differs from the schema's,
    is a "variable" and is later compared exactly (bfcl-eval's `type_checker`)."""
    answer_type = _answer_type(acceptable)
    is_variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:
        if nested is None:
            return True, "", is_variable
        for answer in acceptable:  # the items must fit the item type for at least one acceptable list
            if type(answer) is not list or all(
                    _type_check(param, item, answer, nested_name, nested, None)[0] for item in value):
                return True, "", is_variable
        return False, (f"Nested type checking failed for parameter {param!r}. Expected outer type {schema_type} "
                       f"with inner type {nested_name}. Parameter value: {value!r}."), False
    if answer_type is not None and type(value) is answer_type:
        return True, "", True
    return False, (f"Incorrect type for parameter {param!r}. Expected type {schema_type}, got "
                   f"{type(value).__name__}. Parameter value: {value!r}."), False


def _string_check(param: str, value: str, acceptable: list) -> str:
    if standardize_string(value) not in [standardize_string(a) for a in acceptable if isinstance(a, str)]:
        return f"Invalid value for parameter {param!r}: {value!r}. Expected one of {acceptable}. Case insensitive."
    return ""


def _list_check(param: str, value: list, acceptable: list) -> str:
    # "" (optional) standardizes to [] as in bfcl-eval, so an empty list then matches
    options = [[_std(x) for x in a] for a in acceptable if isinstance(a, (list, str))]
    if [_std(x) for x in value] not in options:
        return f"Invalid value for parameter {param!r}: {value!r}. Expected one of {acceptable}."
    return ""


def _dict_check(value: dict, acceptable: list) -> str:
    """One level: every key known and its value acceptable, every non-optional key present."""
    error = f"Invalid value: {value!r}. Expected one of {acceptable}."
    for answer in acceptable:
        if not isinstance(answer, dict):  # "" (optional)
            continue
        error = ""
        for key, v in value.items():
            if key not in answer:
                error = f"Unexpected dict key parameter: '{key}'."
                break
            options = [_std(a) for a in answer[key]]
            if _std(v) not in options:
                error = f"Invalid value for parameter {key!r}: {v!r}. Expected one of {options}."
                break
        else:
            missing = [k for k, options in answer.items() if k not in value and "" not in options]
            if missing:
                error = f"Missing dict key parameter: '{missing[0]}'."
        if not error:
            return ""
    return error


def _list_dict_check(value: list, acceptable: list) -> str:
    """A list of dicts: same length as an acceptable list, each dict checked against the one at its index."""
    error = f"Invalid value: {value!r}. Expected one of {acceptable}."
    for answer in acceptable:
        if not isinstance(answer, (list, str)) or len(value) != len(answer):
            error = "Wrong number of dictionaries in the list."
            continue
        errors = (_dict_check(v, [a]) if isinstance(v, dict) else f"Not a dict: {v!r}." for v, a in zip(value, answer))
        error = next((e for e in errors if e), "")
        if not error:
            return ""
    return error


def _check_call(schema: dict, call: dict[str, dict], answer: dict[str, dict[str, list]],
                underscore_to_dot: bool) -> str:
    """One decoded call {name: arguments} against one gold call {name: {param: [acceptable]}}; "" if it matches."""
    gold = next(iter(answer.values()))
    name = schema["name"]
    if underscore_to_dot and "." in name:  # for models whose API forbids "." in names (not prompting models)
        name = name.replace(".", "_")
    if name not in call:
        return f"Function name {name!r} not found in model output."
    arguments = call[name]
    properties = schema["parameters"]["properties"]
    for param in schema["parameters"].get("required", []):
        if param not in arguments:
            return f"Missing required parameter: {param!r}."
    for param, value in arguments.items():
        if param not in properties or param not in gold:
            return f"Unexpected parameter: {param!r}."
        schema_type = properties[param]["type"]
        if schema_type not in PYTHON_TYPES:
            raise ValueError(f"parameter {param!r} of {schema['name']!r} has type {schema_type!r}, which the "
                             f"checker does not know; known: {', '.join(PYTHON_TYPES)}")
        expected, nested, nested_name = PYTHON_TYPES[schema_type], None, ""
        if schema_type in _NESTED and "type" in properties[param].get("items", {}):
            nested_name = properties[param]["items"]["type"]
            nested = PYTHON_TYPES[nested_name]
        if schema_type == "tuple" and type(value) is tuple:
            value = list(value)
        if schema_type in ("float", "number") and type(value) is int:  # an int is accepted for a float
            value = float(value)
        acceptable = gold[param]
        valid, error, is_variable = _type_check(param, value, acceptable, schema_type, expected, nested, nested_name)
        if not valid:
            return error
        if not is_variable:
            if expected is dict:
                error = _dict_check(value, acceptable)
            elif expected is list and nested is dict:
                error = _list_dict_check(value, acceptable)
            elif expected is str:
                error = _string_check(param, value, acceptable)
            elif expected is list:
                error = _list_check(param, value, acceptable)
            else:
                error = "" if value in acceptable else (
                    f"Invalid value for parameter {param!r}: {value!r}. Expected one of {acceptable}.")
            if error:
                return error
        elif value not in acceptable:
            return f"Invalid value for parameter {param!r}: {value!r}. Expected one of {acceptable}."
    for param, acceptable in gold.items():
        if param not in arguments and "" not in acceptable:
            return f"Optional parameter {param!r} not provided and not marked as optional."
    return ""


def _schema(functions: list[dict], name: str) -> dict:
    for schema in functions:
        if schema["name"] == name:
            return schema
    raise ValueError(f"the gold function {name!r} has no schema among {[f['name'] for f in functions]}")


def _is_call_list(calls: Any) -> bool:
    return isinstance(calls, list) and all(
        isinstance(c, Mapping) and isinstance(c.get("name"), str) and isinstance(c.get("arguments"), Mapping)
        for c in calls)


def check(calls: Sequence[Call] | None, entry: Entry, language: str = "python",
          underscore_to_dot: bool = False) -> tuple[bool, str]:
    """Score decoded calls (None = the output did not decode) against an entry -> (valid, error).

    (ir)relevance: irrelevance is correct when there is no call (no decode, or an empty list), live_relevance
    when there is at least one. Otherwise, as bfcl-eval's `ast_checker`: "parallel" categories need as many
    calls as gold calls, matched in any order (each gold call, in order, takes the first unmatched call that
    passes); "multiple" ones one call, checked against the gold function's schema; the rest exactly one call.
    `underscore_to_dot` mirrors models scored with "." replaced by "_" in names (off for prompting models).
    """
    if language != "python":
        raise ValueError(f"language={language!r}: only python is supported "
                         "(BFCL's Java and JavaScript categories need its type converters)")
    category = entry.category
    has_call = _is_call_list(calls) and len(calls) > 0
    if "relevance" in category:  # irrelevance and live_relevance
        if "irrelevance" in category:
            return (True, "") if not has_call else (False, "Valid syntax. Successfully decode AST when it should not.")
        return (True, "") if has_call else (False, "Invalid syntax. Failed to decode AST when it should have.")
    if calls is None:
        return False, "Invalid syntax. Failed to decode AST."
    if not _is_call_list(calls):
        return False, "Did not output in the specified format."
    outputs = [{c["name"]: dict(c["arguments"])} for c in calls]
    gold = entry.ground_truth
    if gold is None:
        raise ValueError(f"entry {entry.id} of {category} has no ground truth to check calls against")
    if "parallel" in category or "multiple" in category:
        if len(outputs) != len(gold):
            return False, f"Wrong number of functions: {len(outputs)} for {len(gold)} expected."
    elif len(outputs) != 1:
        return False, f"Wrong number of functions: {len(outputs)} for 1 expected."
    if "parallel" not in category:
        schema = _schema(entry.functions, next(iter(gold[0]))) if "multiple" in category else entry.functions[0]
        error = _check_call(schema, outputs[0], gold[0], underscore_to_dot)
        return not error, error
    matched: set[int] = set()
    for i, answer in enumerate(gold):
        schema = _schema(entry.functions, next(iter(answer)))
        errors = {}
        for j, output in enumerate(outputs):
            if j in matched:
                continue
            errors[j] = _check_call(schema, output, answer, underscore_to_dot)
            if not errors[j]:
                matched.add(j)
                break
        else:
            details = "; ".join(f"output {j}: {e}" for j, e in errors.items())
            return False, (f"Could not find a matching function among index {sorted(errors)} of model output for "
                           f"index {i} of possible answers ({next(iter(answer))}). {details}")
    return True, ""


# ---- scores ------------------------------------------------------------------------------------------------


def category_size(name: str) -> int:
    """Entries in a category's data file: the size by which the leaderboard weighs it."""
    with (bfcl_data_dir() / f"{VERSION_PREFIX}_{name}.json").open() as f:
        return sum(1 for line in f if line.strip())


@dataclass(frozen=True)
class Mix:
    """A leaderboard aggregate of `parts` (category names or mixes): `how` is `mean` (unweighted) or `size`
    (weighted by the categories' entry counts; its parts are categories)."""

    parts: tuple[str | Mix, ...]
    how: str = "mean"


@dataclass(frozen=True)
class Leaderboard:
    """One version's summary columns (name -> category or mix, in the leaderboard's order) and the weights of the
    columns its Overall Acc averages."""

    version: str
    source: str
    columns: dict[str, str | Mix]
    overall: dict[str, float]


MULTI_TURN = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
WEB_SEARCH = ("web_search_base", "web_search_no_snippet")
MEMORY = ("memory_kv", "memory_vector", "memory_rec_sum")
_NON_LIVE_AST = Mix((Mix(("simple_python", "simple_java", "simple_javascript")), "multiple", "parallel",
                     "parallel_multiple"))
_IRRELEVANCE = Mix(("irrelevance", "live_irrelevance"))
LEADERBOARDS = {
    "v4": Leaderboard(
        "v4", "bfcl-eval 2026.3.23, eval_checker/eval_runner_helper.py generate_leaderboard_csv",
        {"Non-Live AST Acc": _NON_LIVE_AST, "Non-Live Overall Acc": _NON_LIVE_AST, "Live Acc": Mix(LIVE_AST, "size"),
         "Multi Turn Acc": Mix(MULTI_TURN), "Web Search Acc": Mix(WEB_SEARCH), "Memory Acc": Mix(MEMORY),
         "Agentic Overall Acc": Mix((Mix(WEB_SEARCH), Mix(MEMORY))),
         "Relevance Detection": "live_relevance", "Irrelevance Detection": _IRRELEVANCE},
        {"Non-Live Overall Acc": 10, "Live Acc": 10, "Irrelevance Detection": 10, "Multi Turn Acc": 30,
         "Agentic Overall Acc": 40}),
    "v3": Leaderboard(
        "v3", "gorilla 35ab61a5, bfcl/eval_checker/eval_runner_helper.py generate_leaderboard_csv",
        {"Non-Live AST Acc": _NON_LIVE_AST, "Non-Live Overall Acc": Mix((*_NON_LIVE_AST.parts, "irrelevance")),
         "Live Acc": Mix((*LIVE_AST, "live_irrelevance", "live_relevance"), "size"), "Multi Turn Acc": Mix(MULTI_TURN),
         "Relevance Detection": "live_relevance", "Irrelevance Detection": _IRRELEVANCE},
        {"Non-Live Overall Acc": 1, "Live Acc": 1, "Multi Turn Acc": 1}),
}

# The categories the leaderboards score that `icrl-lite eval bfcl` cannot run, and why.
NOT_SUPPORTED = {
    ("simple_java", "simple_javascript"):
        "Java / JavaScript answers need bfcl-eval's Java and JavaScript parsers and type converters; our decoder and "
        "checker read Python only, so the simple part of Non-Live is simple_python alone (the leaderboard averages "
        "the three)",
    MULTI_TURN:
        "each entry is several user turns against BFCL's stateful Python backends (file system, trading, travel, "
        "messaging, ...): the model's calls must run and their results come back within a turn, and the checker "
        "compares the backends' state and results with the gold calls' after every turn; this runner generates one "
        "reply to an entry's first turn and runs nothing",
    WEB_SEARCH:
        "a multi-step agent over a live web-search backend (SerpAPI, with an API key) whose final answer is matched "
        "against the gold strings; not implemented here",
    MEMORY:
        "prerequisite conversations first write to a memory backend (key-value, vector store with a sentence "
        "encoder, or recursive summaries) that later questions are answered from; not implemented here",
}
_REASON = {category: reason for group, reason in NOT_SUPPORTED.items() for category in group}
_UNSUPPORTED = "not run"  # a column made only of categories this runner cannot produce


def _not_run_as_0(node: str | Mix, results: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """bfcl-eval's value: a category not run counts as 0 (with its full size where sizes weigh)."""
    if isinstance(node, str):
        return results.get(node, 0.0)
    return _combine(node, [(p, _not_run_as_0(p, results, sizes)) for p in node.parts], sizes)


def _over_run(node: str | Mix, results: Mapping[str, float], sizes: Mapping[str, int]) -> float | str | None:
    """The value over the categories this runner supports: unsupported parts leave their mix; a supported
    category not run leaves it incomplete (None)."""
    if isinstance(node, str):
        return results[node] if node in results else _UNSUPPORTED if node in _REASON else None
    values = [(p, _over_run(p, results, sizes)) for p in node.parts]
    if any(v is None for _, v in values):
        return None
    kept = [(p, v) for p, v in values if v != _UNSUPPORTED]
    return _combine(node, kept, sizes) if kept else _UNSUPPORTED


def _combine(node: Mix, parts: list[tuple[str | Mix, float]], sizes: Mapping[str, int]) -> float:
    if node.how == "size":
        return sum(v * sizes[p] for p, v in parts) / sum(sizes[p] for p, _ in parts)
    return sum(v for _, v in parts) / len(parts)


def leaderboard_scores(board: Leaderboard, results: Mapping[str, float], sizes: Mapping[str, int]) -> dict:
    """A version's summary columns and Overall Acc from per-category accuracies (fractions in [0, 1]) and the
    categories' full sizes (`category_size`; only the size-weighted live categories need one).

    Each value comes twice. `over_run`: the leaderboard's formula over the categories this runner supports; None
    when a supported category of the column was not run, "not run" for a column made only of unsupported ones.
    `not_run_as_0`: the number the leaderboard's code uses for the same results, scoring every category not run as 0
    (its tables print N/A for such a column, but its Overall Acc adds the 0 in).
    The overall `over_run` is the weighted mean of the columns that have a value, their weights renormalised;
    `over_columns` names them and `weight_share` is their share of the full weight.

    Sizes are the full categories' even when `limit` or `sample` scored fewer entries, so that a sample estimates
    the full-set column (the leaderboard weighs by the entries scored, which on a full run are the same). The v3
    formula is applied to the v4 data files, the only ones bfcl-eval ships (v4 fixed some v3 entries and answers);
    v3 before Apr 9, 2025 also averaged four executable categories into Non-Live Overall (retired since).
    """
    columns = {name: {"over_run": _over_run(node, results, sizes), "not_run_as_0": _not_run_as_0(node, results, sizes)}
               for name, node in board.columns.items()}
    weights = board.overall
    entered = [c for c in weights if columns[c]["over_run"] not in (None, _UNSUPPORTED)]
    weight = sum(weights[c] for c in entered)
    return {"version": board.version, "source": board.source, "columns": columns, "overall": {
        "over_run": sum(weights[c] * columns[c]["over_run"] for c in entered) / weight if entered else None,
        "not_run_as_0": sum(w * columns[c]["not_run_as_0"] for c, w in weights.items()) / sum(weights.values()),
        "over_columns": entered, "weight_share": weight / sum(weights.values())}}


def not_run(results: Mapping[str, float]) -> dict[str, str]:
    """Every category the leaderboards score that has no result, with why: unsupported here, or not selected."""
    def leaves(node: str | Mix) -> list[str]:
        return [node] if isinstance(node, str) else [c for p in node.parts for c in leaves(p)]

    scored = dict.fromkeys(c for b in LEADERBOARDS.values() for node in b.columns.values() for c in leaves(node))
    return {c: _REASON.get(c, "not selected (categories=)") for c in scored if c not in results}


def summarize(results: Mapping[str, float], sizes: Mapping[str, int]) -> dict:
    """The summary of a run: each leaderboard version's columns and overall, and the categories not run."""
    return {**{v: leaderboard_scores(b, results, sizes) for v, b in LEADERBOARDS.items()}, "not_run": not_run(results)}


def format_table(results: Mapping[str, float], counts: Mapping[str, int]) -> str:
    """Per-category accuracies (%) with entry counts."""
    order = [c for c in CATEGORIES if c in results] + sorted(set(results) - set(CATEGORIES))
    width = max(len(c) for c in order + ["category"])
    lines = [f"{'category':<{width}}  {'n':>5}  {'accuracy':>8}"]
    return "\n".join(lines + [f"{c:<{width}}  {counts.get(c, 0):>5}  {100 * results[c]:>8.2f}" for c in order])


def format_summary(summary: dict) -> str:
    """Each version's leaderboard columns side by side (over the categories run), what each Overall Acc covers
    and the number the leaderboard's own code prints, then the categories not run with why."""
    versions = [v for v in LEADERBOARDS if v in summary]
    names = list(dict.fromkeys(c for v in versions for c in ("Overall Acc", *summary[v]["columns"])))
    width = max(len(n) for n in names)

    def cell(version: str, name: str) -> str:
        if name == "Overall Acc":
            value = summary[version]["overall"]["over_run"]
        elif name in summary[version]["columns"]:
            value = summary[version]["columns"][name]["over_run"]
        else:
            return "-"
        return "incomplete" if value is None else value if isinstance(value, str) else f"{100 * value:.2f}"

    lines = ["leaderboard columns: the leaderboard's formulas over the categories run",
             f"{'column':<{width + 2}}" + "".join(f"  {v:>10}" for v in versions)]
    for n in names:
        label = f"{n} *" if n == "Overall Acc" else n
        lines.append(f"{label:<{width + 2}}" + "".join(f"  {cell(v, n):>10}" for v in versions))
    for v in versions:
        overall = summary[v]["overall"]
        lines.append(_fill(f"* {v}: over {', '.join(overall['over_columns']) or 'nothing'}, "
                          f"{100 * overall['weight_share']:.0f}% of its weight; the leaderboard's own code, which "
                          f"scores the categories not run as 0, prints {100 * overall['not_run_as_0']:.2f} "
                          f"({summary[v]['source']})", "", "    "))
    missing = summary["not_run"]
    if missing:
        lines.append("not run:")
        for reason in dict.fromkeys(missing.values()):
            lines.append(_fill(f"{', '.join(c for c, r in missing.items() if r == reason)}: {reason}", "  ", "    "))
    return "\n".join(lines)


def _fill(text: str, first: str, rest: str) -> str:
    return textwrap.fill(text, width=116, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)
