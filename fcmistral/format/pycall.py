"""Reading Nexusflow's gold calls, written as Python source, with ``ast`` (never ``eval``).

References vary in style: ``r = nvdlib.searchCPE(keywordSearch = 'x', limit = 2)``,
``vt_get_domain_report(domain = "a.com", x_apikey = "k")``, ``f(z= 3,  x= 4)``: an assignment
or a module prefix may wrap the call; values are literals (strings in either quote, numbers,
booleans, None, lists, dicts, tuples, sets). An argument may be named by a Python keyword
(``convertCurrency(from="EUR", to="GBP")``, real toolalpaca references): not Python, but
unambiguous, so it is read. Tuples and sets become lists, as a JSON call writes them; a set's
order is its sorted order when its items sort, else Python's.
"""

from __future__ import annotations

import ast
import io
import keyword
import tokenize
from typing import Any

from fcmistral.prompt import FunctionCall


class PythonCallError(ValueError):
    """The reference is not a single call with literal keyword arguments."""


def _callee_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):  # module.function: the function is what the schema names
        return func.attr
    raise PythonCallError("the callee is not a plain or dotted name")


_KEYWORD_PREFIX = "_fcmistral_keyword_"


def _rename_keyword_arguments(source: str) -> str:
    """The source with each ``keyword=`` argument name renamed to a plain identifier."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):  # ast.parse reports it better
        return source
    for i, token in enumerate(tokens[:-1]):
        following = tokens[i + 1]
        if (token.type == tokenize.NAME and keyword.iskeyword(token.string)
                and following.type == tokenize.OP and following.string == "="):
            tokens[i] = token._replace(string=_KEYWORD_PREFIX + token.string)
    return tokenize.untokenize(tokens)


def _json_value(value: Any) -> Any:
    """A literal as the JSON value a model would write for it (tuples and sets become lists)."""
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, (set, frozenset)):
        try:
            items = sorted(value)
        except TypeError:
            items = list(value)
        return [_json_value(v) for v in items]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(f"a {type(value).__name__} has no JSON form")


def parse_python_call(source: str) -> FunctionCall:
    try:
        tree = ast.parse(_rename_keyword_arguments(source.strip()))
    except SyntaxError as err:
        raise PythonCallError(f"not Python: {err.msg}") from err
    except (ValueError, MemoryError, RecursionError) as err:  # null bytes; nesting the parser refuses
        raise PythonCallError(f"not Python: {type(err).__name__}") from err
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.Expr, ast.Assign)):
        raise PythonCallError("expected one call (optionally assigned)")
    call = tree.body[0].value
    if not isinstance(call, ast.Call):
        raise PythonCallError("the statement is not a call")
    if call.args:
        raise PythonCallError("positional arguments cannot be matched to names without the signature")
    arguments = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise PythonCallError("**kwargs in a reference call")
        name = kw.arg.removeprefix(_KEYWORD_PREFIX)
        try:
            arguments[name] = _json_value(ast.literal_eval(kw.value))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
            raise PythonCallError(f"argument '{name}' is not a literal") from err
    return FunctionCall(_callee_name(call.func), arguments)
