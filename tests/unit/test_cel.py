"""Tests for pillion.runtime.cel, the CEL subset used by pub/sub routing rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillion.runtime import cel
from pillion.runtime.cel import CelError, CelEvalError, Uint


def ev(expr: str, **act):
    return cel.compile(expr).evaluate_value(act)


def err(expr: str, **act) -> None:
    with pytest.raises(CelEvalError):
        cel.compile(expr).evaluate_value(act)


def bad(expr: str) -> CelError:
    with pytest.raises(CelError) as info:
        cel.compile(expr)
    return info.value


EVENT = {
    "specversion": "1.0",
    "id": "5929aaac-a5e2-4ca1-859c-edfe73f11565",
    "source": "orderprocessing",
    "type": "widget",
    "datacontenttype": "application/json",
    "topic": "inventory",
    "pubsubname": "pubsub",
    "data": {"price": 150, "name": "xylophone", "weight": 2.5, "tags": ["a", "b"], "dims": {"w": 3}},
}


# --------------------------------------------------------------------------- parser


@pytest.mark.parametrize(
    "src, tree",
    [
        ("1 + 2 * 3", "(1 + (2 * 3))"),
        ("(1 + 2) * 3", "((1 + 2) * 3)"),
        ("1 - 2 - 3", "((1 - 2) - 3)"),
        ("8 / 4 / 2", "((8 / 4) / 2)"),
        ("a || b && c", "(a || (b && c))"),
        ("a && b || c && d", "((a && b) || (c && d))"),
        ("a || b || c", "(a || b || c)"),
        ("a < b == c", "((a < b) == c)"),
        ("1 + 2 < 3 * 4", "((1 + 2) < (3 * 4))"),
        ("x in [1, 2] && y", "((x in [1, 2]) && y)"),
        ("a ? b : c ? d : e", "(a ? b : (c ? d : e))"),
        ("a || b ? c : d", "((a || b) ? c : d)"),
        ("!a && b", "(!a && b)"),
        ("-a.b", "-a.b"),
        ("a.b[0].c", "a.b[0].c"),
        ("a.f(1, 2)", "a.f(1, 2)"),
        ("-5", "-5"),
        ("--5", "-(-5)".replace("(", "").replace(")", "")),
    ],
)
def test_precedence_and_associativity(src: str, tree: str) -> None:
    assert repr(cel.parse(src)) == tree


@pytest.mark.parametrize(
    "src, column, fragment",
    [
        ("event.type ==", 14, "expected an expression"),
        ("event.type = 'x'", 12, "'=='"),
        ("(event.type", 12, "expected ')'"),
        ("event.type == 'widget' &&", 26, "expected an expression"),
        ("event.", 7, "field name"),
        ("event.type == \"abc", 15, "unterminated"),
        ("'a\nb'", 3, "newline"),
        ("'\\q'", 2, "invalid escape"),
        ("'\\x4'", 2, "\\x"),
        ("'\\ud800'", 2, "code point"),
        ("b'\\u0041'", 3, "bytes"),
        ("event.type == #", 15, "unexpected character"),
        ("1 2", 3, "unexpected token"),
        ("[1, 2", 6, "expected ']'"),
        ("{'a' 1}", 6, "expected ':'"),
        ("9223372036854775808", 1, "out of range"),
        ("18446744073709551616u", 1, "out of range"),
        ("event.?type", 7, "optional"),
        ("foo(1)", 1, "unsupported function 'foo'"),
        ("event.type.lowerAscii()", 12, "unsupported function"),
        ("timestamp(event.time) > 1", 1, "unsupported function 'timestamp'"),
        ("size(1, 2)", 1, "takes 1 argument"),
        ("'a'.startsWith()", 5, "takes 1 argument"),
        ("startsWith('a', 'b')", 1, "method"),
        ("event.size(1)", 7, "takes 0 arguments"),
        ("has(event)", 1, "field selection"),
        ("[1].exists(1, true)", 12, "variable name"),
        ("[1].map(x)", 5, "arguments"),
        ("event.type.matches('(')", 20, "invalid regex"),
        ("matches(event.type, '[')", 21, "invalid regex"),
        ("Msg{a: 1}", 4, "message construction"),
        ("var", 1, "reserved"),
        ("event.if", 7, "reserved"),
    ],
)
def test_syntax_errors_have_columns(src: str, column: int, fragment: str) -> None:
    e = bad(src)
    assert e.column == column, str(e)
    assert fragment in str(e)
    assert f"column {column}" in str(e)
    assert isinstance(e, ValueError)
    assert e.expression == src


def test_empty_and_non_string_rejected() -> None:
    assert "empty" in str(bad(""))
    assert "expected an expression" in str(bad("   // just a comment"))
    with pytest.raises(CelError):
        cel.compile(None)  # type: ignore[arg-type]


def test_length_limit() -> None:
    cel.compile("'" + "a" * (cel.MAX_EXPRESSION_LENGTH - 2) + "'")
    e = bad("'" + "a" * (cel.MAX_EXPRESSION_LENGTH - 1) + "'")
    assert "longer than" in str(e)


def test_nesting_limits() -> None:
    ok = "(" * cel.MAX_NESTING + "1" + ")" * cel.MAX_NESTING
    assert cel.compile(ok).evaluate_value({}) == 1
    assert "nested too deeply" in str(bad("(" * (cel.MAX_NESTING + 1) + "1" + ")" * (cel.MAX_NESTING + 1)))
    assert "nested too deeply" in str(bad("[" * 1000 + "]" * 1000))
    assert "nested too deeply" in str(bad("!" * 500 + "true"))
    assert "nested too deeply" in str(bad("+".join(["1"] * 500)))
    assert "nested too deeply" in str(bad("event" + ".a" * 500))
    # long alternatives are flattened and stay cheap
    alts = " || ".join(f"e.type == 't{i}'" for i in range(150))
    assert cel.compile(alts + " || e.type == 'widget'").evaluate({"e": EVENT})


def test_comments_and_whitespace() -> None:
    assert ev("1 + // one\n 2\t\r\n") == 3


# --------------------------------------------------------------------------- literals


@pytest.mark.parametrize(
    "src, value",
    [
        ("0", 0),
        ("-7", -7),
        ("0x1F", 31),
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775807", 2**63 - 1),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"a\\"b"', 'a"b'),
        ("'a\\'b'", "a'b"),
        ('"\\n\\t\\\\\\?\\`\\a\\b\\f\\r\\v"', "\n\t\\?`\a\b\f\r\v"),
        ('"\\x41\\101\\u00e9\\U0001F600"', "AAé\U0001f600"),
        ('"""a"b\nc"""', 'a"b\nc'),
        ("'''it's'''", "it's"),
        ('r"\\d+\\n"', "\\d+\\n"),
        ("R'\\''", "\\'"),
        ('"héllo"', "héllo"),
        ("b'ab\\x00\\377'", b"ab\x00\xff"),
        ("b'é'", "é".encode()),
        ("br'\\x'", b"\\x"),
        ("[1, 'a', [true]]", [1, "a", [True]]),
        ("[1, 2,]", [1, 2]),
        ("[]", []),
        ("{'a': 1, 2: 'b', true: null}", {"a": 1, 2: "b", True: None}),
        ("{}", {}),
    ],
)
def test_literals(src: str, value) -> None:
    got = ev(src)
    assert got == value and type(got) is type(value)


