"""Reading Nexusflow's gold calls, written as Python source, with ``ast`` (never ``eval``).

References vary in style: ``r = nvdlib.searchCPE(keywordSearch = 'x', limit = 2)``,
``vt_get_domain_report(domain = "a.com", x_apikey = "k")``, ``f(z= 3,  x= 4)``: an assignment
or a module prefix may wrap the call; values are literals (strings in either quote, numbers,
booleans, None, lists, dicts).
"""

from __future__ import annotations

import ast

from fcmistral.prompt import FunctionCall


class PythonCallError(ValueError):
    """The reference is not a single call with literal keyword arguments."""


def _callee_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):  # module.function: the function is what the schema names
        return func.attr
    raise PythonCallError("the callee is not a plain or dotted name")


def parse_python_call(source: str) -> FunctionCall:
    try:
        tree = ast.parse(source.strip())
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
    for keyword in call.keywords:
        if keyword.arg is None:
            raise PythonCallError("**kwargs in a reference call")
        try:
            arguments[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
            raise PythonCallError(f"argument '{keyword.arg}' is not a literal") from err
    return FunctionCall(_callee_name(call.func), arguments)
