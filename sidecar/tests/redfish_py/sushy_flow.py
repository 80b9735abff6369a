"""Drives the simulated BMC with sushy the way Ironic does; exits non-zero on any mismatch.

Usage: sushy_flow.py URL USER PASSWORD VM
"""
import http.server
import sys
import threading
import time

import sushy
from sushy import auth

url, user, password, vm = sys.argv[1:5]
SYSTEM = f"/redfish/v1/Systems/{vm}"


def wait_power(system, wanted, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        system.refresh(force=True)
        if system.power_state == wanted:
            return
        time.sleep(0.05)
    raise AssertionError(f"power never reached {wanted}: {system.power_state}")


def check(label, got, want):
    if got != want:
        raise AssertionError(f"{label}: got {got!r}, want {want!r}")
    print(f"ok {label} = {got!r}")


def serve_image():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"\0" * 2048
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/images/boot.iso"


# --- Basic auth: power, boot, media ---
root = sushy.Sushy(url + "/redfish/v1", auth=auth.BasicAuth(user, password), verify=False)
# The collection lists the alias bmclib needs (models.rs ALIAS); the VM-named System stays.
check("system ids", [m for m in root.get_system_collection().members_identities], ["/redfish/v1/Systems/Self"])
check("the only System by default", root.get_system().name, vm)
system = root.get_system(SYSTEM)
check("initial power", system.power_state, sushy.PowerState.OFF)
allowed = system.get_allowed_reset_system_values()
for wanted in (sushy.ResetType.ON, sushy.ResetType.FORCE_OFF, sushy.ResetType.FORCE_RESTART):
    assert wanted in allowed, allowed

system.reset_system(sushy.ResetType.ON)
wait_power(system, sushy.PowerState.ON)
print("ok power on")

system.set_system_boot_options(
    sushy.BootSource.PXE,
    enabled=sushy.BootSourceOverrideEnabled.ONCE,
    mode=sushy.BootSourceOverrideMode.UEFI,
)
system.refresh(force=True)
check("boot target", system.boot.target, sushy.BootSource.PXE)
check("boot enabled", system.boot.enabled, sushy.BootSourceOverrideEnabled.ONCE)
check("boot mode", system.boot.mode, sushy.BootSourceOverrideMode.UEFI)
raw = system.json["Boot"]
check(
    "raw boot",
    (raw["BootSourceOverrideTarget"], raw["BootSourceOverrideEnabled"], raw["BootSourceOverrideMode"]),
    ("Pxe", "Once", "UEFI"),
)

# The reboot uses the one-time override up.
system.reset_system(sushy.ResetType.FORCE_RESTART)
time.sleep(0.05)
wait_power(system, sushy.PowerState.ON)
check("override consumed", system.boot.enabled, sushy.BootSourceOverrideEnabled.DISABLED)

system.set_system_boot_options(
    sushy.BootSource.HDD, enabled=sushy.BootSourceOverrideEnabled.CONTINUOUS
)
system.refresh(force=True)
check("continuous target", system.boot.target, sushy.BootSource.HDD)
check("continuous enabled", system.boot.enabled, sushy.BootSourceOverrideEnabled.CONTINUOUS)
check("mode kept", system.boot.mode, sushy.BootSourceOverrideMode.UEFI)

system.reset_system(sushy.ResetType.FORCE_OFF)
wait_power(system, sushy.PowerState.OFF)
print("ok power off")

image = serve_image()
manager = root.get_manager("/redfish/v1/Managers/BMC")
media = manager.virtual_media.get_member("/redfish/v1/Managers/BMC/VirtualMedia/Cd")
check("media types", sorted(str(t.value) for t in media.media_types), ["CD", "DVD"])
media.insert_media(image, inserted=True, write_protected=True)
media.refresh(force=True)
check("inserted", media.inserted, True)
check("image", media.image, image)
check("image name", media.image_name, "boot.iso")
# The same device seen through the System, as Ironic looks first.
system_media = system.virtual_media.get_members()
check("system media image", [m.image for m in system_media], [image])
media.eject_media()
media.refresh(force=True)
check("ejected", media.inserted, False)
check("no image", media.image, None)

# PATCH-style insert and eject, as sushy does for BMCs without the actions.
media._conn.patch(media.path, data={"Image": image, "Inserted": True, "WriteProtected": True})
media.refresh(force=True)
check("patched image", media.image, image)
media._conn.patch(media.path, data={"Image": None, "Inserted": False})
media.refresh(force=True)
check("patched eject", media.image, None)

# --- Session auth ---
session_root = sushy.Sushy(url + "/redfish/v1", auth=auth.SessionAuth(user, password), verify=False)
session_system = session_root.get_system(SYSTEM)
check("session power", session_system.power_state, sushy.PowerState.OFF)
session_system.reset_system(sushy.ResetType.ON)
wait_power(session_system, sushy.PowerState.ON)
sessions = root.get_session_service().sessions.members_identities
check("one session", len(sessions), 1)
session_root._conn._auth.close()
sessions = root.get_session_service().sessions.members_identities
check("logged out", len(sessions), 0)
print("ALL OK")
