"""Static check: SQL is parameterised, never formatted from values (docs/ARCHITECTURE.md).

Walks the AST of every module of the product and flags each call that runs or builds SQL
(``execute``, ``executemany``, ``exec_driver_sql``, ``copy``, SQLAlchemy ``text``, psycopg
``sql.SQL``) whose SQL argument is built with an f-string, ``%`` formatting, ``str.format``,
``str.join`` or ``+`` with a non-literal. Names are followed to their assignments in the
same function or module. Allowed: literals, bound parameters, and psycopg composition
(``sql.SQL(...).format(sql.Identifier(...))``, ``sql.SQL(...).join(...)``, ``+`` of
composables); SQLAlchemy Core expressions and values the checker cannot see (a function's
parameter, an attribute) are not flagged.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHECKED_DIRS = ("streamflow", "assets", "sensors", "resources", "streamflow_defs", "benchmarks")
# Method or function name -> the keyword its SQL may also be passed as.
SQL_CALLS = {"execute": "query", "executemany": "query", "exec_driver_sql": "statement",
             "copy": "statement", "text": "text", "SQL": "obj", "statement": "template"}
# psycopg's composables, and streamflow.db.compose's (names from the schema, values as
# sql.Literal); the template of statement() is itself checked above.
COMPOSABLES = {"SQL", "Identifier", "Literal", "Placeholder", "Composed",
               "statement", "column", "columns", "table_name"}
# `x.copy(...)` is also dict/list/shutil copy: only a string that holds a COPY counts.
COPY_RE = re.compile(r"\bCOPY\b", re.IGNORECASE)

LITERAL, COMPOSED, UNKNOWN = "literal", "composed", "unknown"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str  # "the SQL of execute(...)", "an SQL statement"
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what} built with {self.why}"


class _Scope:
    """Assignments visible from a call: its enclosing functions' and the module's."""

    def __init__(self, nodes: list[ast.AST]) -> None:
        self.nodes = nodes  # innermost first, the module last

    def bindings(self, name: str) -> list[ast.expr] | None:
        """The values assigned to ``name`` in the innermost scope that binds it."""
        for node in self.nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                if name in {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs,
                                            *filter(None, [args.vararg, args.kwarg])]}:
                    return None  # a parameter: the caller decides, not visible here
            found = [value for value in _assignments(node, name)]
            if found:
                return found
        return None


def _assignments(scope: ast.AST, name: str) -> Iterator[ast.expr]:
    """Values bound to ``name`` directly in ``scope`` (not in nested functions or classes)."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    yield node.value
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and node.value is not None:
            if isinstance(node.target, ast.Name) and node.target.id == name:
                yield (node.value if isinstance(node, ast.AnnAssign)
                       else ast.BinOp(ast.Name(name), node.op, node.value))
        elif isinstance(node, ast.For | ast.comprehension):
            if isinstance(node.target, ast.Name) and node.target.id == name:
                iterable = node.iter
                if isinstance(iterable, ast.Tuple | ast.List | ast.Set):
                    yield from iterable.elts  # each value the loop variable takes
                else:
                    yield ast.Name("<loop>")  # unknown
        stack.extend(ast.iter_child_nodes(node))


def _name_of(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


class _Classifier:
    def __init__(self, scope: _Scope) -> None:
        self.scope = scope
        self.seen: set[str] = set()

    def __call__(self, node: ast.expr) -> str:
        """LITERAL, COMPOSED, UNKNOWN, or the reason the SQL is dynamic."""
        if isinstance(node, ast.Constant):
            return LITERAL if isinstance(node.value, str | bytes) else UNKNOWN
        if isinstance(node, ast.JoinedStr):
            if any(isinstance(v, ast.FormattedValue) for v in node.values):
                return "an f-string"
            return LITERAL
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if self(node.left) == LITERAL:
                return "% formatting"
            return self(node.left)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            kinds = {self(node.left), self(node.right)}
            if kinds <= {LITERAL}:
                return LITERAL
            if kinds <= {LITERAL, COMPOSED}:
                return COMPOSED  # sql.SQL(...) + sql.Identifier(...)
            dynamic = [k for k in kinds if k not in (LITERAL, COMPOSED, UNKNOWN)]
            return dynamic[0] if dynamic else "+ concatenation with a non-literal"
        if isinstance(node, ast.IfExp):
            kinds = {self(node.body), self(node.orelse)}
            dynamic = [k for k in kinds if k not in (LITERAL, COMPOSED, UNKNOWN)]
            return dynamic[0] if dynamic else (LITERAL if kinds == {LITERAL} else UNKNOWN)
        if isinstance(node, ast.Call):
            name = _name_of(node.func)
            if name in COMPOSABLES:
                return COMPOSED
            if name in ("format", "join") and isinstance(node.func, ast.Attribute):
                receiver = self(node.func.value)
                if receiver == COMPOSED:
                    return COMPOSED  # psycopg composition: values become quoted literals
                if receiver == LITERAL:
                    return f"str.{name}()"
                return receiver
            return UNKNOWN  # SQLAlchemy Core, a helper's result: not visible here
        if isinstance(node, ast.Name):
            if node.id in self.seen:
                return UNKNOWN
            self.seen.add(node.id)
            try:
                values = self.scope.bindings(node.id)
                if not values:
                    return UNKNOWN
                kinds = [self(v) for v in values]
            finally:
                self.seen.discard(node.id)
            dynamic = [k for k in kinds if k not in (LITERAL, COMPOSED, UNKNOWN)]
            if dynamic:
                return dynamic[0]
            return kinds[0] if len(set(kinds)) == 1 else UNKNOWN
        return UNKNOWN


def _literal_text(node: ast.AST) -> str:
    return " ".join(n.value for n in ast.walk(node)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str))