def test_uint_literals() -> None:
    v = ev("1u")
    assert type(v) is Uint and v == 1
    assert ev("0xFFu") == 255
    assert ev("18446744073709551615u") == 2**64 - 1


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    "src, value",
    [
        ("1 + 2 * 3 - 4", 3),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7 / -2", -3),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("7u / 2u", Uint(3)),
        ("7u % 4u", Uint(3)),
        ("1.5 * 2.0", 3.0),
        ("1.0 / 0.0", math.inf),
        ("-1.0 / 0.0", -math.inf),
        ("'ab' + 'cd'", "abcd"),
        ("b'a' + b'b'", b"ab"),
        ("[1] + [2, 3]", [1, 2, 3]),
        ("-(3)", -3),
        ("-(1.5)", -1.5),
        ("!true", False),
        ("!!true", True),
        ("1 == 1", True),
        ("1 == 1.0", True),
        ("1u == 1", True),
        ("1u == 1.0", True),
        ("1 != 1.0", False),
        ("1 == '1'", False),
        ("'1' != 1", True),
        ("true == 1", False),
        ("null == null", True),
        ("null == 0", False),
        ("[1, 2] == [1, 2.0]", True),
        ("[1, 2] == [1]", False),
        ("{'a': 1} == {'a': 1.0}", True),
        ("{'a': 1} == {'b': 1}", False),
        ("b'a' == 'a'", False),
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2.5", True),
        ("1u < 2", True),
        ("-1 < 1u", True),
        ("2.0 >= 3", False),
        ("'a' < 'b'", True),
        ("'B' < 'a'", True),
        ("b'a' < b'b'", True),
        ("false < true", True),
        ("2 in [1, 2, 3]", True),
        ("2.0 in [1, 2, 3]", True),
        ("'2' in [1, 2, 3]", False),
        ("'a' in {'a': 1}", True),
        ("'b' in {'a': 1}", False),
        ("1 in {1: 'x'}", True),
        ("true in {1: 'x'}", False),
        ("true ? 'y' : 'n'", "y"),
        ("false ? 'y' : 'n'", "n"),
        ("[10, 20][1]", 20),
        ("[10, 20][1u]", 20),
        ("{'a': {'b': 5}}['a'].b", 5),
    ],
)
def test_operators(src: str, value) -> None:
    got = ev(src)
    assert got == value and type(got) is type(value)


