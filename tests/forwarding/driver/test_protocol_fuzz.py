"""Fuzzing the relay's decoder and request handling (hypothesis, > 10,000 cases per CI run):
no crash, no hang, memory bounded by the frame limit."""

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver.decode import clean_metrics, clean_pairs
from spark_tracking.forwarding.driver.relay import Relay

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "seq": json_values,
        "op": st.sampled_from(["points", "resolve", "done", "x"]) | json_values,
        "id": st.text(max_size=10) | json_values,
        "b": st.text(max_size=10) | json_values,
        "w": st.lists(st.integers() | st.none(), min_size=5, max_size=6) | json_values,
        "m": json_values,
        "p": json_values,
        "t": json_values,
        "a": json_values,
        "r": json_values,
    },
)


class Stub:
    def points(self, binding, worker, message):
        m, _ = clean_metrics(message.get("m", []))
        p, _ = clean_pairs(message.get("p", []))
        return "run", None

    def resolve(self, binding, worker):
        return "run"

    def done(self, binding, worker):
        return None


@settings(max_examples=4000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=512))
def test_decode_body_answers_a_dict_or_a_protocol_error(data):
    try:
        assert isinstance(protocol.decode_body(data), dict)
    except protocol.ProtocolError:
        pass


_unstarted_relay = Relay("fuzz", Stub(), "127.0.0.1", 0)


@settings(max_examples=4000, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests)
def test_dispatch_never_raises_and_always_answers(message):
    reply, settled = _unstarted_relay.dispatch(message)
    assert settled is None
    assert ("error" in reply) or ("run" in reply) or (message.get("op") == "done")


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_values)
def test_cleaning_entries_from_the_wire_never_raises(value):
    good, bad = clean_metrics(value)
    assert all(isinstance(k, str) and isinstance(v, float | int) for k, v, _, _ in good)
    clean_pairs(value)


_relay = None


def _shared_relay():
    global _relay
    if _relay is None:
        _relay = Relay("fuzz", Stub(), "127.0.0.1", 0, max_frame_bytes=65536).start()
    return _relay


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_random_bytes_after_authentication_never_stop_the_relay(data):
    relay = _shared_relay()
    host, port = relay.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        nonce = protocol.recv_frame(sock)["nonce"]
        sock.sendall(protocol.encode({"auth": protocol.auth_digest("fuzz", nonce), "v": 1}))
        protocol.recv_frame(sock)
        sock.sendall(data)
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # still serving
        assert "nonce" in protocol.recv_frame(sock)


def teardown_module(module):
    if _relay is not None:
        _relay.stop()


def test_a_value_beyond_float_range_is_one_malformed_entry_not_a_failed_request():
    good, bad = clean_metrics([["k", 10**400, 1, 0], ["k", 1.5, 2, 1]])
    assert good == [("k", 1.5, 2, 1)] and bad == 1


def _row_by_row(rows):
    """The decode check's rule for each row on its own (protocol: metric rows)."""
    good, bad = [], 0
    for row in rows:
        ok = isinstance(row, (list, tuple)) and len(row) == 4
        if ok:
            key, value, ts, step = row
            ok = (
                isinstance(key, str)
                and key != ""
                and type(value) in (int, float)
                and type(ts) is int
                and type(step) is int
                and -(2**63) <= ts < 2**63
                and -(2**63) <= step < 2**63
            )
            if ok and type(value) is int:
                try:
                    value = float(value)
                except OverflowError:
                    ok = False
        if ok:
            good.append((key, value, ts, step))
        else:
            bad += 1
    return good, bad


_int64 = st.integers(-(2**63), 2**63 - 1)
_rows = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["loss", "acc", "system/cpu"]), st.floats(allow_nan=False), _int64, _int64),
        st.tuples(
            st.sampled_from(["loss", "", 1, None]),
            st.one_of(st.floats(allow_nan=False), st.integers(), st.booleans(), st.text(max_size=2)),
            st.one_of(st.integers(), st.floats(), st.booleans()),
            st.one_of(st.integers(), st.floats(), st.none()),
        ),
        st.lists(st.integers(), max_size=5).map(tuple),
    ).flatmap(lambda row: st.sampled_from([row, list(row)])),
    max_size=30,
)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_rows)
def test_the_decode_check_of_whole_frames_is_the_rule_row_by_row(rows):
    assert clean_metrics(rows) == _row_by_row(rows)
