"""Password file and ACL: hashing, file editing, rule precedence, filter algebra."""

from __future__ import annotations

import functools
import itertools
import os
import stat

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pillion.broker import auth
from pillion.broker.auth import Acl, PasswordFile, delete_user, hash_password, set_password
from pillion.broker.topics import TopicTrie, validate_filter
from pillion.errors import ConfigError

FAST_SCRYPT = {"n": 16, "r": 1, "p": 1}
FAST_PBKDF2 = {"iterations": 10}


def fast_hash(password: str, scheme: str = "scrypt") -> str:
    return hash_password(password, scheme, **(FAST_SCRYPT if scheme == "scrypt" else FAST_PBKDF2))


# ---- hashing ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["scrypt", "pbkdf2-sha256"])
def test_hash_round_trip(scheme):
    passwords = PasswordFile.parse(f"alice:{fast_hash('s3cret', scheme)}\n")
    assert passwords.check("alice", b"s3cret")
    assert not passwords.check("alice", b"s3cre")
    assert not passwords.check("alice", b"")


def test_default_cost_is_the_documented_format():
    encoded = hash_password("pw")
    scheme, *fields = encoded.split("$")[1:]
    if auth.HAS_SCRYPT:
        assert (scheme, fields[:3]) == ("scrypt", ["16384", "8", "1"])
    else:
        assert (scheme, fields[:1]) == ("pbkdf2-sha256", ["600000"])
    assert PasswordFile.parse(f"u:{encoded}").check("u", b"pw")


def test_salts_differ():
    assert fast_hash("same") != fast_hash("same")


def test_non_ascii_password_is_utf8():
    passwords = PasswordFile.parse(f"u:{fast_hash('pässwörd')}")
    assert passwords.check("u", "pässwörd".encode())


@pytest.mark.parametrize(
    "kwargs",
    [{"scheme": "md5"}, {"n": 1000}, {"n": 1}, {"p": 0}, {"n": 2**20, "r": 8}, {"scheme": "pbkdf2-sha256", "iterations": 0}],
)
def test_hash_password_refuses_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        hash_password("pw", **kwargs)


def test_missing_user_or_password_is_refused():
    passwords = PasswordFile.parse(f"alice:{fast_hash('pw')}")
    assert not passwords.check(None, b"pw")
    assert not passwords.check("alice", None)
    assert not passwords.check("bob", b"pw")


def test_unknown_user_spends_a_derivation_on_the_dummy(monkeypatch):
    passwords = PasswordFile.parse(f"alice:{fast_hash('pw')}\nbob:{fast_hash('pw')}\n")
    verified = []
    real_verify = auth._verify

    def spy(record, password):
        verified.append(record)
        return real_verify(record, password)

    monkeypatch.setattr(auth, "_verify", spy)
    assert not passwords.check("mallory", b"pw")
    assert verified == [passwords._dummy]
    assert passwords._dummy.scheme == "scrypt" or not auth.HAS_SCRYPT
    assert passwords._dummy.params == passwords._users["alice"].params
    assert passwords.check("alice", b"pw")
    assert verified[-1] is passwords._users["alice"]


def test_dummy_for_an_empty_file_uses_the_default_cost():
    dummy = PasswordFile.parse("# nobody yet\n")._dummy
    expected = (auth.SCRYPT_N, auth.SCRYPT_R, auth.SCRYPT_P) if auth.HAS_SCRYPT else (auth.PBKDF2_ITERATIONS,)
    assert dummy.params == expected


# ---- password file parsing ----------------------------------------------------------


def test_comments_and_blank_lines(tmp_path):
    path = tmp_path / "passwd"
    path.write_text(f"# users\n\n  alice:{fast_hash('a')}  \n   # indented comment\nbob:{fast_hash('b', 'pbkdf2-sha256')}\n")
    passwords = PasswordFile.load(str(path))
    assert len(passwords) == 2
    assert passwords.check("alice", b"a") and passwords.check("bob", b"b")


