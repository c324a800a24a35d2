"""Request helpers the API layer relies on: JSON bodies, metadata query parameters, headers."""

from __future__ import annotations

import pytest

from pillion.errors import DaprError
from pillion.server.http import Request, Response


def _req(body=b"", query="", headers=()):
    return Request("POST", "/v1.0/x", query, list(headers), body, True)


@pytest.mark.parametrize("body", [b"", b"{", b"[1,]", b"\xff\xfe", b'{"a": NaN}', b"nul"])
def test_invalid_json_is_err_malformed_request(body):
    with pytest.raises(DaprError) as err:
        _req(body).json()
    assert (err.value.code, err.value.status) == ("ERR_MALFORMED_REQUEST", 400)
    response = Response.error(err.value)
    assert response.status == 400 and response.body.startswith(b'{"errorCode":"ERR_MALFORMED_REQUEST"')


def test_valid_json():
    assert _req(b'[{"key": "a", "value": 1}]').json() == [{"key": "a", "value": 1}]


def test_metadata_query_parameters_first_value_wins():
    req = _req(query="metadata.ttlInSeconds=5&metadata.ttlInSeconds=9&other=1&metadata.a%2Eb=x%20y")
    assert req.metadata() == {"ttlInSeconds": "5", "a.b": "x y"}


def test_header_lookup_is_case_insensitive_and_first_wins():
    req = _req(headers=[(b"X-One", b"1"), (b"x-one", b"2")])
    assert req.header(b"x-one") == b"1" and req.header(b"missing") is None
