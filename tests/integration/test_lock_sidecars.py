"""The lock API through two real sidecars sharing one host's lock store."""

from __future__ import annotations

import json
import time

from _http import json_request

from pillion._testing import Sidecar

LOCK = ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: lockstore}\n"
        "spec:\n  type: lock.lmdb\n  version: v1\n  metadata:\n  - {name: keyPrefix, value: none}\n")


def _lock(sidecar, resource, owner, expiry=10):
    return json_request(sidecar.http_port, "POST", "/v1.0-alpha1/lock/lockstore",
                        json.dumps({"resourceId": resource, "lockOwner": owner, "expiryInSeconds": expiry}))


def _unlock(sidecar, resource, owner):
    return json_request(sidecar.http_port, "POST", "/v1.0-alpha1/unlock/lockstore",
                        json.dumps({"resourceId": resource, "lockOwner": owner}))


def test_two_sidecars_contend_for_one_lock(tmp_path, processes):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "lock.yaml").write_text(LOCK)
    first = Sidecar(tmp_path, "one", "--resources-path", str(resources))
    second = Sidecar(tmp_path, "two", "--resources-path", str(resources))
    processes.extend([first, second])
    assert _lock(first, "door", "alice", 2)[2] == {"success": True}
    assert _lock(second, "door", "bob")[2] == {"success": False}
    assert _unlock(second, "door", "bob")[2] == {"status": 2}  # LOCK_BELONGS_TO_OTHERS
    time.sleep(2.2)
    assert _lock(second, "door", "bob")[2] == {"success": True}  # alice's lock expired
    assert _unlock(first, "door", "alice")[2] == {"status": 2}
    assert _unlock(second, "door", "bob")[2] == {"status": 0}
    assert _unlock(second, "door", "bob")[2] == {"status": 1}  # LOCK_DOES_NOT_EXIST
    status, _, body = json_request(first.http_port, "POST", "/v1.0-alpha1/lock/lockstore",
                                   json.dumps({"resourceId": "door", "lockOwner": "x", "expiryInSeconds": 0}))
    assert (status, body["errorCode"]) == (400, "ERR_MALFORMED_REQUEST")
    status, _, body = json_request(first.http_port, "POST", "/v1.0-alpha1/lock/nope",
                                   json.dumps({"resourceId": "door", "lockOwner": "x", "expiryInSeconds": 5}))
    assert (status, body["errorCode"]) == (400, "ERR_LOCK_STORE_NOT_FOUND")
