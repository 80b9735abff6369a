"""Event subscriptions and SSE against the simulated BMC.

Usage: events_flow.py URL USER PASSWORD VM PHASE RECEIVER_PORT
  PHASE "subscribe": subscribe a local receiver, open SSE, power on; both must see the events.
  PHASE "restarted": the subscription survived a BMC restart and still delivers.
"""
import http.server
import json
import queue
import sys
import threading
import time

import requests
import urllib3

urllib3.disable_warnings()
url, user, password, vm, phase, port = sys.argv[1:7]
port = int(port)
s = requests.Session()
s.auth = (user, password)
s.verify = False
s.trust_env = False  # a CA bundle in the environment would override verify=False
SYSTEM = f"{url}/redfish/v1/Systems/{vm}"
received = queue.Queue()
# After the restart the receiver refuses the first delivery: the BMC must retry.
refusals = {"left": 1 if phase == "restarted" else 0, "done": 0}


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if refusals["left"] > 0:
            refusals["left"] -= 1
            refusals["done"] += 1
            self.send_response(503)
            self.end_headers()
            return
        received.put(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
destination = f"http://127.0.0.1:{port}/events"


def wait_for(q, predicate, what, timeout=15):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        try:
            item = q.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(item)
        if predicate(item):
            print(f"ok {what}")
            return item
    raise AssertionError(f"{what} never arrived; saw {seen}")


def message_ids(event):
    return [e["MessageId"] for e in event.get("Events", [])]


def powered(state):
    return lambda e: any(m.endswith(f"ResourcePowered{state}") for m in message_ids(e))


def reset(kind):
    r = s.post(f"{SYSTEM}/Actions/ComputerSystem.Reset", json={"ResetType": kind})
    assert r.status_code in (202, 204), (r.status_code, r.text)


if phase == "subscribe":
    sse_events = queue.Queue()
    sse_ready = threading.Event()

    def read_sse():
        with s.get(f"{url}/redfish/v1/EventService/SSE", stream=True, timeout=30) as r:
            assert r.status_code == 200, r.status_code
            assert r.headers["Content-Type"].startswith("text/event-stream"), r.headers
            sse_ready.set()
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    sse_events.put(json.loads(line[5:]))

    threading.Thread(target=read_sse, daemon=True).start()
    assert sse_ready.wait(10), "SSE stream did not open"

    r = s.post(
        f"{url}/redfish/v1/EventService/Subscriptions",
        json={"Destination": destination, "Protocol": "Redfish", "Context": "ironic-node-1",
              "EventTypes": ["StatusChange"]},
    )
    assert r.status_code == 201, (r.status_code, r.text)
    location = r.headers["Location"]
    sub = s.get(url + location).json()
    assert sub["Destination"] == destination and sub["Context"] == "ironic-node-1", sub
    print("ok subscribed", location)

    reset("On")
    event = wait_for(received, powered("On"), "receiver got PoweredOn")
    assert event["Context"] == "ironic-node-1", event
    assert event["Events"][0]["OriginOfCondition"]["@odata.id"] == f"/redfish/v1/Systems/{vm}"
    wait_for(sse_events, powered("On"), "SSE got PoweredOn")

    r = s.post(f"{url}/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
               json={"EventType": "StatusChange", "Message": "hello", "MessageId": "ResourceEvent.1.0.3.TestMessage"})
    assert r.status_code == 204, (r.status_code, r.text)
    wait_for(received, lambda e: e["Events"][0].get("Message") == "hello", "receiver got test event")
    wait_for(sse_events, lambda e: e["Events"][0].get("Message") == "hello", "SSE got test event")

    # A boot override change is ResourceUpdated: filtered out by EventTypes, seen on SSE.
    r = s.patch(SYSTEM, json={"Boot": {"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Once"}})
    assert r.status_code == 200, r.text
    wait_for(sse_events, lambda e: e["Events"][0].get("EventType") == "ResourceUpdated", "SSE got ResourceUpdated")
    time.sleep(0.5)
    while not received.empty():
        e = received.get()
        assert e["Events"][0].get("EventType") == "StatusChange", f"filter leaked {e}"
    print("ok filter kept ResourceUpdated from the subscriber")
elif phase == "restarted":
    members = s.get(f"{url}/redfish/v1/EventService/Subscriptions").json()["Members"]
    assert len(members) == 1, members
    sub = s.get(url + members[0]["@odata.id"]).json()
    assert sub["Destination"] == destination, sub
    print("ok subscription survived restart")
    reset("ForceOff")
    wait_for(received, powered("Off"), "receiver got PoweredOff after restart")
    assert refusals["done"] == 1, refusals
    print("ok delivered after a refused attempt (retry)")
    r = s.delete(url + members[0]["@odata.id"])
    assert r.status_code == 204, r.status_code
    assert s.get(f"{url}/redfish/v1/EventService/Subscriptions").json()["Members"] == []
    print("ok unsubscribed")
print("ALL OK")