def test_nan_compares_false() -> None:
    nan = {"n": math.nan}
    assert ev("n == n", **nan) is False
    assert ev("n != n", **nan) is True
    assert ev("n < 1.0 || n >= 1.0", **nan) is False


@pytest.mark.parametrize(
    "src",
    [
        "1 + 1.0",  # no implicit numeric conversion in arithmetic
        "1 + 1u",
        "'a' + 1",
        "1 / 0",
        "1 % 0",
        "1u / 0u",
        "1.5 % 1.0",
        "9223372036854775807 + 1",
        "-9223372036854775808 - 1",
        "9223372036854775807 * 2",
        "-(-9223372036854775807 - 1)",
        "-9223372036854775808 / -1",
        "-9223372036854775808 % -1",
        "0u - 1u",
        "18446744073709551615u + 1u",
        "-(1u)",
        "!1",
        "1 < 'a'",
        "[1] < [2]",
        "null < 1",
        "1 ? 2 : 3",
        "1 in 1",
        "[1][1]",
        "[1][-1]",
        "[1]['a']",
        "{'a': 1}['b']",
        "{'a': 1}.b",
        "'abc'[0]",
        "(1).a",
        "{1: 1, 1: 2}",
        "{1.5: 1}",
        "{[1]: 1}",
        "{1: 'a', true: 'b'}",
        "missing",
        "missing.field",
    ],
)
def test_runtime_errors(src: str) -> None:
    err(src)
    assert cel.compile(src).evaluate({}) is False


# --------------------------------------------------------------------------- logic and error absorption


@pytest.mark.parametrize(
    "src, value",
    [
        ("true && true", True),
        ("true && false", False),
        ("false || true", True),
        ("false || false", False),
        ("false && (1 / 0 == 1)", False),
        ("(1 / 0 == 1) && false", False),  # commutative: error absorbed by a false operand
        ("(1 / 0 == 1) || true", True),
        ("true || (1 / 0 == 1)", True),
        ("missing.x || true", True),
        ("event.nope == 1 || event.type == 'widget'", True),
        ("1 || true", True),  # non-bool operand absorbed like an error
        ("1 && false", False),
        ("true && true && true && false", False),
        ("missing || missing || true", True),
    ],
)
def test_logic_absorbs_errors(src: str, value: bool) -> None:
    assert ev(src, event=EVENT) is value


@pytest.mark.parametrize(
    "src",
    [
        "(1 / 0 == 1) && true",
        "true && (1 / 0 == 1)",
        "(1 / 0 == 1) || false",
        "false || missing",
        "true && 1",
        "missing || missing || false",
        "missing && missing && true",
    ],
)
def test_logic_propagates_errors(src: str) -> None:
    err(src)