def _sql_argument(call: ast.Call, name: str) -> ast.expr | None:
    if call.args and not isinstance(call.args[0], ast.Starred):
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == SQL_CALLS[name]), None)


def _is_sql_call(call: ast.Call) -> str | None:
    func = call.func
    name = _name_of(func)
    if name not in SQL_CALLS:
        return None
    if name == "text":  # sqlalchemy.text / sa.text / text, not `obj.text(...)` in general
        if isinstance(func, ast.Attribute) and not (
                isinstance(func.value, ast.Name) and func.value.id in ("sa", "sqlalchemy")):
            return None
    return name


def find_violations(source: str, path: str = "<snippet>") -> list[Violation]:
    tree = ast.parse(source, filename=path)
    found: list[Violation] = []

    def visit(node: ast.AST, scopes: list[ast.AST]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scopes = [node, *scopes]
        if isinstance(node, ast.Call) and (name := _is_sql_call(node)):
            argument = _sql_argument(node, name)
            if argument is not None:
                kind = _Classifier(_Scope(scopes))(argument)
                if kind not in (LITERAL, COMPOSED, UNKNOWN) and (
                        name != "copy" or COPY_RE.search(_literal_text(argument) or "")
                        or _resolves_to_copy(argument, scopes)):
                    found.append(Violation(path, node.lineno, f"the SQL of {name}(...)", kind))
        for child in ast.iter_child_nodes(node):
            visit(child, scopes)

    visit(tree, [tree])
    return found


def _resolves_to_copy(argument: ast.expr, scopes: list[ast.AST]) -> bool:
    if not isinstance(argument, ast.Name):
        return False
    values = _Scope(scopes).bindings(argument.id) or []
    return any(COPY_RE.search(_literal_text(v)) for v in values)


# A string that starts like an SQL statement, wherever it is built (also SQL handed to a helper
# that executes it later, which the call check above cannot follow).
SQL_STATEMENT_RE = re.compile(
    r"^\s*(SELECT\b.*\bFROM\b|INSERT\s+INTO\b|UPDATE\s+\S+\s+SET\b|DELETE\s+FROM\b|"
    r"(CREATE|DROP|ALTER)\s+(TABLE|INDEX|SCHEMA|DATABASE|SEQUENCE|ROLE|VIEW|SYSTEM)\b|"
    r"COPY\s.*\b(FROM|TO)\b|TRUNCATE\s|WITH\s+\w+\s+AS\b)", re.DOTALL)  # keywords upper-case


def find_formatted_statements(source: str, path: str = "<snippet>") -> list[Violation]:
    """f-strings, `%`, `.format()` and `+` that build text starting like an SQL statement."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.JoinedStr) and any(
                isinstance(v, ast.FormattedValue) for v in node.values):
            text, why = "".join(v.value if isinstance(v, ast.Constant) else "{}"
                                for v in node.values), "an f-string"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add) and (
                isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)
                and not (isinstance(node.right, ast.Constant))):
            text = node.left.value
            why = "% formatting" if isinstance(node.op, ast.Mod) else "+ concatenation"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "format" and isinstance(node.func.value, ast.Constant)
              and isinstance(node.func.value.value, str)):
            text, why = node.func.value.value, "str.format()"
        else:
            continue
        if SQL_STATEMENT_RE.search(text):
            found.append(Violation(path, node.lineno, "an SQL statement", why))
    return found


def product_files() -> list[Path]:
    return sorted(p for d in CHECKED_DIRS for p in (ROOT / d).rglob("*.py"))


# -- the checker can fail: it flags each way of formatting SQL ---------------------------------

@pytest.mark.parametrize(("snippet", "why"), [
    ('def f(cur, uid):\n    cur.execute(f"SELECT * FROM t WHERE id = {uid}")\n', "an f-string"),
    ('def f(cur, uid):\n    cur.execute("SELECT * FROM t WHERE id = %s" % uid)\n',
     "% formatting"),
    ('def f(cur, uid):\n    cur.execute("SELECT * FROM t WHERE id = {}".format(uid))\n',
     "str.format()"),
    ('def f(cur, uid):\n    cur.execute("SELECT * FROM t WHERE id = " + uid)\n',
     "+ concatenation with a non-literal"),
    ('def f(cur, cols):\n    cur.execute(", ".join(cols))\n', "str.join()"),
    ('def f(cur, uid):\n    q = f"DELETE FROM t WHERE id = {uid}"\n    cur.executemany(q, [])\n',
     "an f-string"),
    ('Q = "SELECT * FROM t WHERE id = %s"\ndef f(conn, uid):\n    conn.execute(Q % uid)\n',
     "% formatting"),
    ('import sqlalchemy as sa\ndef f(conn, t):\n    conn.execute(sa.text(f"SELECT * FROM {t}"))\n',
     "an f-string"),
    ('def f(conn, t):\n    conn.exec_driver_sql(f"DROP TABLE {t}")\n', "an f-string"),
    ('def f(cur, t):\n    with cur.copy(f"COPY {t} FROM STDIN") as c:\n        pass\n',
     "an f-string"),
    ('from psycopg import sql\ndef f(conn, t):\n    conn.execute(sql.SQL(f"SELECT * FROM {t}"))\n',
     "an f-string"),
    ('def f(op):\n    for t in ("a", "b"):\n        op.execute(f"DROP TABLE s.{t}")\n',
     "an f-string"),
    ('from streamflow.db.compose import statement\ndef f(conn, uid, e):\n'
     '    conn.execute(statement(f"SELECT 1 FROM {{e}} WHERE id = {uid}", e=e))\n',
     "an f-string"),
])
def test_the_checker_flags_formatted_sql(snippet, why):
    (violation,) = find_violations(snippet)
    assert violation.why == why
    assert str(violation).startswith("<snippet>:")


@pytest.mark.parametrize("snippet", [
    'def f(cur, uid):\n    cur.execute("SELECT * FROM t WHERE id = %s", (uid,))\n',
    'def f(cur, uid):\n    cur.execute("SELECT * FROM t " "WHERE id = %(id)s", {"id": uid})\n',
    'from psycopg import sql\n'
    'Q = sql.SQL("SELECT {c} FROM {t}").format(c=sql.Identifier("c"), t=sql.Identifier("t"))\n'
    'def f(conn):\n    conn.execute(Q)\n',
    'from psycopg import sql\ndef f(conn, t, where):\n'
    '    q = sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(t))\n'
    '    q = sql.SQL("{} WHERE {}").format(q, where)\n    conn.execute(q)\n',
    'from psycopg import sql\ndef f(conn, cols):\n'
    '    conn.execute(sql.SQL(", ").join(map(sql.Identifier, cols)))\n',
    'def f(conn, desc):\n    conn.execute("SELECT 1 ORDER BY 1 " + ("DESC" if desc else "ASC"))\n',
    'import shutil\ndef f(d):\n    shutil.copy(f"{d}/a.txt", f"{d}/b.txt")\n',
    'def f(conn, query, params):\n    return conn.execute(query, params)\n',
    'from sqlalchemy import select\ndef f(conn, table):\n    conn.execute(select(table))\n',
    'from streamflow.db.compose import statement\n'
    'Q = statement("SELECT {e.x} FROM {e} WHERE {e.y} = %s", e=E)\n'
    'def f(conn, v):\n    conn.execute(Q + statement(" AND {e.z} = %s", e=E), (v, v))\n',
])
def test_the_checker_allows_parameters_and_composition(snippet):
    assert find_violations(snippet) == []


@pytest.mark.parametrize(("snippet", "why"), [
    ('def f(pg, t):\n    return one(pg, f"SELECT count(*) FROM {t}")\n', "an f-string"),
    ('def f(x):\n    return "DELETE FROM t WHERE id = %s" % x\n', "% formatting"),
    ('def f(x):\n    return "UPDATE t SET a = {}".format(x)\n', "str.format()"),
    ('def f(t):\n    return "DROP TABLE " + t\n', "+ concatenation"),
])
def test_the_statement_check_flags_sql_built_anywhere(snippet, why):
    (violation,) = find_formatted_statements(snippet)
    assert violation.why == why


def test_the_statement_check_ignores_prose_and_parameters():
    assert find_formatted_statements(
        'def f(n, x):\n    log(f"selected {n} rows from the table")\n'
        '    run("SELECT * FROM t WHERE a = %s", (x,))\n    return f"copy of {x}"\n') == []


# -- the product ----------------------------------------------------------------------------

def test_the_checker_sees_the_product():
    files = product_files()
    assert len(files) > 30
    calls = sum(1 for path in files for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and _is_sql_call(node))
    assert calls > 50  # it is looking at the real SQL, not at nothing


def test_all_sql_in_the_product_is_parameterised():
    violations = [v for path in product_files()
                  for v in find_violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert not violations, "SQL built from values:\n" + "\n".join(map(str, violations))


def test_no_sql_statement_is_formatted_anywhere_in_the_product():
    violations = [v for path in product_files() for v in
                  find_formatted_statements(path.read_text(), str(path.relative_to(ROOT)))]
    assert not violations, "SQL built from values:\n" + "\n".join(map(str, violations))
