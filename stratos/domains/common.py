"""Helpers several domains share: number parsing, safe arithmetic, and a seed-free train/test split."""

from __future__ import annotations

import ast
import hashlib
import math
import operator
import re

from stratos.answers import Reading, last_number_candidates, read_answer, read_strict

_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")

_BINARY_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_MAX_EXPR_CHARS = 200  # a calculator annotation is short; longer text is not arithmetic we should run


def parse_number(text: str | None) -> float | None:
    """The first number in `text` ('$1,234.50' -> 1234.5), or None when there is none."""
    if text is None:
        return None
    match = _NUMBER_RE.search(text.replace("$", ""))
    if match is None:
        return None
    try:
        return float(match.group().replace(",", ""))
    except ValueError:
        return None


def numbers_equal(predicted: str | None, gold: str) -> bool:
    """Numeric comparison ('72' == '72.0' == '$72'); False when either side has no number."""
    a, b = parse_number(predicted), parse_number(gold)
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def format_number(value: float) -> str:
    """Canonical answer text: integers without a decimal point, other values without trailing zeros."""
    if value == int(value):
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


_LEADING_NUMBER_RE = re.compile(r"\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?|-?\.\d+)")


def leading_number(text: str) -> str | None:
    """The number a stated answer starts with ('$1,234.50 per day' -> '1234.5'), canonical; None otherwise.

    Anchored at the start: in "the answer is unknown, but 4 + 5 = 9" the stated answer holds no
    number, and taking its first one would credit the model with 4.
    """
    match = _LEADING_NUMBER_RE.match(text)
    if match is None:
        return None
    try:
        return format_number(float(match.group(1).replace(",", "")))
    except (ValueError, OverflowError):
        return None


def extract_number(completion: str) -> str | None:
    """The '####' answer of a completion as a canonical number string, or None."""
    return read_strict(completion, leading_number)


def read_number(completion: str, question: str = "") -> Reading:
    """A numeric answer by every rule of stratos.answers, the last number being the fallback."""
    return read_answer(completion, leading_number, last_number_candidates, question)


def safe_eval(expr: str) -> float | None:
    """Evaluate plain arithmetic (numbers, + - * / // % **, parentheses); None for anything else.

    Parsed with `ast` and walked by hand so that text from a model can never run code.
    """
    expr = expr.strip().replace(",", "").replace("$", "")
    if not expr or len(expr) > _MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
        return float(_walk(tree.body))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None


def _walk(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        return _UNARY_OPS[type(node.op)](_walk(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left, right = _walk(node.left), _walk(node.right)
        # A huge power would hang the process; no annotation needs one.
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise ValueError("power too large")
        return _BINARY_OPS[type(node.op)](left, right)
    raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")


def matches_written(computed: float, written: str) -> bool:
    """Whether `computed` equals a value written with some precision ('3.33' accepts 10/3, '3.4' does not)."""
    value = parse_number(written)
    if value is None:
        return False
    if math.isclose(computed, value, rel_tol=1e-9, abs_tol=1e-9):
        return True
    decimals = len(written.strip().split(".")[1]) if "." in written.strip() else 0
    scale = 10.0**decimals
    # Writers round or truncate to the precision they show; accept either, nothing looser.
    rounded = math.floor(computed * scale + 0.5) / scale
    truncated = math.trunc(computed * scale) / scale
    return math.isclose(value, rounded, abs_tol=1e-9) or math.isclose(value, truncated, abs_tol=1e-9)


def split_of(key: str, test_fraction: float = 0.1) -> str:
    """'test' or 'train' for an item, from a hash of its text.

    The split depends on the item only, not on the seed or the requested sizes,
    so a generated or user dataset can never leak a test item into training.
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if position < test_fraction else "train"


def stable_id(prefix: str, key: str) -> str:
    """A short id that names an item by its content."""
    return f"{prefix}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:12]}"