def test_ternary_is_lazy() -> None:
    assert ev("true ? 1 : 1 / 0") == 1
    assert ev("false ? 1 / 0 : 2") == 2


# --------------------------------------------------------------------------- functions and macros


@pytest.mark.parametrize(
    "src, value",
    [
        ("size('héllo')", 5),
        ("'héllo'.size()", 5),
        ("size(b'ab')", 2),
        ("size([1, 2, 3])", 3),
        ("size({'a': 1})", 1),
        ("'xylophone'.startsWith('xy')", True),
        ("'xylophone'.endsWith('phone')", True),
        ("'xylophone'.contains('lop')", True),
        ("'xylophone'.contains('zz')", False),
        ("'abc123'.matches('[0-9]+')", True),  # unanchored, like RE2's partial match
        ("'abc'.matches('^b')", False),
        ("matches('abc', 'b.')", True),
        ("'a'.matches(r'\\w')", True),
        ("int('42')", 42),
        ("int('-42')", -42),
        ("int(3.9)", 3),
        ("int(-3.9)", -3),
        ("int(5u)", 5),
        ("uint(5)", Uint(5)),
        ("uint('7')", Uint(7)),
        ("double(2)", 2.0),
        ("double('2.5')", 2.5),
        ("double('1e3')", 1000.0),
        ("string(12)", "12"),
        ("string(12u)", "12"),
        ("string(1.5)", "1.5"),
        ("string(2.0)", "2"),
        ("string(1e6)", "1e+06"),
        ("string(123456.0)", "123456"),
        ("string(0.0001)", "0.0001"),
        ("string(0.00001)", "1e-05"),
        ("string(true)", "true"),
        ("string(b'hi')", "hi"),
        ("bool('true')", True),
        ("bool('f')", False),
        ("bytes('é')", "é".encode()),
        ("dyn(1) == 1", True),
        ("type(1) == int", True),
        ("type(1u) == uint", True),
        ("type(1.0) == double", True),
        ("type('a') == string", True),
        ("type(b'a') == bytes", True),
        ("type(true) == bool", True),
        ("type(null) == null_type", True),
        ("type([]) == list", True),
        ("type({}) == map", True),
        ("type(int) == type", True),
        ("type(1) == double", False),
        ("has({'a': 1}.a)", True),
        ("has({'a': 1}.b)", False),
        ("[1, 2, 3].all(x, x > 0)", True),
        ("[1, 2, 3].all(x, x > 1)", False),
        ("[1, 2, 3].exists(x, x > 2)", True),
        ("[].exists(x, true)", False),
        ("[].all(x, false)", True),
        ("[1, 2, 3].exists_one(x, x > 2)", True),
        ("[1, 2, 3].exists_one(x, x > 1)", False),
        ("[1, 2, 3].filter(x, x % 2 == 1)", [1, 3]),
        ("[1, 2, 3].map(x, x * 10)", [10, 20, 30]),
        ("[1, 2, 3].map(x, x > 1, x * 10)", [20, 30]),
        ("{'a': 1, 'b': 2}.exists(k, k == 'b')", True),
        ("{'a': 1, 'b': 2}.all(k, k in ['a', 'b'])", True),
        ("[[1, 2], [3]].exists(l, l.exists(x, x == 3))", True),
        ("[1, 2].exists(x, [3].exists(y, x + y == 5))", True),
        ("[0, 1].exists(x, 1 / x == 1)", True),  # error for x=0 absorbed by a true element
        ("[0, 1].all(x, 1 / x == 5)", False),  # ... and by a false one
    ],
)
def test_functions_and_macros(src: str, value) -> None:
    got = ev(src)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "src",
    [
        "size(1)",
        "1.startsWith('a')".replace("1.", "(1)."),
        "'a'.startsWith(1)",
        "'a'.matches(1)",
        "int('1.5')",
        "int('x')",
        "int(1e19)",
        "int(0.0 / 0.0)",
        "int(9223372036854775807u + 1u)",
        "uint(-1)",
        "uint('-1')",
        "uint(-1.0)",
        "double('x')",
        "double('1_000')",
        "string(null)",
        "string(b'\\xff')",
        "bool('yes')",
        "bool(1)",
        "bytes(1)",
        "has((1).a)",
        "1.all(x, true)".replace("1.", "(1)."),
        "[1].all(x, x)",
        "[0].all(x, 1 / x == 1)",
        "[0].exists(x, 1 / x == 1)",
        "[1, 2].exists_one(x, 1)",
        "[1].filter(x, 1)",
        "[1].map(x, x, x)",
        "'a'.matches(event)",
        "[1].map(x, missing)",
    ],
)
def test_function_runtime_errors(src: str) -> None:
    err(src, event=EVENT)


