"""The fetch protocol's codec (workers/fetch_protocol.py): what it refuses, and the cap on a reply's size."""

from __future__ import annotations

import msgpack
import pytest

from statbus.workers.fetch_protocol import MAX_FETCH_BYTES, FetchProtocolError, decode_fetch, encode_fetch


@pytest.mark.parametrize("bad", [
    b"", msgpack.packb([1, "p", -1, 5]), msgpack.packb([2, "p", 0, 5]), msgpack.packb({}),
    msgpack.packb([1, "p", 0, 0]), msgpack.packb([1, "p", 0, 2**63]), msgpack.packb([1, "", 0, 5]),
    msgpack.packb([1, "p" * 300, 0, 5]), msgpack.packb([1, "p", 0, 5]) + b"\x00" * 5000,
])
def test_bad_fetch_requests_are_refused(bad):
    with pytest.raises(FetchProtocolError):
        decode_fetch(bad)


def test_a_fetch_asking_for_too_much_is_capped():
    # One rule for both ends: any 1 <= max_bytes < 2**63 is valid, and the reply stays bounded.
    assert decode_fetch(encode_fetch("p", 7, 2**63 - 1)) == ("p", 7, MAX_FETCH_BYTES)
    assert decode_fetch(encode_fetch("p", 7, 1)) == ("p", 7, 1)

