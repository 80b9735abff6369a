"""HttpHeaders of an event subscription, created through sushy as Ironic's vendor passthru
create_subscription does (ironic/drivers/modules/redfish/vendor.py: payload with
Destination, Protocol, Context, EventTypes and the HttpHeaders list Metal3 built, one
single-key object per key of its httpHeadersRef Secret, then
event_service.subscriptions.create(payload)).

Usage: events_headers.py URL USER PASSWORD VM PHASE RECEIVER_PORT
  PHASE "subscribe": malformed headers refused and nothing stored; a subscription with
    headers reads back without them; a power change reaches the receiver with them.
  PHASE "restarted": the subscription survived the restart with its headers (stored sealed):
    a power change reaches the receiver with them again.
"""
import http.server
import json
import queue
import sys
import threading
import time

import requests
import sushy
from sushy import auth
import urllib3

urllib3.disable_warnings()
url, user, password, vm, phase, port = sys.argv[1:7]
port = int(port)
TOKEN = "Bearer hdr-s3cret-token"
s = requests.Session()
s.auth = (user, password)
s.verify = False
s.trust_env = False
SUBSCRIPTIONS = f"{url}/redfish/v1/EventService/Subscriptions"
received = queue.Queue()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        received.put((self.headers, json.loads(body)))  # case-insensitive lookups
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
destination = f"http://127.0.0.1:{port}/events"


def power_event_with_headers(reset_type, message):
    r = s.post(f"{url}/redfish/v1/Systems/{vm}/Actions/ComputerSystem.Reset", json={"ResetType": reset_type})
    assert r.status_code in (202, 204), (r.status_code, r.text)
    deadline = time.time() + 30
    while True:
        assert time.time() < deadline, f"no {message} event"
        try:
            headers, event = received.get(timeout=0.5)
        except queue.Empty:
            continue
        if any(e["MessageId"].endswith(message) for e in event["Events"]):
            break
    assert headers.get("Authorization") == TOKEN, headers
    assert headers.get("X-Metal3-Host") == "host-0", headers
    assert headers.get("Content-Type") == "application/json", headers


if phase == "subscribe":

    for bad in (
        [{"Authorization: " + TOKEN: "x"}],   # a whole header line as the name
        [{"Authorization": TOKEN + "\r\nX-Injected: 1"}],
        [{"Content-Length": "0"}],
        {"Authorization": TOKEN},             # not a list
    ):
        r = s.post(SUBSCRIPTIONS, json={"Destination": destination, "HttpHeaders": bad})
        assert r.status_code == 400, (bad, r.status_code, r.text)
        ids = [m["MessageId"] for m in r.json()["error"]["@Message.ExtendedInfo"]]
        assert any(i.endswith(("PropertyValueFormatError", "PropertyValueNotInList")) for i in ids), r.text
        assert "s3cret" not in r.text, r.text
    assert s.get(SUBSCRIPTIONS).json()["Members"] == []
    print("ok malformed HttpHeaders refused, nothing stored")

    root = sushy.Sushy(url + "/redfish/v1", auth=auth.BasicAuth(user, password), verify=False)
    payload = {
        "Destination": destination,
        "Protocol": "Redfish",
        "Context": "",
        "EventTypes": ["StatusChange"],
        "HttpHeaders": [{"Authorization": TOKEN}, {"X-Metal3-Host": "host-0"}],
    }
    sub = root.get_event_service().subscriptions.create(payload)
    assert sub.destination == destination, sub.json
    assert not sub.http_headers, sub.http_headers
    raw = s.get(url + sub.path)
    assert raw.status_code == 200 and "s3cret" not in raw.text and "host-0" not in raw.text, raw.text
    print("ok subscribed through sushy; GET shows no header values")

    power_event_with_headers("On", "ResourcePoweredOn")
    print("ok receiver got PoweredOn with the subscription's headers")
elif phase == "restarted":
    members = s.get(SUBSCRIPTIONS).json()["Members"]
    assert len(members) == 1, members
    raw = s.get(url + members[0]["@odata.id"])
    assert raw.status_code == 200 and "s3cret" not in raw.text, raw.text
    power_event_with_headers("ForceOff", "ResourcePoweredOff")
    print("ok after the restart the receiver got PoweredOff with the subscription's headers")
print("ALL OK")
