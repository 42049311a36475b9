"""The official Python server SDK (`stream-chat` 4.33.0) against presence-server, as a backend uses it.

Each test module run starts one real server (the binary named by PRESENCE_SERVER_BIN) on a free port with an
in-memory database; users connect with the `websockets` package, the way a browser would, so the presence fields
the SDK reads are live. Run by scripts/test-python.sh, which makes the private virtualenv.
"""

import http.server
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
import uuid

import pytest
from stream_chat import StreamChat
from stream_chat.base.exceptions import StreamAPIException
from websockets.sync.client import connect as ws_connect

API_KEY = "python-sdk-key"
API_SECRET = "python-sdk-secret-0123456789abcdefgh"
# websockets' sync connect() warns when not used as a context manager; a test's connection is closed by the test.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")
OWN_ONLY_FIELDS = ("devices", "mutes", "channel_mutes", "unread_count", "total_unread_count", "unread_channels",
                   "invisible", "privacy_settings")


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("PRESENCE_SERVER_BIN", "target/debug/presence-server")
    proc = subprocess.Popen(
        [binary, "--addr", "127.0.0.1:0", "--admin-addr", "off", "--db", ":memory:", "--api-key", API_KEY,
         "--api-secret", API_SECRET, "--offline-grace-ms", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PRESENCE_")},
    )
    url = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.match(r"listening on (http://\S+)", line)
        if match:
            url = match.group(1)
            break
        if not line and proc.poll() is not None:
            break
    assert url, "presence-server did not report its address"
    # Keep draining stdout so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def client(server):
    return StreamChat(api_key=API_KEY, api_secret=API_SECRET, base_url=server, timeout=10.0)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Connection:
    """A user's realtime connection, opened as the browser SDK opens it, with a token the Python SDK minted."""

    def __init__(self, server, client, user_id, details=None):
        payload = {"user_id": user_id, "user_details": {"id": user_id, **(details or {})},
                   "server_determines_connection_id": True}
        query = urllib.parse.urlencode({
            "json": json.dumps(payload), "api_key": API_KEY, "authorization": client.create_token(user_id),
            "stream-auth-type": "jwt",
        })
        self.ws = ws_connect(f"{server.replace('http://', 'ws://')}/connect?{query}", open_timeout=10)
        first = json.loads(self.ws.recv(timeout=10))
        assert first["type"] == "health.check", first
        self.connection_id = first["connection_id"]
        self.me = first["me"]

    def close(self):
        self.ws.close()


def wait_for(predicate, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def queried(client, user_id):
    users = client.query_users({"id": {"$eq": user_id}}, presence=True)["users"]
    assert len(users) == 1, users
    return users[0]


def test_tokens_open_connections_and_presence_reads_online(server, client):
    uid = unique("tok")
    client.upsert_user({"id": uid, "name": "Token User"})
    conn = Connection(server, client, uid)
    assert conn.me["id"] == uid and conn.me["online"] is True
    assert queried(client, uid)["online"] is True
    conn.close()
    wait_for(lambda: queried(client, uid)["online"] is False, "offline after the close")


def test_upsert_and_partial_update(client):
    uid = unique("user")
    created = client.upsert_users([{"id": uid, "name": "Ann", "status": "Eating a veggie burger...", "team": "red"}])
    assert created["users"][uid]["name"] == "Ann"
    assert created["users"][uid]["status"] == "Eating a veggie burger..."
    updated = client.update_user_partial({"id": uid, "set": {"status": "Away"}, "unset": ["team"]})
    user = updated["users"][uid]
    assert user["status"] == "Away" and "team" not in user
    assert queried(client, uid)["status"] == "Away"


def test_invisible_user_reads_offline_on_every_answer(server, client):
    uid = unique("ghost")
    client.upsert_user({"id": uid, "name": "Ghost"})
    conn = Connection(server, client, uid, {"invisible": True})
    frozen = queried(client, uid)
    assert frozen["online"] is False
    # The same caller reads the same user the same way whichever call answers.
    for answer in (
        client.upsert_users([{"id": uid, "name": "Ghost"}])["users"][uid],
        client.update_user_partial({"id": uid, "set": {"status": "hidden"}})["users"][uid],
    ):
        assert answer["online"] is False, answer
        assert answer.get("last_active") == frozen.get("last_active"), (answer, frozen)
        for field in OWN_ONLY_FIELDS:
            assert field not in answer, (field, answer)
    conn.close()


def test_answers_about_other_users_carry_no_own_only_fields(server, client):
    uid = unique("other")
    client.upsert_user({"id": uid})
    conn = Connection(server, client, uid)
    for answer in (
        client.upsert_users([{"id": uid, "name": "Other"}])["users"][uid],
        client.update_user_partial({"id": uid, "set": {"status": "x"}})["users"][uid],
        queried(client, uid),
    ):
        assert answer["online"] is True, answer
        for field in OWN_ONLY_FIELDS:
            assert field not in answer, (field, answer)
    conn.close()


def test_channel_create_records_the_creator(client):
    owner, other = unique("owner"), unique("member")
    client.upsert_users([{"id": owner}, {"id": other}])
    cid = unique("room")
    channel = client.channel("messaging", cid, {"name": "Room", "members": [owner, other]})
    created = channel.create(owner)
    assert created["channel"]["id"] == cid
    assert created["channel"]["created_by"]["id"] == owner
    state = channel.query()
    assert sorted(m["user_id"] for m in state["members"]) == sorted([owner, other])
    assert state["channel"]["created_by"]["id"] == owner


def test_distinct_channel_by_members_is_found_again(client):
    a, b = unique("a"), unique("b")
    client.upsert_users([{"id": a}, {"id": b}])
    first = client.channel("messaging", None, {"members": [a, b]})
    first.create(a)
    assert first.id.startswith("!members-")
    again = client.channel("messaging", None, {"members": [b, a]})
    again.query()
    assert again.id == first.id


def test_query_channels_by_member(client):
    uid = unique("q")
    client.upsert_user({"id": uid})
    ids = [unique("qc") for _ in range(3)]
    for cid in ids:
        client.channel("messaging", cid, {"members": [uid]}).create(uid)
    found = client.query_channels({"members": {"$in": [uid]}}, {"created_at": 1})
    assert sorted(c["channel"]["id"] for c in found["channels"]) == sorted(ids)


def test_add_members_and_remove_members(server, client):
    owner, joiner, ghost = unique("owner"), unique("joiner"), unique("ghost")
    client.upsert_users([{"id": owner}, {"id": joiner}])
    channel = client.channel("messaging", unique("grow"), {"members": [owner]})
    channel.create(owner)
    added = channel.add_members([joiner])
    assert added["channel"]["member_count"] == 2
    assert [m["user_id"] for m in added["members"]] == [owner, joiner]
    conn = Connection(server, client, joiner)
    members = {m["user_id"]: m for m in channel.query()["members"]}
    assert members[joiner]["user"]["online"] is True
    removed = channel.remove_members([joiner])
    assert removed["channel"]["member_count"] == 1
    assert [m["user_id"] for m in channel.query()["members"]] == [owner]
    # Member objects, as add_members also takes them.
    again = channel.add_members([{"user_id": joiner}])
    assert again["channel"]["member_count"] == 2
    with pytest.raises(StreamAPIException) as refused:
        channel.add_members([ghost])
    assert refused.value.status_code == 400 and refused.value.error_code == 4
    assert ghost in refused.value.error_message
    conn.close()


def test_bad_input_is_a_clear_json_error(client):
    with pytest.raises(StreamAPIException) as refused:
        client.upsert_users([{"id": "x" * 256}])
    assert refused.value.status_code == 400
    assert refused.value.json_response and refused.value.error_code == 4
    with pytest.raises(StreamAPIException) as refused:
        client.query_users({"id": {"$regex": "x"}})
    assert refused.value.status_code == 400 and refused.value.error_code == 4
    with pytest.raises(StreamAPIException) as refused:
        client.query_users({}, {"last_activ": -1})
    assert refused.value.status_code == 400 and refused.value.error_code == 4
    assert "last_activ" in refused.value.error_message


def test_calls_outside_the_subset_answer_json_and_keep_the_connection_usable(client):
    uid = unique("keep")
    client.upsert_user({"id": uid})
    failures = []
    for i in range(200):
        try:
            client.get_rate_limits()
        except StreamAPIException as e:
            assert e.json_response and e.status_code == 404, (e.status_code, e.response_text)
        else:
            failures.append(f"round {i}: a rate-limits call outside the subset succeeded")
        try:
            client.send_user_custom_event(uid, {"type": "ping"})
        except StreamAPIException as e:
            assert e.json_response and e.status_code in (404, 405), (e.status_code, e.response_text)
        # The pooled connection is still good for the next call.
        try:
            assert queried(client, uid)["id"] == uid
        except Exception as e:  # the failure the test is about: report it with its round
            failures.append(f"round {i}: {type(e).__name__}: {e}")
    assert failures == []


def test_a_refused_token_answers_json_and_the_connection_stays_usable(server, client):
    bad = StreamChat(api_key=API_KEY, api_secret="another-secret-0123456789abcdefghijk", base_url=server, timeout=10.0)
    bad.session = client.session  # the same pool of keep-alive connections
    for _ in range(30):
        with pytest.raises(StreamAPIException) as refused:
            bad.upsert_user({"id": unique("x"), "name": "x" * 2000})
        assert refused.value.status_code == 401 and refused.value.json_response
        assert client.query_users({"id": {"$eq": "nobody"}})["users"] == []


def test_webhooks_set_by_update_app_settings_verify_with_verify_webhook(server, client):
    received = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers["X-Signature"], self.headers["X-Webhook-Id"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        client.update_app_settings(webhook_url=url)
        assert client.get_app_settings()["app"]["webhook_url"] == url
        uid = unique("hook")
        client.upsert_user({"id": uid, "name": "Hook"})
        conn = Connection(server, client, uid)
        client.update_user_partial({"id": uid, "set": {"status": "Eating a veggie burger..."}})
        conn.close()

        def story():
            events = [json.loads(body) for body, _, _ in received]
            return [(e["type"], e["user"]["online"], e["user"].get("status")) for e in events if e["user"]["id"] == uid]

        wait_for(lambda: len(story()) == 4, "four events about the user")
        assert story() == [
            ("user.updated", False, None),
            ("user.presence.changed", True, None),
            ("user.updated", True, "Eating a veggie burger..."),
            ("user.presence.changed", False, "Eating a veggie burger..."),
        ]
        for body, signature, _ in received:
            assert client.verify_webhook(body, signature)
            assert not client.verify_webhook(body + b" ", signature)
        assert len({webhook_id for _, _, webhook_id in received}) == len(received)
    finally:
        client.update_app_settings(webhook_url="")
        receiver.shutdown()
