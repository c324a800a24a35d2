"""``bindings.localstorage``: Dapr's create/get/list/delete, and names that try to leave the root."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import uvloop

from pillion.components.bindings import BindingError, UnsupportedOperation
from pillion.components.bindings.localstorage import LocalStorageBinding, go_unquote
from pillion.config.manifests import Component, MetadataItem, Source
from pillion.errors import ConfigError


def component(**metadata: str) -> Component:
    return Component(
        name="files", namespace=None, type="bindings.localstorage", version="v1",
        metadata=tuple(MetadataItem(k, v) for k, v in metadata.items()), scopes=(),
        init_timeout="5s", ignore_errors=False, auth_secret_store=None, source=Source("/res/files.yaml", 2),
    )


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


@pytest.fixture
def binding(root):
    return LocalStorageBinding(component(rootPath=str(root)), None)


def call(binding, op, data=b"", **metadata):
    return run(binding.invoke(op, data, metadata))


def test_rootpath_is_created_and_required(root, tmp_path):
    LocalStorageBinding(component(rootPath=str(root / "a" / "b")), None)
    assert (root / "a" / "b").is_dir()
    with pytest.raises(ConfigError) as info:
        LocalStorageBinding(component(other="x"), None)
    assert info.value.field == "spec.metadata"
    assert "rootPath must not be empty" in info.value.expected
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as info:
        LocalStorageBinding(component(other="x", ROOTPATH=str(tmp_path / "file")), None)
    assert info.value.field == "spec.metadata[1].ROOTPATH"
    assert "represents a file" in info.value.expected
    with pytest.raises(ConfigError, match="error getting stat for path .*/file/sub"):
        LocalStorageBinding(component(rootPath=str(tmp_path / "file" / "sub")), None)
    with pytest.raises(ConfigError, match="disallowed location"):
        LocalStorageBinding(component(rootPath="/proc/self"), None)


def test_create_get_list_delete(binding, root):
    assert binding.operations() == ["create", "get", "list", "delete"]
    resp = call(binding, "create", b'"Hello World"', fileName="dir/my-test-file.txt")
    assert resp.data == b'{"fileName":"dir/my-test-file.txt"}'
    assert (root / "dir" / "my-test-file.txt").read_bytes() == b"Hello World"
    assert call(binding, "get", fileName="dir/my-test-file.txt").data == b"Hello World"
    call(binding, "create", b'{"a":1}', fileName="b.json")
    listed = json.loads(call(binding, "list").data)
    assert listed == [str(root / "b.json"), str(root / "dir" / "my-test-file.txt")]
    assert json.loads(call(binding, "list", fileName="dir").data) == [str(root / "dir" / "my-test-file.txt")]
    resp = call(binding, "delete", fileName="b.json")
    assert resp.data == b"" and resp.metadata == {}
    assert not (root / "b.json").exists()
    call(binding, "delete", fileName="dir/my-test-file.txt")
    assert call(binding, "list").data == b"null"  # Go marshals an empty list as null


def test_create_without_name_uses_a_uuid(binding, root):
    name = json.loads(call(binding, "create", b'"x y"').data)["fileName"]
    assert len(name) == 36 and name.count("-") == 4
    assert (root / name).read_bytes() == b"x y"


def test_create_decodes_base64_like_dapr(binding, root):
    call(binding, "create", b'"aGVsbG8="', fileName="a")
    assert (root / "a").read_bytes() == b"hello"
    call(binding, "create", b"aGVsbG8=", fileName="b")
    assert (root / "b").read_bytes() == b"hello"
    call(binding, "create", b'"abc"', fileName="c")  # not a multiple of 4: kept
    assert (root / "c").read_bytes() == b"abc"
    call(binding, "create", b'"line\\nnext \\u00e9"', fileName="d")
    assert (root / "d").read_bytes() == "line\nnext \u00e9".encode()


def test_go_unquote():
    assert go_unquote(b'"a\\tb\\"c"') == b'a\tb"c'
    assert go_unquote(b'"\\xff\\101"') == b"\xffA"
    assert go_unquote(b"`raw\\n`") == b"raw\\n"
    assert go_unquote(b"'x'") == b"x"
    assert go_unquote(b'"a\\/b"') is None  # JSON's \/ is not a Go escape
    assert go_unquote(b'"\\ud83d"') is None
    assert go_unquote(b'"a"b"') is None
    assert go_unquote(b"{}") is None


def test_get_missing_and_delete_missing(binding, root):
    with pytest.raises(BindingError, match="^file not found: .*/root/nope$"):
        call(binding, "get", fileName="nope")
    with pytest.raises(BindingError, match="error deleting file .*nope: remove .*nope: no such file or directory"):
        call(binding, "delete", fileName="nope")
    with pytest.raises(BindingError, match="error getting stats for path"):
        call(binding, "list", fileName="nope")
    call(binding, "create", b"x", fileName="f")
    with pytest.raises(BindingError, match="not a directory"):
        call(binding, "list", fileName="f")


def test_unsupported_operation(binding):
    with pytest.raises(UnsupportedOperation, match="unsupported operation rename"):
        call(binding, "rename")


@pytest.mark.parametrize("name", ["../escape.txt", "../../../../etc/passwd-copy", "/etc/abs.txt", "a/../../b.txt",
                                  "a/../b.txt"])
def test_names_that_could_leave_the_root_are_refused(binding, root, tmp_path, name):
    for operation, data in (("create", b"data!"), ("get", b""), ("delete", b"")):
        with pytest.raises(BindingError, match="rootPath"):
            call(binding, operation, data, fileName=name)
    assert not (tmp_path / "escape.txt").exists() and list(root.iterdir()) == []


def test_plain_relative_names_work(binding, root):
    resp = call(binding, "create", b"data!", fileName="./c/./d.txt")
    assert json.loads(resp.data) == {"fileName": "c/d.txt"}
    assert call(binding, "get", fileName="c/d.txt").data == b"data!"


def test_symlinks_leading_outside_are_refused(binding, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    os.symlink(outside, root / "abs-link")
    os.symlink("../outside", root / "rel-link")
    for link in ("abs-link", "rel-link"):
        with pytest.raises(BindingError, match="outside rootPath"):
            call(binding, "get", fileName=f"{link}/secret")
        with pytest.raises(BindingError, match="outside rootPath"):
            call(binding, "create", b"mine!", fileName=f"{link}/secret")
    assert (outside / "secret").read_text() == "secret"
    os.symlink("inside-target", root / "inner-link")
    (root / "inside-target").mkdir()
    call(binding, "create", b"ok", fileName="inner-link/f")  # a link that stays inside is fine
    assert (root / "inside-target" / "f").read_bytes() == b"ok"


def test_nul_byte_is_refused(binding):
    with pytest.raises(BindingError, match="invalid argument"):
        call(binding, "create", b"x", fileName="a\x00b")


def test_list_does_not_follow_symlinks(binding, root, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_text("x")
    os.symlink(tmp_path / "elsewhere", root / "link")
    assert json.loads(call(binding, "list").data) == [str(root / "link")]