@pytest.mark.parametrize(
    "line, expected",
    [
        ("no-colon-here", "username:<hash>"),
        (":$scrypt$16$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "username:<hash>"),
        ("alice:$md5$abc", "a known scheme"),
        ("alice:plaintext", "username:<hash>"),
        ("alice:$scrypt$16$1$1$AAAAAAAAAAA=", "$scrypt$N$r$p"),
        ("alice:$scrypt$15$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "power of 2"),
        ("alice:$scrypt$x$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "decimal integer"),
        ("alice:$scrypt$16$1$1$!!!$AAAAAAAAAAAAAAAAAAAAAA==", "base64"),
        ("alice:$scrypt$16$1$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA==", "salt of at least"),
        ("alice:$pbkdf2-sha256$10$AAAAAAAAAAA=$AAAA", "a hash of"),
        ("alice:$pbkdf2-sha256$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "$pbkdf2-sha256$<iterations>"),
    ],
)
def test_malformed_line_names_the_line(tmp_path, line, expected):
    if not auth.HAS_SCRYPT and "$scrypt$" in line:
        pytest.skip("no scrypt in this hashlib")
    path = tmp_path / "passwd"
    path.write_text(f"# header\nok:{fast_hash('x', 'pbkdf2-sha256')}\n\n{line}\n")
    with pytest.raises(ConfigError) as info:
        PasswordFile.load(str(path))
    assert info.value.file == str(path)
    assert info.value.field == "line 4"
    assert expected in info.value.expected


def test_duplicate_user_is_an_error():
    entry = f"alice:{fast_hash('x')}"
    with pytest.raises(ConfigError) as info:
        PasswordFile.parse(f"{entry}\n{entry}\n", "pw.txt")
    assert info.value.field == "line 2"
    assert "line 1" in info.value.expected


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        PasswordFile.load(str(tmp_path / "absent"))
    assert info.value.field == "(file)"


# ---- password file editing -------------------------------------------------------------


def test_set_password_creates_the_file_private(tmp_path):
    path = str(tmp_path / "passwd")
    set_password(path, "alice", "pw", **FAST_SCRYPT)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert PasswordFile.load(path).check("alice", b"pw")


def test_rewrite_keeps_comments_order_and_other_users(tmp_path):
    path = tmp_path / "passwd"
    bob = f"bob:{fast_hash('b')}"
    path.write_text(f"# team A\nalice:{fast_hash('old')}\n\n# team B\n{bob}\n")
    set_password(str(path), "alice", "new", **FAST_SCRYPT)
    set_password(str(path), "carol", "c", "pbkdf2-sha256", **FAST_PBKDF2)
    lines = path.read_text().split("\n")
    assert lines[0] == "# team A" and lines[1].startswith("alice:$")
    assert lines[2:5] == ["", "# team B", bob]
    assert lines[5].startswith("carol:$pbkdf2-sha256$10$") and lines[6] == ""
    passwords = PasswordFile.load(str(path))
    assert passwords.check("alice", b"new") and not passwords.check("alice", b"old")
    assert passwords.check("bob", b"b") and passwords.check("carol", b"c")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_delete_user(tmp_path):
    path = tmp_path / "passwd"
    path.write_text(f"# keep me\nalice:{fast_hash('a')}\nbob:{fast_hash('b')}\n")
    assert delete_user(str(path), "alice")
    assert path.read_text().startswith("# keep me\nbob:")
    before = path.stat().st_mtime_ns, path.read_text()
    assert not delete_user(str(path), "alice")
    assert (path.stat().st_mtime_ns, path.read_text()) == before


def test_rewrite_leaves_no_temporary_files(tmp_path):
    path = str(tmp_path / "passwd")
    set_password(path, "alice", "pw", **FAST_SCRYPT)
    delete_user(path, "alice")
    assert os.listdir(tmp_path) == ["passwd"]


@pytest.mark.parametrize("username", ["", "a:b", "a\nb", "a\rb", "#alice", " alice", "alice "])
def test_bad_usernames_are_refused(tmp_path, username):
    path = str(tmp_path / "passwd")
    with pytest.raises(ValueError):
        set_password(path, username, "pw", **FAST_SCRYPT)
    assert not os.path.exists(path)


# ---- ACL parsing ---------------------------------------------------------------------


def acl(text: str) -> Acl:
    return Acl.parse(text, "acl.txt")


@pytest.mark.parametrize(
    "line, expected",
    [
        ("topic read a/#/b", "a valid topic filter"),
        ("topic read a+", "a valid topic filter"),
        ("pattern write", "a topic filter after 'pattern'"),
        ("topic", "a topic filter after 'topic'"),
        ("user", "a username after 'user'"),
        ("allow read x", "user, topic or pattern"),
    ],
)
def test_acl_errors_name_the_line(tmp_path, line, expected):
    path = tmp_path / "acl"
    path.write_text(f"# header\n\ntopic read ok/#\n{line}\n")
    with pytest.raises(ConfigError) as info:
        Acl.load(str(path))
    assert (info.value.file, info.value.field) == (str(path), "line 4")
    assert expected in info.value.expected


def test_missing_acl_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        Acl.load(str(tmp_path / "absent"))


def test_default_is_deny():
    rules = acl("# nothing allowed\n")
    assert not rules.can_publish("c", "alice", "a")
    assert not rules.can_receive("c", None, "a")
    assert not rules.can_subscribe("c", "alice", "#")


def test_access_words():
    rules = acl(
        "user u\n"
        "topic read r/#\n"
        "topic write w/#\n"
        "topic readwrite rw/#\n"
        "topic both/#\n"
    )
    assert rules.can_receive("c", "u", "r/1") and not rules.can_publish("c", "u", "r/1")
    assert rules.can_publish("c", "u", "w/1") and not rules.can_receive("c", "u", "w/1")
    for topic in ("rw/1", "both/1"):
        assert rules.can_publish("c", "u", topic) and rules.can_receive("c", "u", topic)


def test_deny_wins_wherever_it_is():
    rules = acl(
        "user alice\n"
        "topic deny home/secret/#\n"
        "topic readwrite home/#\n"
        "pattern deny home/+/%u-private\n"
    )
    assert rules.can_publish("c", "alice", "home/kitchen")
    assert not rules.can_publish("c", "alice", "home/secret")
    assert not rules.can_receive("c", "alice", "home/secret/key")
    assert not rules.can_receive("c", "alice", "home/x/alice-private")
    assert rules.can_subscribe("c", "alice", "home/#")
    assert not rules.can_subscribe("c", "alice", "home/secret/#")
    assert not rules.can_subscribe("c", "alice", "home/secret/+/x")


def test_anonymous_section_and_user_sections():
    rules = acl(
        "topic read public/#\n"
        "user alice\n"
        "topic readwrite alice/#\n"
        "user bob\n"
        "topic read bob/#\n"
    )
    assert rules.can_receive("c", None, "public/news")
    assert not rules.can_receive("c", "alice", "public/news")
    assert not rules.can_receive("c", "carol", "public/news")
    assert rules.can_publish("c", "alice", "alice/x") and not rules.can_publish("c", None, "alice/x")
    assert rules.can_receive("c", "bob", "bob/x") and not rules.can_publish("c", "bob", "bob/x")
    assert not rules.can_receive("c", "carol", "bob/x")


def test_user_sections_may_repeat_and_names_may_have_spaces():
    rules = acl("user a b\ntopic read x\nuser other\nuser a b\ntopic read y\n")
    assert rules.can_receive("c", "a b", "x") and rules.can_receive("c", "a b", "y")


def test_filter_is_the_rest_of_the_line():
    rules = acl("topic read with space/#\ntopic\twrite   read\n")
    assert rules.can_receive("c", None, "with space/x")
    assert rules.can_publish("c", None, "read")


def test_pattern_expansion():
    rules = acl(
        "pattern readwrite clients/%c/#\n"
        "pattern read users/%u/inbox\n"
        "pattern write %u-%c/out\n"
    )
    assert rules.can_publish("dev1", None, "clients/dev1/state")
    assert not rules.can_publish("dev1", None, "clients/dev2/state")
    assert rules.can_receive("dev1", "alice", "users/alice/inbox")
    assert not rules.can_receive("dev1", "alice", "users/bob/inbox")
    assert rules.can_publish("dev1", "alice", "alice-dev1/out")
    assert rules.can_subscribe("dev1", "alice", "users/+/inbox")
    assert not rules.can_subscribe("dev1", "alice", "users/bob/#")


def test_username_pattern_never_matches_anonymous():
    rules = acl("pattern readwrite users/%u/#\n")
    assert not rules.can_publish("c", None, "users//x")
    assert not rules.can_publish("c", None, "users/None/x")
    assert not rules.can_subscribe("c", None, "#")


@pytest.mark.parametrize("evil", ["+", "#", "a/b", "x/#", ""])
def test_injection_through_client_id_or_username_is_refused(evil):
    rules = acl("pattern readwrite %c/#\npattern readwrite u/%u/#\n")
    assert not rules.can_subscribe(evil, None, "#")
    assert not rules.can_subscribe(evil, None, "$SYS/#")
    assert not rules.can_receive(evil, None, "a/b/c")
    assert not rules.can_receive(evil, None, "$SYS/broker/uptime")
    assert not rules.can_publish("ok", evil, "u/a/b")
    assert not rules.can_subscribe("ok", evil, "u/#")
    assert rules.can_publish("ok", "ok", "ok/1") and rules.can_publish("ok", "ok", "u/ok/1")


def test_client_id_cannot_turn_a_pattern_into_a_dollar_topic():
    rules = acl("pattern readwrite %c/#\npattern readwrite u/%u/#\n")
    assert not rules.can_subscribe("$SYS", None, "$SYS/#")
    assert not rules.can_receive("$SYS", None, "$SYS/broker/uptime")
    assert rules.can_publish("c", "$SYS", "u/$SYS/x")


def test_dollar_topics_need_an_explicit_rule():
    rules = acl("topic read #\ntopic read +/status\nuser admin\ntopic read #\ntopic read $SYS/broker/#\n")
    assert not rules.can_receive("c", None, "$SYS/broker/uptime")
    assert not rules.can_receive("c", None, "$SYS/status")
    assert not rules.can_subscribe("c", None, "$SYS/#")
    assert rules.can_subscribe("c", None, "#")
    assert rules.can_receive("c", "admin", "$SYS/broker/uptime")
    assert rules.can_subscribe("c", "admin", "$SYS/#")
    assert not rules.can_subscribe("c", "admin", "$SYS/other/#")
    assert not rules.can_receive("c", "admin", "$SYS/other")


def test_can_subscribe_handles_shared_and_invalid_filters():
    rules = acl("topic read jobs/#\n")
    assert rules.can_subscribe("c", None, "$share/workers/jobs/+")
    assert not rules.can_subscribe("c", None, "$share/workers/other/+")
    assert not rules.can_subscribe("c", None, "jobs/#/x")
    assert not rules.can_subscribe("c", None, "$share//jobs")


def test_can_subscribe_is_exact_about_deny():
    rules = acl("topic read a/+\ntopic deny a/b\n")
    assert rules.can_subscribe("c", None, "a/+")
    assert not rules.can_subscribe("c", None, "a/b")
    rules = acl("topic read a/#\ntopic deny a/+/#\ntopic deny a\n")
    assert not rules.can_subscribe("c", None, "a/#")
    rules = acl("topic read a/#\ntopic deny a/+/#\n")
    assert rules.can_subscribe("c", None, "a/#")
    rules = acl("topic read /#\ntopic deny +/+/#\n")
    assert not rules.can_subscribe("c", None, "#")  # "/#" would only add the invalid topic ""


def test_expansion_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(auth, "_CACHE_LIMIT", 3)
    rules = acl("pattern read %c\n")
    for index in range(10):
        assert rules.can_receive(f"c{index}", None, f"c{index}")
        assert len(rules._cache) <= 3


# ---- filter algebra against brute force -------------------------------------------------

FILTER_LEVELS = ["a", "b", "", "$x", "+"]
# "z" appears in no filter: it stands for every level a rule does not name.
TOPIC_LEVELS = ["a", "b", "", "$x", "z"]
UNIVERSE = [
    "/".join(levels)
    for length in range(1, 5)
    for levels in itertools.product(TOPIC_LEVELS, repeat=length)
    if "/".join(levels)
]


@st.composite
def filters(draw) -> str:
    levels = draw(st.lists(st.sampled_from(FILTER_LEVELS), min_size=0, max_size=3))
    if draw(st.booleans()) or not levels:
        levels = levels[:2] + ["#"]
    text = "/".join(levels)
    assume(text)
    try:
        validate_filter(text)
    except ValueError:
        assume(False)
    return text


@functools.lru_cache(maxsize=None)
def matched(topic_filter: str) -> frozenset[str]:
    trie = TopicTrie()
    trie.subscribe(topic_filter, "k", None)
    return frozenset(topic for topic in UNIVERSE if trie.match(topic))


def all_filters() -> list[str]:
    """Every valid filter of at most three levels over ``FILTER_LEVELS``."""
    found = set()
    for length in range(1, 4):
        for levels in itertools.product(FILTER_LEVELS + ["#"], repeat=length):
            text = "/".join(levels)
            try:
                validate_filter(text)
            except ValueError:
                continue
            found.add(text)
    return sorted(found)


@settings(max_examples=300, deadline=None)
@given(filters(), st.sampled_from(UNIVERSE))
def test_level_matcher_agrees_with_the_trie(topic_filter, topic):
    trie = TopicTrie()
    trie.subscribe(topic_filter, "k", None)
    assert auth._matches(tuple(topic_filter.split("/")), topic.split("/")) == bool(trie.match(topic))


@settings(max_examples=400, deadline=None)
@given(filters(), filters())
def test_overlap_and_intersection_agree_with_brute_force(a, b):
    both = matched(a) & matched(b)
    assert auth.filters_overlap(a, b) == bool(both)
    common = auth.filters_intersect(a, b)
    if common is not None:
        validate_filter(common)
        assert matched(common) == both


def test_overlap_and_intersection_exhaustively():
    every = all_filters()
    for a, b in itertools.product(every, repeat=2):
        both = matched(a) & matched(b)
        common = auth.filters_intersect(a, b)
        assert auth.filters_overlap(a, b) == bool(both), (a, b)
        assert (common is not None) == bool(both), (a, b)
        if common is not None:
            assert matched(common) == both, (a, b, common)


def test_overlap_examples():
    assert auth.filters_overlap("a/#", "a")
    assert auth.filters_overlap("+/b", "a/+")
    assert not auth.filters_overlap("#", "$SYS/x")
    assert not auth.filters_overlap("+/x", "$SYS/+")
    assert auth.filters_overlap("$SYS/#", "$SYS/+")
    assert auth.filters_overlap("a/+/#", "#")
    assert not auth.filters_overlap("a/+", "a")
    assert not auth.filters_overlap("+", "/#")  # only the empty topic, which is invalid
    assert auth.filters_intersect("+/b/#", "a/#") == "a/b/#"


RULE = st.tuples(st.sampled_from(["read", "write", "readwrite", "deny"]), filters())


@settings(max_examples=300, deadline=None)
@given(st.lists(RULE, max_size=4), filters())
def test_can_subscribe_agrees_with_brute_force(rules, requested):
    table = acl("".join(f"topic {access} {topic_filter}\n" for access, topic_filter in rules))
    readable = [topic for topic in UNIVERSE if table.can_receive("c", None, topic)]
    expected = bool(matched(requested).intersection(readable))
    assert table.can_subscribe("c", None, requested) == expected
    allowed = {t for access, f in rules if access in ("read", "readwrite") for t in matched(f)}
    denied = {t for access, f in rules if access == "deny" for t in matched(f)}
    assert set(readable) == allowed - denied
