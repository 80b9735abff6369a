"""Drives one BMC with sushy (Ironic's Redfish library) for the whole-flow test.

Usage: sushy_driver.py URL USER PASSWORD VM

Reads one JSON command per line on stdin and answers one JSON line on stdout:
{"ok": true, ...} or {"ok": false, "error": "<exception type>: <message>"}. One process for
the whole scenario, so a sushy client keeps its connection pool and sessions across BMC
restarts exactly as an Ironic conductor does.
"""
import json
import sys
import warnings

import requests
import sushy
from sushy import auth

warnings.filterwarnings("ignore")

url, user, password, vm = sys.argv[1:5]
SYSTEM = f"/redfish/v1/Systems/{vm}"
_root = None
# Kept alive: sushy logs a session out when its client is garbage-collected.
_sessions = []


def value(v):
    return getattr(v, "value", v)


def root():
    global _root
    if _root is None:
        _root = sushy.Sushy(
            url + "/redfish/v1", auth=auth.BasicAuth(user, password), verify=False
        )
    return _root


def system():
    return root().get_system(SYSTEM)


def media():
    # Ironic looks for the virtual CD under the System first.
    members = system().virtual_media.get_members()
    if len(members) != 1:
        raise AssertionError(f"expected one virtual media device, got {len(members)}")
    return members[0]


def boot_of(s):
    raw = s.json.get("Boot", {})
    return {
        "target": value(s.boot.target),
        "enabled": value(s.boot.enabled),
        "mode": value(s.boot.mode),
        "raw": [
            raw.get("BootSourceOverrideTarget"),
            raw.get("BootSourceOverrideEnabled"),
            raw.get("BootSourceOverrideMode"),
        ],
    }


def run(command):
    op = command["op"]
    if op == "power":
        return {"power": value(system().power_state)}
    if op == "reset":
        system().reset_system(sushy.ResetType(command["type"]))
        return {}
    if op == "boot":
        s = system()
        s.set_system_boot_options(
            sushy.BootSource(command["target"]),
            enabled=sushy.BootSourceOverrideEnabled(command["enabled"]),
            mode=sushy.BootSourceOverrideMode(command["mode"]),
        )
        s.refresh(force=True)
        return boot_of(s)
    if op == "boot_read":
        return boot_of(system())
    if op == "insert":
        media().insert_media(command["image"], inserted=True, write_protected=True)
        return {}
    if op == "eject":
        media().eject_media()
        return {}
    if op == "media":
        m = media()
        status = m.json.get("Status", {})
        return {
            "image": m.image,
            "image_name": m.image_name,
            "inserted": m.inserted,
            "connected_via": value(m.connected_via),
            "state": status.get("State"),
            "health": value(m.status.health) if m.status else None,
        }
    if op == "login":
        session = sushy.Sushy(
            url + "/redfish/v1", auth=auth.SessionAuth(user, password), verify=False
        )
        session.get_system(SYSTEM)
        _sessions.append(session)
        a = session._conn._auth
        return {"token": a.get_session_key(), "session": a.get_session_resource_id()}
    if op == "get_with_token":
        # Raw on purpose: sushy's SessionAuth would log in again on a 401 and hide it.
        r = requests.get(
            url + command["path"],
            headers={"X-Auth-Token": command["token"]},
            verify=False,
            timeout=10,
        )
        return {"status": r.status_code, "body": r.json() if r.content else None}
    raise ValueError(f"unknown op {op!r}")


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        answer = {"ok": True, **run(json.loads(line))}
    except Exception as e:  # every failure goes back to the test, with its type
        answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(answer), flush=True)
