"""A small CEL (Common Expression Language) evaluator for pub/sub routing rules.

Dapr routes a message to the first rule whose ``match`` expression is true, with
the CloudEvent bound to the variable ``event`` (``event.type == "widget"``,
``event.data.price > 100``). This module implements the part of CEL such rules
need, without a third-party dependency (cel-python pulls in lark, pendulum,
google-re2, PyYAML, jmespath... and costs ~23 MB RSS on import).

API::

    prog = compile('event.type == "widget" && event.data.price > 100')  # CelError if bad
    prog.evaluate({"event": cloud_event})        # -> bool, never raises
    prog.evaluate_value({"event": cloud_event})  # -> CEL value, raises CelEvalError

``compile`` parses and type-checks what can be checked without a schema (syntax,
literals, known functions and their arities, macro shapes, regex literals), so a
bad subscription is reported when it is loaded, never at delivery. ``CelError``
(a ``ValueError``) carries ``.column`` (1-based character offset in the
expression) and ``.expression``.

``evaluate`` returns True only when the expression yields the bool ``true``. A
non-bool result or a runtime error (missing field, wrong operand types, integer
overflow, division by zero...) means "the rule does not match"; it is never
raised to the caller. Errors follow CEL's commutative semantics: ``&&`` is false
if any operand is false and ``||`` is true if any operand is true, even when the
other operand is an error (so ``has(event.data.x) && event.data.x > 1`` and
``event.data.x > 1 || true`` behave as in CEL).

Supported subset (everything else is rejected by ``compile`` with CelError):

* Literals: int (``1``, ``-7``, ``0x1F``), uint (``1u``), double (``1.5``,
  ``.5``, ``1e3``), string (``"..."``, ``'...'``, triple-quoted, raw
  ``r"..."``; escapes ``\\n \\t \\\\ \\" \\' \\xHH \\uHHHH \\UHHHHHHHH \\ooo``
  and ``\\a \\b \\f \\r \\v \\? \\```), bytes (``b"..."``), ``true``, ``false``,
  ``null``, lists ``[a, b]``, maps ``{k: v}``. ``//`` comments.
* Variables from the activation (``event``), member access ``a.b``, indexing
  ``a["k"]`` / ``a[0]`` (negative or out-of-range index is an error).
* Operators, with CEL precedence: ``! -`` (unary), ``* / %``, ``+ -``,
  ``== != < <= > >= in``, ``&&``, ``||``, ``? :``.
  Arithmetic is homogeneous as in CEL: ``int+int``, ``uint+uint``,
  ``double+double``, ``string+string``, ``bytes+bytes``, ``list+list``; mixing
  int and double is an error. int/uint overflow, division or modulo by zero
  are errors; int division truncates toward zero.
  Equality is CEL's heterogeneous equality: numbers compare by value across
  int/uint/double (``1 == 1.0``), values of other differing types are unequal
  (``1 == "1"`` is false). Ordering works within numbers (across numeric
  types), strings, bytes and bools; other mixes are errors.
  ``x in list`` (by equality), ``k in map`` (key presence).
* Macros: ``has(e.f)``, ``e.all(x, p)``, ``e.exists(x, p)``,
  ``e.exists_one(x, p)``, ``e.filter(x, p)``, ``e.map(x, t)``,
  ``e.map(x, p, t)`` (over list elements or map keys).
* Functions: ``size()`` (also ``x.size()``), ``s.startsWith(t)``,
  ``s.endsWith(t)``, ``s.contains(t)``, ``s.matches(re)`` / ``matches(s, re)``,
  ``int()``, ``uint()``, ``double()``, ``string()``, ``bool()``, ``bytes()``,
  ``type()`` with the type names ``int uint double bool string bytes list map
  null_type type``, ``dyn()``.
* Not supported: timestamps/durations, protobuf messages and message
  construction, optional syntax (``a.?b``), string extension functions
  (``lowerAscii`` etc.), qualified-name resolution of dotted variables.

Differences from cel-go worth knowing:

* ``matches`` uses Python's ``re`` (searching, i.e. unanchored, like RE2);
  RE2-only syntax is rejected and some Python-only syntax is accepted. Python's
  engine backtracks, so a pathological pattern is slow on hostile input:
  patterns come from subscription config, not from events.
* JSON numbers keep the Python type the JSON decoder gave them: integers are
  CEL ``int``, others ``double``. daprd decodes every JSON number as a double,
  so e.g. ``event.data.n + 1 == 3`` is an error (no match) in Dapr but works
  here; comparisons such as ``event.data.n > 2`` or ``event.data.n == 3``
  behave the same in both.
* ``string(double)`` formats like Go's ``%g`` shortest form (``"1"``,
  ``"1.5"``, ``"1e+06"``).

Limits, for robustness against hostile YAML: expressions longer than
``MAX_EXPRESSION_LENGTH`` (4096) characters, with brackets nested deeper than
``MAX_NESTING`` (32) or a syntax tree taller than ``MAX_DEPTH`` (100) are
rejected at compile time (``&&``/``||`` chains are flattened, so long
alternatives do not count against the depth), and one evaluation may run at most
``MAX_ITERATIONS`` (100 000) comprehension steps (exceeding it is a runtime error, i.e.
no match).

Expressions are compiled to a tree of Python closures; no source code is
generated or passed to eval/exec.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

__all__ = [
    "CelError",
    "CelEvalError",
    "Program",
    "compile",
    "MAX_EXPRESSION_LENGTH",
    "MAX_DEPTH",
    "MAX_NESTING",
    "MAX_ITERATIONS",
]

MAX_EXPRESSION_LENGTH = 4096
MAX_NESTING = 32  # parentheses / brackets / braces / call arguments
MAX_DEPTH = 100  # height of the syntax tree (member chains, operator chains)
MAX_ITERATIONS = 100_000

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 63) - 1
_UINT_MAX = (1 << 64) - 1


class CelError(ValueError):
    """A CEL expression is malformed or uses something outside the supported subset."""

    def __init__(self, message: str, expression: str = "", column: int | None = None) -> None:
        self.message = message
        self.expression = expression
        self.column = column
        text = message if column is None else f"{message} (at column {column})"
        if expression:
            text = f"{text} in CEL expression {expression[:200]!r}"
        super().__init__(text)


class CelEvalError(Exception):
    """A runtime error while evaluating a CEL expression (absorbed by Program.evaluate)."""


class Uint(int):
    """A CEL ``uint`` value (Python ints are CEL ``int``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelType:
    """A CEL type value, as returned by ``type(x)``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_TYPES = {
    name: CelType(name)
    for name in ("int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type")
}

_KIND = {
    bool: "bool",
    int: "int",
    Uint: "uint",
    float: "double",
    str: "string",
    bytes: "bytes",
    list: "list",
    tuple: "list",
    dict: "map",
    type(None): "null_type",
    CelType: "type",
}


def _kind(v: Any) -> str:
    k = _KIND.get(type(v))
    if k is None:
        raise CelEvalError(f"unsupported value type {type(v).__name__}")
    return k


def _overload(op: str, *args: Any) -> CelEvalError:
    kinds = ", ".join(_KIND.get(type(a), type(a).__name__) for a in args)
    return CelEvalError(f"no matching overload for {op} ({kinds})")


# --------------------------------------------------------------------------- lexer

_RESERVED = frozenset(
    "as break const continue else for function if import let loop package namespace return var void while".split()
)
_IDENT_RE = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_NUM_RE = re.compile(
    r"0[xX][0-9a-fA-F]+[uU]?"
    r"|(?P<float>[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"
    r"|[0-9]+[uU]?"
)
_WS_RE = re.compile(r"(?:[ \t\n\f\r]+|//[^\n\r]*)+")
_OPS = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/", "%", "!", "?", ":", ".", ",", "(", ")", "[", "]", "{", "}")
_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
               "\\": "\\", "?": "?", '"': '"', "'": "'", "`": "`"}


class _Tok:
    __slots__ = ("kind", "value", "pos")

    def __init__(self, kind: str, value: Any, pos: int) -> None:
        self.kind = kind  # 'int' 'uint' 'double' 'string' 'bytes' 'ident' 'op' 'eof'
        self.value = value
        self.pos = pos


def _lex(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(src)
    while True:
        m = _WS_RE.match(src, i)
        if m:
            i = m.end()
        if i >= n:
            toks.append(_Tok("eof", None, i))
            return toks
        c = src[i]
        if c == "." and i + 1 < n and src[i + 1].isdigit() and src[i + 1] in "0123456789":
            if toks and toks[-1].kind in ("ident", "int", "uint", "double", "string", "bytes") or (
                toks and toks[-1].kind == "op" and toks[-1].value in (")", "]", "}")
            ):
                toks.append(_Tok("op", ".", i))
                i += 1
                continue
        if c in "0123456789" or c == ".":
            m = _NUM_RE.match(src, i)
            if m:
                text = m.group()
                if m.group("float"):
                    toks.append(_Tok("double", float(text), i))
                else:
                    unsigned = text[-1] in "uU"
                    digits = text[:-1] if unsigned else text
                    val = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits)
                    if unsigned:
                        if val > _UINT_MAX:
                            raise CelError("uint literal out of range", src, i + 1)
                        toks.append(_Tok("uint", Uint(val), i))
                    else:
                        if val > -_INT_MIN:
                            raise CelError("int literal out of range", src, i + 1)
                        toks.append(_Tok("int", val, i))
                i = m.end()
                continue
        if c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z"):
            m = _IDENT_RE.match(src, i)
            assert m is not None
            word = m.group()
            j = m.end()
            if j < n and src[j] in "\"'" and word.lower() in ("r", "b", "br"):
                raw = "r" in word.lower()
                is_bytes = "b" in word.lower()
                val, j2 = _lex_string(src, j, raw, is_bytes)
                toks.append(_Tok("bytes" if is_bytes else "string", val, i))
                i = j2
                continue
            toks.append(_Tok("ident", word, i))
            i = j
            continue
        if c in "\"'":
            val, i2 = _lex_string(src, i, False, False)
            toks.append(_Tok("string", val, i))
            i = i2
            continue
        for op in _OPS:
            if src.startswith(op, i):
                toks.append(_Tok("op", op, i))
                i += len(op)
                break
        else:
            if c == "=":
                raise CelError("unexpected '=' (use '==' for equality)", src, i + 1)
            raise CelError(f"unexpected character {c!r}", src, i + 1)


def _lex_string(src: str, i: int, raw: bool, is_bytes: bool) -> tuple[Any, int]:
    """Scan a quoted literal starting at src[i]; return (value, index after it)."""
    start = i
    q = src[i]
    triple = src.startswith(q * 3, i)
    delim = q * 3 if triple else q
    i += len(delim)
    n = len(src)
    out: list[str] = []  # str chunks; for bytes, chars are code points < 256 or text to utf-8 encode
    byte_vals: list[bytes] = []

    def emit_text(s: str) -> None:
        if is_bytes:
            byte_vals.append(s.encode("utf-8"))
        else:
            out.append(s)

    while True:
        if i >= n:
            raise CelError("unterminated string literal", src, start + 1)
        if src.startswith(delim, i):
            i += len(delim)
            break
        c = src[i]
        if not triple and c in "\r\n":
            raise CelError("newline in string literal", src, i + 1)
        if c != "\\":
            emit_text(c)
            i += 1
            continue
        if raw:
            # raw strings keep the backslash; it still prevents the quote from closing the literal
            if i + 1 < n and src[i + 1] == q:
                emit_text(src[i : i + 2])
                i += 2
            else:
                emit_text(c)
                i += 1
            continue
        if i + 1 >= n:
            raise CelError("unterminated string literal", src, start + 1)
        e = src[i + 1]
        if e in _SIMPLE_ESC:
            emit_text(_SIMPLE_ESC[e])
            i += 2
        elif e in "xX":
            h = src[i + 2 : i + 4]
            if len(h) != 2 or not _is_hex(h):
                raise CelError("invalid \\x escape", src, i + 1)
            if is_bytes:
                byte_vals.append(bytes([int(h, 16)]))
            else:
                out.append(chr(int(h, 16)))
            i += 4
        elif e in "uU":
            width = 4 if e == "u" else 8
            h = src[i + 2 : i + 2 + width]
            if is_bytes:
                raise CelError(f"\\{e} escape not allowed in bytes literal", src, i + 1)
            if len(h) != width or not _is_hex(h):
                raise CelError(f"invalid \\{e} escape", src, i + 1)
            cp = int(h, 16)
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                raise CelError("invalid unicode code point in escape", src, i + 1)
            out.append(chr(cp))
            i += 2 + width
        elif e in "0123":
            o = src[i + 1 : i + 4]
            if len(o) != 3 or any(ch not in "01234567" for ch in o):
                raise CelError("invalid octal escape", src, i + 1)
            if is_bytes:
                byte_vals.append(bytes([int(o, 8)]))
            else:
                out.append(chr(int(o, 8)))
            i += 4
        else:
            raise CelError(f"invalid escape sequence '\\{e}'", src, i + 1)
    if is_bytes:
        return b"".join(byte_vals), i
    return "".join(out), i


def _is_hex(s: str) -> bool:
    return all(ch in "0123456789abcdefABCDEF" for ch in s)


# --------------------------------------------------------------------------- parser / AST


class _Node:
    __slots__ = ("kind", "pos", "a", "b", "c", "depth")

    def __init__(self, kind: str, pos: int, a: Any = None, b: Any = None, c: Any = None, children: tuple = ()) -> None:
        self.kind = kind
        self.pos = pos
        self.a = a
        self.b = b
        self.c = c
        self.depth = 1 + max((ch.depth for ch in children), default=0)

    def __repr__(self) -> str:  # for debugging and tests
        if self.kind == "const":
            return repr(self.a)
        if self.kind == "ident":
            return self.a
        if self.kind == "select":
            return f"{self.a!r}.{self.b}"
        if self.kind == "index":
            return f"{self.a!r}[{self.b!r}]"
        if self.kind in ("and", "or"):
            op = " && " if self.kind == "and" else " || "
            return "(" + op.join(map(repr, self.a)) + ")"
        if self.kind == "binary":
            return f"({self.b!r} {self.a} {self.c!r})"
        if self.kind == "unary":
            return f"{self.a}{self.b!r}"
        if self.kind == "cond":
            return f"({self.a!r} ? {self.b!r} : {self.c!r})"
        if self.kind == "list":
            return "[" + ", ".join(map(repr, self.a)) + "]"
        if self.kind == "map":
            return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in self.a) + "}"
        if self.kind == "call":
            args = ", ".join(map(repr, self.c))
            return f"{self.b!r}.{self.a}({args})" if self.b is not None else f"{self.a}({args})"
        return f"<{self.kind}>"


_REL_OPS = ("==", "!=", "<", "<=", ">", ">=")


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _lex(src)
        self.i = 0
        self.nesting = -1  # the top-level expression is not nested

    # helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        if t.kind != "eof":
            self.i += 1
        return t

    def at_op(self, op: str) -> bool:
        t = self.toks[self.i]
        return t.kind == "op" and t.value == op

    def expect(self, op: str) -> _Tok:
        t = self.peek()
        if t.kind != "op" or t.value != op:
            raise self.error(f"expected '{op}'", t)
        return self.next()

    def error(self, msg: str, tok: _Tok | None = None) -> CelError:
        tok = tok or self.peek()
        if tok.kind == "eof":
            msg = f"{msg}, found end of expression"
        else:
            shown = tok.value if tok.kind in ("op", "ident") else self.src[tok.pos : tok.pos + 20]
            msg = f"{msg}, found {shown!r}"
        return CelError(msg, self.src, tok.pos + 1)

    def node(self, kind: str, pos: int, a: Any = None, b: Any = None, c: Any = None, children: tuple = ()) -> _Node:
        n = _Node(kind, pos, a, b, c, children)
        if n.depth > MAX_DEPTH:
            raise CelError(f"expression nested too deeply (limit {MAX_DEPTH})", self.src, pos + 1)
        return n

    def enter(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise CelError(f"expression nested too deeply (limit {MAX_NESTING})", self.src, self.peek().pos + 1)

    # grammar
    def parse(self) -> _Node:
        e = self.expr()
        if self.peek().kind != "eof":
            raise self.error("unexpected token")
        return e

    def expr(self) -> _Node:
        self.enter()
        c = self.logical("or")
        if self.at_op("?"):
            q = self.next()
            t = self.logical("or")
            self.expect(":")
            f = self.expr()
            c = self.node("cond", q.pos, c, t, f, (c, t, f))
        self.nesting -= 1
        return c

    def logical(self, kind: str) -> _Node:
        op = "||" if kind == "or" else "&&"
        first = self.logical("and") if kind == "or" else self.relation()
        if not self.at_op(op):
            return first
        items = [first]
        pos = self.peek().pos
        while self.at_op(op):
            self.next()
            items.append(self.logical("and") if kind == "or" else self.relation())
        return self.node(kind, pos, items, children=tuple(items))

    def relation(self) -> _Node:
        left = self.addition()
        while True:
            t = self.peek()
            if t.kind == "op" and t.value in _REL_OPS:
                op = t.value
            elif t.kind == "ident" and t.value == "in":
                op = "in"
            else:
                return left
            self.next()
            right = self.addition()
            left = self.node("binary", t.pos, op, left, right, (left, right))

    def addition(self) -> _Node:
        left = self.multiplication()
        while self.peek().kind == "op" and self.peek().value in ("+", "-"):
            t = self.next()
            right = self.multiplication()
            left = self.node("binary", t.pos, t.value, left, right, (left, right))
        return left

    def multiplication(self) -> _Node:
        left = self.unary()
        while self.peek().kind == "op" and self.peek().value in ("*", "/", "%"):
            t = self.next()
            right = self.unary()
            left = self.node("binary", t.pos, t.value, left, right, (left, right))
        return left

    def unary(self) -> _Node:
        t = self.peek()
        if t.kind == "op" and t.value in ("!", "-"):
            ops = []
            while self.peek().kind == "op" and self.peek().value in ("!", "-"):
                ops.append(self.next())
            operand = self.member()
            # fold '-' into a numeric literal operand (so -9223372036854775808 is representable)
            if ops[-1].value == "-" and operand.kind == "const" and operand.c == "literal" and type(operand.a) in (int, float):
                ops.pop()
                operand = self.node("const", operand.pos, -operand.a, None, "folded")
            self._check_int_literal(operand)
            for op in reversed(ops):
                operand = self.node("unary", op.pos, op.value, operand, None, (operand,))
            return operand
        operand = self.member()
        self._check_int_literal(operand)
        return operand

    def _check_int_literal(self, n: _Node) -> None:
        if n.kind == "const" and type(n.a) is int and not (_INT_MIN <= n.a <= _INT_MAX):
            raise CelError("int literal out of range", self.src, n.pos + 1)

    def member(self) -> _Node:
        e = self.primary()
        while True:
            t = self.peek()
            if t.kind != "op":
                return e
            if e.kind == "const" and t.value in (".", "["):
                self._check_int_literal(e)
            if t.value == ".":
                self.next()
                if self.at_op("?"):
                    raise CelError("optional field selection '.?' is not supported", self.src, self.peek().pos + 1)
                name = self.peek()
                if name.kind != "ident":
                    raise self.error("expected field name after '.'")
                self.next()
                if name.value in ("true", "false", "null", "in") or name.value in _RESERVED:
                    raise CelError(f"reserved word {name.value!r} used as field name", self.src, name.pos + 1)
                if self.at_op("("):
                    args = self.args(")")
                    e = self.node("call", name.pos, name.value, e, args, (e, *args))
                else:
                    e = self.node("select", name.pos, e, name.value, None, (e,))
            elif t.value == "[":
                self.next()
                if self.at_op("?"):
                    raise CelError("optional index '[?' is not supported", self.src, self.peek().pos + 1)
                idx = self.expr()
                self.expect("]")
                e = self.node("index", t.pos, e, idx, None, (e, idx))
            elif t.value == "{" and e.kind in ("ident", "select"):
                raise CelError("message construction is not supported", self.src, t.pos + 1)
            else:
                return e

    def args(self, close: str) -> list[_Node]:
        self.expect("(" if close == ")" else "[")
        self.enter()
        items: list[_Node] = []
        if not self.at_op(close):
            while True:
                items.append(self.expr())
                if self.at_op(","):
                    self.next()
                    if close == "]" and self.at_op(close):
                        break
                    continue
                break
        self.expect(close)
        self.nesting -= 1
        return items

    def primary(self) -> _Node:
        t = self.peek()
        k = t.kind
        if k in ("int", "uint", "double", "string", "bytes"):
            self.next()
            return self.node("const", t.pos, t.value, None, "literal")
        if k == "ident":
            word = t.value
            self.next()
            if word == "true":
                return self.node("const", t.pos, True)
            if word == "false":
                return self.node("const", t.pos, False)
            if word == "null":
                return self.node("const", t.pos, None)
            if word == "in" or word in _RESERVED:
                raise CelError(f"reserved word {word!r} cannot be used as an identifier", self.src, t.pos + 1)
            if self.at_op("("):
                args = self.args(")")
                return self.node("call", t.pos, word, None, args, tuple(args))
            return self.node("ident", t.pos, word)
        if k == "op":
            v = t.value
            if v == ".":
                self.next()
                name = self.peek()
                if name.kind != "ident":
                    raise self.error("expected identifier after leading '.'")
                return self.primary()
            if v == "(":
                self.next()
                e = self.expr()
                self.expect(")")
                return e
            if v == "[":
                items = self.args("]")
                return self.node("list", t.pos, items, children=tuple(items))
            if v == "{":
                self.next()
                self.enter()
                pairs: list[tuple[_Node, _Node]] = []
                while not self.at_op("}"):
                    key = self.expr()
                    self.expect(":")
                    if self.at_op("?"):
                        raise CelError("optional map entries are not supported", self.src, self.peek().pos + 1)
                    val = self.expr()
                    pairs.append((key, val))
                    if not self.at_op(","):
                        break
                    self.next()
                self.expect("}")
                self.nesting -= 1
                return self.node("map", t.pos, pairs, children=tuple(x for p in pairs for x in p))
        raise self.error("expected an expression")


# --------------------------------------------------------------------------- runtime helpers

def _eq(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is list or ta is tuple:
            return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))
        if ta is dict:
            return _map_eq(a, b)
        return a == b
    if (ta is int or ta is float or ta is Uint) and (tb is int or tb is float or tb is Uint):
        return a == b
    if (ta is list or ta is tuple) and (tb is list or tb is tuple):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))
    if ta not in _KIND:
        raise CelEvalError(f"unsupported value type {ta.__name__}")
    if tb not in _KIND:
        raise CelEvalError(f"unsupported value type {tb.__name__}")
    return False


def _map_eq(a: dict, b: dict) -> bool:
    if len(a) != len(b):
        return False
    for k, v in a.items():
        found, bv = _map_get(b, k)
        if not found or not _eq(v, bv):
            return False
    return True


def _map_get(m: dict, k: Any) -> tuple[bool, Any]:
    t = type(k)
    if t is str:
        if k in m:
            return True, m[k]
        return False, None
    if t is bool or t is int or t is Uint or t is float:
        for mk, mv in m.items():
            if _KIND.get(type(mk)) in ("bool", "int", "uint", "double") and (type(mk) is bool) == (t is bool) and mk == k:
                return True, mv
        return False, None
    raise CelEvalError(f"unsupported map key type {_KIND.get(t, t.__name__)}")


def _cmp(a: Any, b: Any, op: str) -> int:
    ta, tb = type(a), type(b)
    if (ta is int or ta is float or ta is Uint) and (tb is int or tb is float or tb is Uint):
        if a != a or b != b:  # NaN: unordered
            return 2
        return -1 if a < b else (1 if a > b else 0)
    if ta is tb and (ta is str or ta is bytes or ta is bool):
        return -1 if a < b else (1 if a > b else 0)
    raise _overload(op, a, b)


def _check_int(v: int) -> int:
    if not (_INT_MIN <= v <= _INT_MAX):
        raise CelEvalError("integer overflow")
    return v


def _check_uint(v: int) -> Uint:
    if not (0 <= v <= _UINT_MAX):
        raise CelEvalError("unsigned integer overflow")
    return Uint(v)


def _add(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int:
            return _check_int(a + b)
        if ta is float or ta is str or ta is bytes:
            return a + b
        if ta is Uint:
            return _check_uint(int(a) + int(b))
        if ta is list:
            return a + b
    if (ta is list or ta is tuple) and (tb is list or tb is tuple):
        return list(a) + list(b)
    raise _overload("_+_", a, b)


def _sub(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int:
            return _check_int(a - b)
        if ta is float:
            return a - b
        if ta is Uint:
            return _check_uint(int(a) - int(b))
    raise _overload("_-_", a, b)


def _mul(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int:
            return _check_int(a * b)
        if ta is float:
            return a * b
        if ta is Uint:
            return _check_uint(int(a) * int(b))
    raise _overload("_*_", a, b)


def _div(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int or ta is Uint:
            if b == 0:
                raise CelEvalError("division by zero")
            q = abs(int(a)) // abs(int(b))
            if (a < 0) != (b < 0):
                q = -q
            return _check_int(q) if ta is int else Uint(q)
        if ta is float:
            if b == 0.0:
                if a != a or a == 0.0:
                    return math.nan
                return math.copysign(math.inf, a) * math.copysign(1.0, b)
            return a / b
    raise _overload("_/_", a, b)


def _mod(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb and (ta is int or ta is Uint):
        if b == 0:
            raise CelEvalError("modulus by zero")
        if ta is int and a == _INT_MIN and b == -1:
            raise CelEvalError("integer overflow")
        r = abs(int(a)) % abs(int(b))
        if a < 0:
            r = -r
        return r if ta is int else Uint(r)
    raise _overload("_%_", a, b)


def _in(a: Any, b: Any) -> bool:
    tb = type(b)
    if tb is list or tb is tuple:
        for x in b:
            if _eq(a, x):
                return True
        return False
    if tb is dict:
        return _map_get(b, a)[0]
    raise _overload("@in", a, b)


def _index(o: Any, k: Any) -> Any:
    to = type(o)
    if to is dict:
        found, v = _map_get(o, k)
        if not found:
            raise CelEvalError(f"no such key: {k!r}")
        return v
    if to is list or to is tuple:
        tk = type(k)
        if tk is int or tk is Uint:
            i = k
        elif tk is float and math.isfinite(k) and k == int(k):
            i = int(k)
        else:
            raise _overload("_[_]", o, k)
        if not 0 <= i < len(o):
            raise CelEvalError(f"index out of range: {i}")
        return o[i]
    raise _overload("_[_]", o, k)


def _select(o: Any, name: str) -> Any:
    if type(o) is dict:
        try:
            return o[name]
        except KeyError:
            raise CelEvalError(f"no such key: {name!r}") from None
    raise CelEvalError(f"cannot select field {name!r} from {_KIND.get(type(o), type(o).__name__)}")


def _size(v: Any) -> int:
    t = type(v)
    if t is str or t is bytes or t is list or t is tuple or t is dict:
        return len(v)
    raise _overload("size", v)


def _str_fn(name: str, op: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def fn(s: Any, t: Any) -> bool:
        if type(s) is str and type(t) is str:
            return op(s, t)
        raise _overload(name, s, t)

    return fn


_INT_STR_RE = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT_STR_RE = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\Z", re.I
)
_TRUE_STRS = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_FALSE_STRS = frozenset(("0", "f", "F", "FALSE", "false", "False"))


def _to_int(v: Any) -> int:
    t = type(v)
    if t is int:
        return v
    if t is Uint:
        return _check_int(int(v))
    if t is float:
        if not (-9.223372036854775808e18 <= v < 9.223372036854775808e18):  # also rejects NaN
            raise CelEvalError("double out of int range")
        return int(v)
    if t is str:
        if not _INT_STR_RE.match(v):
            raise CelEvalError(f"cannot convert {v!r} to int")
        return _check_int(int(v))
    raise _overload("int", v)


def _to_uint(v: Any) -> Uint:
    t = type(v)
    if t is Uint:
        return v
    if t is int:
        return _check_uint(v)
    if t is float:
        if not (0.0 <= v < 1.8446744073709552e19):
            raise CelEvalError("double out of uint range")
        return Uint(int(v))
    if t is str:
        if not _INT_STR_RE.match(v) or v.startswith("-"):
            raise CelEvalError(f"cannot convert {v!r} to uint")
        return _check_uint(int(v))
    raise _overload("uint", v)


def _to_double(v: Any) -> float:
    t = type(v)
    if t is float:
        return v
    if t is int or t is Uint:
        return float(v)
    if t is str:
        if not _FLOAT_STR_RE.match(v):
            raise CelEvalError(f"cannot convert {v!r} to double")
        return float(v)
    raise _overload("double", v)


def _format_double(x: float) -> str:
    """Go's strconv.FormatFloat(x, 'g', -1, 64)."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0.0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    from decimal import Decimal  # lazy: only string(double) needs it

    sign, digits, exp = Decimal(repr(x)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    exp = int(exp) + (len(digits) - len(ds))  # value = 0.ds... adjusted: int(ds) * 10**exp
    dp = len(ds) + exp  # position of the decimal point relative to the digit string
    e10 = dp - 1
    s = "-" if sign else ""
    if e10 < -4 or e10 >= 6:  # Go uses precision 6 for this decision in shortest mode
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{s}{mant}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    if dp <= 0:
        return f"{s}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return f"{s}{ds}{'0' * (dp - len(ds))}"
    return f"{s}{ds[:dp]}.{ds[dp:]}"


def _to_string(v: Any) -> str:
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int or t is Uint:
        return str(int(v))
    if t is float:
        return _format_double(v)
    if t is bytes:
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise CelEvalError("invalid UTF-8 in bytes") from None
    raise _overload("string", v)


def _to_bool(v: Any) -> bool:
    if type(v) is bool:
        return v
    if type(v) is str:
        if v in _TRUE_STRS:
            return True
        if v in _FALSE_STRS:
            return False
        raise CelEvalError(f"cannot convert {v!r} to bool")
    raise _overload("bool", v)


def _to_bytes(v: Any) -> bytes:
    if type(v) is bytes:
        return v
    if type(v) is str:
        return v.encode("utf-8", "surrogatepass")
    raise _overload("bytes", v)


def _type_of(v: Any) -> CelType:
    return _TYPES[_kind(v)]


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str) -> re.Pattern[str]:
    r = _REGEX_CACHE.get(pattern)
    if r is None:
        try:
            r = re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as e:
            raise CelEvalError(f"invalid regex: {e}") from None
        if len(_REGEX_CACHE) > 256:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = r
    return r


def _matches(s: Any, pattern: Any) -> bool:
    if type(s) is str and type(pattern) is str:
        return _regex(pattern).search(s) is not None
    raise _overload("matches", s, pattern)


# name -> (callable, allowed arities as (global_arity, receiver_arity)); receiver arity excludes the target
_GLOBAL_FUNCS: dict[str, tuple[Callable[..., Any], int]] = {
    "size": (_size, 1),
    "int": (_to_int, 1),
    "uint": (_to_uint, 1),
    "double": (_to_double, 1),
    "string": (_to_string, 1),
    "bool": (_to_bool, 1),
    "bytes": (_to_bytes, 1),
    "type": (_type_of, 1),
    "dyn": (lambda v: v, 1),
    "matches": (_matches, 2),
}
_RECEIVER_FUNCS: dict[str, tuple[Callable[..., Any], int]] = {
    "size": (_size, 0),
    "startsWith": (_str_fn("startsWith", str.startswith), 1),
    "endsWith": (_str_fn("endsWith", str.endswith), 1),
    "contains": (_str_fn("contains", str.__contains__), 1),
    "matches": (_matches, 1),
}
_MACROS = {"all": (2,), "exists": (2,), "exists_one": (2,), "filter": (2,), "map": (2, 3)}

_ERR = object()  # marker for an error operand inside && / ||


# --------------------------------------------------------------------------- compiler

Fn = Callable[[dict], Any]


class _Compiler:
    def __init__(self, src: str) -> None:
        self.src = src
        self.scopes: list[str] = []  # comprehension variables in scope

    def fail(self, msg: str, node: _Node) -> CelError:
        return CelError(msg, self.src, node.pos + 1)

    def compile(self, n: _Node) -> Fn:
        return getattr(self, "c_" + n.kind)(n)

    # leaves
    def c_const(self, n: _Node) -> Fn:
        v = n.a
        return lambda act: v

    def c_ident(self, n: _Node) -> Fn:
        name = n.a
        if name not in self.scopes and name in _TYPES:
            t = _TYPES[name]
            return lambda act: t

        def ident(act: dict) -> Any:
            try:
                return act[name]
            except KeyError:
                raise CelEvalError(f"undeclared reference to {name!r}") from None

        return ident

    def c_select(self, n: _Node) -> Fn:
        # fast path: a chain of field selections rooted at a variable: event.data.price
        names: list[str] = []
        cur = n
        while cur.kind == "select":
            names.append(cur.b)
            cur = cur.a
        if cur.kind == "ident" and (cur.a in self.scopes or cur.a not in _TYPES):
            root = cur.a
            path = tuple(reversed(names))

            def select_path(act: dict) -> Any:
                try:
                    o = act[root]
                except KeyError:
                    raise CelEvalError(f"undeclared reference to {root!r}") from None
                for name in path:
                    if type(o) is dict:
                        try:
                            o = o[name]
                        except KeyError:
                            raise CelEvalError(f"no such key: {name!r}") from None
                    else:
                        _select(o, name)  # raises
                return o

            return select_path
        operand = self.compile(n.a)
        name = n.b
        return lambda act: _select(operand(act), name)

    def c_index(self, n: _Node) -> Fn:
        o, k = self.compile(n.a), self.compile(n.b)
        return lambda act: _index(o(act), k(act))

    def c_list(self, n: _Node) -> Fn:
        items = [self.compile(x) for x in n.a]
        return lambda act: [f(act) for f in items]

    def c_map(self, n: _Node) -> Fn:
        pairs = [(self.compile(k), self.compile(v)) for k, v in n.a]

        def build(act: dict) -> dict:
            out: dict = {}
            for kf, vf in pairs:
                k = kf(act)
                if _KIND.get(type(k)) not in ("string", "int", "uint", "bool"):
                    raise CelEvalError(f"unsupported map key type {_KIND.get(type(k), type(k).__name__)}")
                if _map_get(out, k)[0]:
                    raise CelEvalError(f"repeated map key {k!r}")
                if k in out:  # Python conflates True/1 and False/0 as dict keys
                    raise CelEvalError("mixing bool and numeric map keys is not supported")
                out[k] = vf(act)
            return out

        return build

    # operators
    def c_unary(self, n: _Node) -> Fn:
        f = self.compile(n.b)
        if n.a == "!":
            def not_(act: dict) -> bool:
                v = f(act)
                if v is True:
                    return False
                if v is False:
                    return True
                raise _overload("!_", v)

            return not_

        def neg(act: dict) -> Any:
            v = f(act)
            t = type(v)
            if t is int:
                return _check_int(-v)
            if t is float:
                return -v
            raise _overload("-_", v)

        return neg

    def c_and(self, n: _Node) -> Fn:
        return self._logical(n, short=False)

    def c_or(self, n: _Node) -> Fn:
        return self._logical(n, short=True)

    def _logical(self, n: _Node, short: bool) -> Fn:
        """n-ary && (short=False) / || (short=True) with CEL's commutative error handling."""
        fs = [self.compile(x) for x in n.a]
        op = "_||_" if short else "_&&_"
        if len(fs) == 2:
            f1, f2 = fs

            def logical2(act: dict) -> bool:
                try:
                    a = f1(act)
                except CelEvalError as e:
                    a = e
                if a is short:
                    return short
                try:
                    b = f2(act)
                except CelEvalError as e:
                    b = e
                if b is short:
                    return short
                if a is not short and a is not (not short):
                    raise a if isinstance(a, CelEvalError) else _overload(op, a)
                if b is not (not short):
                    raise b if isinstance(b, CelEvalError) else _overload(op, b)
                return not short

            return logical2

        def logical(act: dict) -> bool:
            err: CelEvalError | None = None
            for f in fs:
                try:
                    v = f(act)
                except CelEvalError as e:
                    err = err or e
                    continue
                if v is short:
                    return short
                if v is not (not short):
                    err = err or _overload(op, v)
            if err is not None:
                raise err
            return not short

        return logical

    def c_cond(self, n: _Node) -> Fn:
        c, t, f = self.compile(n.a), self.compile(n.b), self.compile(n.c)

        def cond(act: dict) -> Any:
            v = c(act)
            if v is True:
                return t(act)
            if v is False:
                return f(act)
            raise _overload("_?_:_", v)

        return cond

    def c_binary(self, n: _Node) -> Fn:
        op = n.a
        l, r = self.compile(n.b), self.compile(n.c)
        rconst = n.c.kind == "const"
        if op in ("==", "!="):
            want = op == "=="
            if rconst and type(n.c.a) is str:
                c = n.c.a  # Python str equality is exactly CEL's heterogeneous equality here
                if want:
                    return lambda act: l(act) == c
                return lambda act: l(act) != c

            if want:
                return lambda act: _eq(l(act), r(act))
            return lambda act: not _eq(l(act), r(act))
        if op in ("<", "<=", ">", ">="):
            test = {"<": lambda c: c == -1, "<=": lambda c: c in (-1, 0), ">": lambda c: c == 1, ">=": lambda c: c in (0, 1)}[op]
            name = f"_{op}_"
            if rconst and type(n.c.a) in (int, float):
                c = n.c.a
                if op == "<":
                    def cmp_const(act: dict) -> bool:
                        v = l(act)
                        t = type(v)
                        if t is int or t is float or t is Uint:
                            return v < c
                        raise _overload(name, v, c)
                elif op == "<=":
                    def cmp_const(act: dict) -> bool:
                        v = l(act)
                        t = type(v)
                        if t is int or t is float or t is Uint:
                            return v <= c
                        raise _overload(name, v, c)
                elif op == ">":
                    def cmp_const(act: dict) -> bool:
                        v = l(act)
                        t = type(v)
                        if t is int or t is float or t is Uint:
                            return v > c
                        raise _overload(name, v, c)
                else:
                    def cmp_const(act: dict) -> bool:
                        v = l(act)
                        t = type(v)
                        if t is int or t is float or t is Uint:
                            return v >= c
                        raise _overload(name, v, c)
                return cmp_const
            return lambda act: test(_cmp(l(act), r(act), name))
        fn = {"+": _add, "-": _sub, "*": _mul, "/": _div, "%": _mod, "in": _in}[op]
        return lambda act: fn(l(act), r(act))

    # calls and macros
    def c_call(self, n: _Node) -> Fn:
        name, target, args = n.a, n.b, n.c
        if target is None and name == "has":
            if len(args) != 1 or args[0].kind != "select":
                raise self.fail("has() takes a single field selection, e.g. has(event.data.name)", n)
            sel = args[0]
            operand = self.compile(sel.a)
            field = sel.b

            def has(act: dict) -> bool:
                o = operand(act)
                if type(o) is dict:
                    return field in o
                raise CelEvalError(f"has() cannot test field {field!r} of {_KIND.get(type(o), type(o).__name__)}")

            return has
        if target is not None and name in _MACROS:
            if len(args) not in _MACROS[name]:
                raise self.fail(f"{name}() takes {' or '.join(str(a) for a in _MACROS[name])} arguments", n)
            return self._comprehension(n)
        if target is None:
            if name not in _GLOBAL_FUNCS:
                if name in _RECEIVER_FUNCS or name in _MACROS:
                    raise self.fail(f"{name}() must be called as a method, e.g. x.{name}(...)", n)
                raise self.fail(f"unsupported function {name!r}", n)
            fn, arity = _GLOBAL_FUNCS[name]
            if len(args) != arity:
                raise self.fail(f"{name}() takes {arity} argument{'s' if arity != 1 else ''}, got {len(args)}", n)
            argv = [self.compile(a) for a in args]
            if name == "matches":
                self._check_regex_literal(args[1])
            if arity == 1:
                (a1,) = argv
                return lambda act: fn(a1(act))
            a1, a2 = argv
            return lambda act: fn(a1(act), a2(act))
        if name not in _RECEIVER_FUNCS:
            if name in _GLOBAL_FUNCS:
                raise self.fail(f"{name}() is not a method; call it as {name}(x)", n)
            raise self.fail(f"unsupported function {name!r}", n)
        fn, arity = _RECEIVER_FUNCS[name]
        if len(args) != arity:
            raise self.fail(f"{name}() takes {arity} argument{'s' if arity != 1 else ''}, got {len(args)}", n)
        tf = self.compile(target)
        if arity == 0:
            return lambda act: fn(tf(act))
        if name == "matches":
            self._check_regex_literal(args[0])
            if args[0].kind == "const" and type(args[0].a) is str:
                rx = _regex(args[0].a)

                def matches_const(act: dict) -> bool:
                    s = tf(act)
                    if type(s) is str:
                        return rx.search(s) is not None
                    raise _overload("matches", s, rx.pattern)

                return matches_const
        af = self.compile(args[0])
        return lambda act: fn(tf(act), af(act))

    def _check_regex_literal(self, node: _Node) -> None:
        if node.kind == "const" and type(node.a) is str:
            try:
                _regex(node.a)
            except CelEvalError as e:
                raise self.fail(str(e), node) from None

    def _comprehension(self, n: _Node) -> Fn:
        name, target, args = n.a, n.b, n.c
        var = args[0]
        if var.kind != "ident":
            raise self.fail(f"{name}() needs a variable name as its first argument", var)
        vname = var.a
        rng = self.compile(target)
        self.scopes.append(vname)
        try:
            body = [self.compile(a) for a in args[1:]]
        finally:
            self.scopes.pop()

        def items(act: dict) -> tuple[list, dict, list]:
            r = rng(act)
            t = type(r)
            if t is list or t is tuple:
                seq = list(r)
            elif t is dict:
                seq = list(r.keys())
            else:
                raise _overload(name, r)
            sub = dict(act)
            budget = sub.get("#budget")
            if budget is None:
                budget = sub["#budget"] = [MAX_ITERATIONS]
            budget[0] -= len(seq)
            if budget[0] < 0:
                raise CelEvalError(f"comprehension iteration limit ({MAX_ITERATIONS}) exceeded")
            return seq, sub, budget

        pred = body[0]
        if name in ("all", "exists"):
            short = name == "exists"

            def quantifier(act: dict) -> bool:
                seq, sub, _ = items(act)
                err: CelEvalError | None = None
                for x in seq:
                    sub[vname] = x
                    try:
                        v = pred(sub)
                    except CelEvalError as e:
                        err = err or e
                        continue
                    if v is short:
                        return short
                    if v is not (not short):
                        err = err or _overload(name, v)
                if err is not None:
                    raise err
                return not short

            return quantifier
        if name == "exists_one":
            def exists_one(act: dict) -> bool:
                seq, sub, _ = items(act)
                count = 0
                for x in seq:
                    sub[vname] = x
                    v = pred(sub)
                    if v is True:
                        count += 1
                    elif v is not False:
                        raise _overload(name, v)
                return count == 1

            return exists_one
        if name == "filter":
            def filter_(act: dict) -> list:
                seq, sub, _ = items(act)
                out = []
                for x in seq:
                    sub[vname] = x
                    v = pred(sub)
                    if v is True:
                        out.append(x)
                    elif v is not False:
                        raise _overload(name, v)
                return out

            return filter_
        # map
        if len(body) == 1:
            transform = body[0]

            def map_(act: dict) -> list:
                seq, sub, _ = items(act)
                out = []
                for x in seq:
                    sub[vname] = x
                    out.append(transform(sub))
                return out

            return map_
        transform = body[1]

        def map_filter(act: dict) -> list:
            seq, sub, _ = items(act)
            out = []
            for x in seq:
                sub[vname] = x
                v = pred(sub)
                if v is True:
                    out.append(transform(sub))
                elif v is not False:
                    raise _overload(name, v)
            return out

        return map_filter


# --------------------------------------------------------------------------- public API


class Program:
    """A compiled CEL expression. Thread-safe and reusable."""

    __slots__ = ("expression", "_fn")

    def __init__(self, expression: str, fn: Fn) -> None:
        self.expression = expression
        self._fn = fn

    def __repr__(self) -> str:
        return f"Program({self.expression!r})"

    def evaluate(self, activation: dict) -> bool:
        """Return True iff the expression evaluates to the bool ``true``.

        A non-bool result, a CEL runtime error (missing field or key, no
        matching overload, overflow, division by zero, iteration limit) or any
        unexpected internal failure yields False ("the rule does not match");
        this method never raises.
        """
        try:
            return self._fn(activation) is True
        except Exception:  # noqa: BLE001 - a routing rule must never break delivery
            return False

    def evaluate_value(self, activation: dict) -> Any:
        """Evaluate and return the CEL value; raise CelEvalError on a CEL runtime error."""
        try:
            return self._fn(activation)
        except CelEvalError:
            raise
        except RecursionError:
            raise CelEvalError("evaluation too deep") from None


def compile(expression: str) -> Program:  # noqa: A001 - mirrors CEL's compile
    """Parse and compile a CEL expression; raise CelError on any problem."""
    if not isinstance(expression, str):
        raise CelError(f"CEL expression must be a string, not {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CelError(f"CEL expression longer than {MAX_EXPRESSION_LENGTH} characters", expression[:60] + "...")
    if not expression.strip():
        raise CelError("empty CEL expression", expression, 1)
    try:
        ast = _Parser(expression).parse()
        fn = _Compiler(expression).compile(ast)
    except CelError:
        raise
    except RecursionError:
        raise CelError(f"expression nested too deeply (limit {MAX_DEPTH})", expression) from None
    return Program(expression, fn)


def parse(expression: str) -> _Node:
    """Parse only (for tests and diagnostics): return the AST, raise CelError."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CelError(f"CEL expression longer than {MAX_EXPRESSION_LENGTH} characters")
    return _Parser(expression).parse()