def test_comprehension_variable_shadows_and_scopes() -> None:
    assert ev("[1, 2].exists(event, event == 2)", event=EVENT) is True
    assert ev("[1].all(x, x == 1) && event.type == 'widget'", event=EVENT) is True
    err("[1].all(x, true) && x == 1")  # x is not visible outside the macro


def test_iteration_budget() -> None:
    big = list(range(1000))
    prog = cel.compile("l.all(x, l.all(y, l.exists(z, z < 0) || true))")
    assert prog.evaluate({"l": big}) is False  # 1e9 steps refused, not run
    with pytest.raises(CelEvalError, match="iteration limit"):
        prog.evaluate_value({"l": big})
    assert cel.compile("l.all(x, x >= 0)").evaluate({"l": big}) is True


def test_dynamic_regex_is_checked_at_runtime() -> None:
    assert ev("'abc'.matches(p)", p="b+") is True
    err("'abc'.matches(p)", p="(")


# --------------------------------------------------------------------------- Dapr examples


@pytest.mark.parametrize(
    "src, value",
    [
        ('event.type == "widget"', True),
        ('event.type == "gadget"', False),
        ("event.data.price > 100", True),
        ("event.data.price < 100", False),
        ('event.type == "widget" && event.data.price > 100', True),
        ('event.type == "gadget" && event.data.name.startsWith("x")', False),
        ('event.type == "widget" && event.data.name.startsWith("x")', True),
        ("event.data.priorityTier == 'express'", False),  # missing field -> no match
        ("event.data.destinationCountry != 'US'", False),  # missing field -> no match, not "true"
        ("has(event.data.destinationCountry) && event.data.destinationCountry != 'US'", False),
        ("!has(event.data.destinationCountry)", True),
        ("event.data.weight >= 2.5 && event.data.weight < 3", True),
        ("event.data.price == 150.0", True),
        ("'b' in event.data.tags", True),
        ("event.data.tags.exists(t, t == 'a')", True),
        ("event.data.dims.w == 3", True),
        ("event.data['dims']['w'] == 3", True),
        ("event.source.matches('^order')", True),
        ("event.topic == 'inventory' && event.pubsubname == 'pubsub'", True),
        ("size(event.data.tags) == 2", True),
        ("event.data", False),  # non-bool result -> no match
        ("event.data.name", False),
        ("event.data.price", False),
    ],
)
def test_dapr_routing_examples(src: str, value: bool) -> None:
    assert cel.compile(src).evaluate({"event": EVENT}) is value


def test_missing_fields_never_raise() -> None:
    prog = cel.compile('event.type == "widget" && event.data.price > 100')
    assert prog.evaluate({"event": {"type": "widget"}}) is False
    assert prog.evaluate({"event": {"type": "widget", "data": "not json"}}) is False
    assert prog.evaluate({"event": {"type": "widget", "data": {"price": "200"}}}) is False
    assert prog.evaluate({"event": {"type": "widget", "data": None}}) is False
    assert prog.evaluate({"event": None}) is False
    assert prog.evaluate({}) is False
    assert prog.evaluate({"event": {"type": "widget", "data": {"price": 101}}}) is True
    assert prog.evaluate({"event": {"type": "widget", "data": {"price": 100.5}}}) is True


def test_json_shapes() -> None:
    # JSON decoders produce ints and floats; bools are not numbers in CEL.
    act = {"event": {"data": {"n": 3, "f": 3.0, "b": True, "l": [1, 2], "t": (1, 2)}}}
    assert cel.compile("event.data.n + 1 == 4").evaluate(act)
    assert cel.compile("event.data.f + 1.0 == 4").evaluate(act)
    assert not cel.compile("event.data.f + 1 == 4").evaluate(act)  # double + int: no overload
    assert not cel.compile("event.data.b == 1").evaluate(act)
    assert not cel.compile("event.data.b > 0").evaluate(act)
    assert cel.compile("event.data.b == true").evaluate(act)
    assert cel.compile("event.data.l == event.data.t").evaluate(act)
    assert cel.compile("event.data.t[1] == 2").evaluate(act)
    assert not cel.compile("event.data.x == 1").evaluate(act)


def test_unsupported_activation_values_do_not_raise() -> None:
    prog = cel.compile("event.data == 1 || event.data > 1 || size(event.data) == 1")
    assert prog.evaluate({"event": {"data": object()}}) is False


def test_program_is_reusable_and_repr() -> None:
    prog = cel.compile("event.type == 'widget'")
    assert "widget" in repr(prog)
    assert prog.expression == "event.type == 'widget'"
    for _ in range(3):
        assert prog.evaluate({"event": EVENT})
        assert not prog.evaluate({"event": {"type": "gadget"}})


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=400, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("event.datyp()[]{}'\"\\!-+*/%<>=&|?:,01234.5u xr b\nin_")), max_size=60))
def test_fuzz_compile_only_raises_celerror(src: str) -> None:
    try:
        prog = cel.compile(src)
    except CelError:
        return
    assert isinstance(prog.evaluate({"event": EVENT}), bool)


@settings(max_examples=200, deadline=500)
@given(st.text(max_size=80))
def test_fuzz_compile_arbitrary_unicode(src: str) -> None:
    try:
        cel.compile(src)
    except CelError:
        pass


_ATOMS = st.sampled_from(
    [
        "0", "1", "-1", "2u", "1.5", "0.0", "'a'", "'xy'", "b'z'", "true", "false", "null",
        "[]", "[1, 'a']", "{'k': 1}", "event", "event.type", "event.data", "event.data.price",
        "event.data.tags", "event.nope", "x", "9223372036854775807",
    ]
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binops = st.sampled_from(["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "in", "&&", "||"])
    return st.one_of(
        st.builds(lambda a, op, b: f"({a} {op} {b})", children, binops, children),
        st.builds(lambda op, a: f"{op}({a})", st.sampled_from(["!", "-"]), children),
        st.builds(lambda c, a, b: f"({c} ? {a} : {b})", children, children, children),
        st.builds(lambda a, b: f"{a}[{b}]", children, children),
        st.builds(lambda a: f"({a}).price", children),
        st.builds(lambda a: f"has(({a}).price)", children),
        st.builds(lambda f, a: f"{f}({a})", st.sampled_from(["size", "int", "uint", "double", "string", "type", "bool"]), children),
        st.builds(lambda a, m, b: f"({a}).{m}({b})", children, st.sampled_from(["startsWith", "endsWith", "contains", "matches"]), children),
        st.builds(lambda a, m, b: f"({a}).{m}(x, {b})", children, st.sampled_from(["all", "exists", "exists_one", "filter", "map"]), children),
        st.builds(lambda a, b: f"[{a}, {b}]", children, children),
        st.builds(lambda a, b: f"{{{a}: {b}}}", children, children),
    )


_EXPRS = st.recursive(_ATOMS, _combine, max_leaves=12)


@settings(max_examples=500, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(_EXPRS)
def test_fuzz_generated_expressions_evaluate_cleanly(src: str) -> None:
    try:
        prog = cel.compile(src)
    except CelError:
        return  # e.g. a dynamic-looking regex literal that is invalid
    try:
        prog.evaluate_value({"event": EVENT})
    except CelEvalError:
        pass
    assert isinstance(prog.evaluate({"event": EVENT}), bool)


# --------------------------------------------------------------------------- speed (sanity bound, not a benchmark)


def test_evaluation_is_fast() -> None:
    import time

    prog = cel.compile('event.type == "widget" && event.data.price > 100')
    act = {"event": EVENT}
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        prog.evaluate(act)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 50e-6  # ~1 µs on a desktop; generous for slow CI / boards
