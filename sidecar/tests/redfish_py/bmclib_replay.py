"""Replays bmclib's Redfish calls (its `gofish` provider, which Tinkerbell's Rufio uses) against
the BMC: the URLs, bodies and headers its source sends, in its order, with the same checks
on what comes back. Exits non-zero on the first mismatch.

Source read (bmc-toolbox/bmclib, v2 `main`):
  providers/redfish/redfish.go            Compatible(): Open, VersionCompatible, PowerStateGet
  internal/redfishwrapper/client.go       Open (gofish.Connect: service root, session login),
                                          SessionActive (GET the session), Close (DELETE it),
                                          GetBootProgress (RedfishVersion >= 1.13.0)
  internal/redfishwrapper/system.go       Systems(), Managers(), Chassis()
  internal/redfishwrapper/inventory.go    knownSystemsOdataIDs, KnownChassisOdataIDs,
                                          managerOdataIDs, compatibleOdataID, Inventory
  internal/redfishwrapper/power.go        PowerSet on/off/soft/reset/cycle, SendNMI
  internal/redfishwrapper/boot_device.go  SystemBootDeviceSet, GetBootDeviceOverride
  internal/redfishwrapper/virtual_media.go SetVirtualMedia, InsertedVirtualMedia
  internal/redfishwrapper/bios.go         Get/SetBiosConfiguration (gofish
                                          Bios.UpdateBiosAttributesApplyAt: GET the settings
                                          object, PATCH it with its ETag as If-Match)
  internal/redfishwrapper/secure_boot.go  Get/SetSecureBoot (gofish SecureBoot.Update)

Usage: bmclib_replay.py URL USER PASSWORD VM
"""
import http.server
import sys
import threading
import time

import requests
import urllib3

urllib3.disable_warnings()

url, user, password, vm = sys.argv[1:5]


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


image = serve_image()

# inventory.go: the only Ids bmclib's inventory, BIOS and Secure Boot paths accept.
KNOWN_SYSTEMS = {
    "/redfish/v1/Systems/System.Embedded.1",
    "/redfish/v1/Systems/System.Embedded.1/Bios",
    "/redfish/v1/Systems/1",
    "/redfish/v1/Systems/Self",
    "/redfish/v1/Systems/system",
}
KNOWN_CHASSIS = {
    "/redfish/v1/Chassis/Enclosure.Internal.0-1",
    "/redfish/v1/Chassis/System.Embedded.1",
    "/redfish/v1/Chassis/Enclosure.Internal.0-1:NonRAID.Integrated.1-1",
    "/redfish/v1/Chassis/1",
    "/redfish/v1/Chassis/Self",
    "/redfish/v1/Chassis/ASRock_ROMED8HM3",
}

client = requests.Session()
client.verify = False
client.trust_env = False  # a CA bundle in the environment would override verify=False


def check(label, got, want):
    if got != want:
        raise AssertionError(f"{label}: got {got!r}, want {want!r}")
    print(f"ok {label} = {got!r}")


def get(path):
    response = client.get(url + path)
    if response.status_code != 200:
        raise AssertionError(f"GET {path}: {response.status_code} {response.text}")
    return response.json(), response.headers.get("ETag")


def send(method, path, body, headers=None, ok=(200, 202, 204)):
    response = client.request(method, url + path, json=body, headers=headers or {})
    if response.status_code not in ok:
        raise AssertionError(f"{method} {path} {body}: {response.status_code} {response.text}")
    return response


def members(path):
    collection, _ = get(path)
    return [get(m["@odata.id"])[0] for m in collection["Members"]]


# --- Open (gofish.Connect): service root, then a session at Links.Sessions.
root, _ = get("/redfish/v1/")
login = client.post(url + root["Links"]["Sessions"]["@odata.id"],
                  json={"UserName": user, "Password": password})
check("session login status", login.status_code, 201)
client.headers["X-Auth-Token"] = login.headers["X-Auth-Token"]
session_uri = login.headers["Location"].replace(url, "")
get(session_uri)  # SessionActive
print("ok session active")


def systems():
    # Systems(): the collection's members (one, with no SystemName configured).
    found = members(root["Systems"]["@odata.id"])
    check("Systems members", len(found), 1)
    return found


# --- Compatible(): PowerStateGet reads the first System's PowerState.
system = systems()[0]
check("System @odata.id is one bmclib knows", system["@odata.id"] in KNOWN_SYSTEMS, True)
check("System Name is the VM", system["Name"], vm)
check("PowerState", system["PowerState"], "Off")


def reset(reset_type):
    system = systems()[0]
    allowed = system["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"]
    check(f"{reset_type} allowed", reset_type in allowed, True)
    target = system["Actions"]["#ComputerSystem.Reset"]["target"]
    send("POST", target, {"ResetType": reset_type})


def wait_power(wanted, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = systems()[0]["PowerState"]
        if state == wanted:
            print(f"ok power reached {wanted}")
            return
        time.sleep(0.1)
    raise AssertionError(f"power never reached {wanted}")


# --- PowerSet("on"): Reset On unless already On.
reset("On")
wait_power("On")

# --- GetBootProgress: gated on RedfishVersion >= 1.13.0, then every System's BootProgress.
major, minor, _ = (int(p) for p in root["RedfishVersion"].split("."))
check("RedfishVersion >= 1.13", (major, minor) >= (1, 13), True)
check("BootProgress.LastState", systems()[0]["BootProgress"]["LastState"], "OSRunning")

# --- SystemBootDeviceSet("pxe", persistent=false, efi=true): PATCH {"Boot": ...} with the
# System's Boot as read (gofish Boot marshals only non-empty fields; AllowableValues are
# not fields of it), If-Match the ETag gofish holds.
system_json, etag = get(systems()[0]["@odata.id"])
boot = {
    "BootSourceOverrideEnabled": "Once",
    "BootSourceOverrideMode": "UEFI",
    "BootSourceOverrideTarget": "Pxe",
}
send("PATCH", system_json["@odata.id"], {"Boot": boot}, {"If-Match": etag})
# --- GetBootDeviceOverride.
read = systems()[0]["Boot"]
check("boot override read back",
      (read["BootSourceOverrideTarget"], read["BootSourceOverrideEnabled"], read["BootSourceOverrideMode"]),
      ("Pxe", "Once", "UEFI"))
# The legacy / persistent variant, as bmclib sends it for efiBoot=false, persistent=true.
system_json, etag = get(systems()[0]["@odata.id"])
send("PATCH", system_json["@odata.id"], {"Boot": {
    "BootSourceOverrideEnabled": "Continuous",
    "BootSourceOverrideMode": "UEFI",
    "BootSourceOverrideTarget": "Hdd",
}}, {"If-Match": etag})
check("persistent disk boot", systems()[0]["Boot"]["BootSourceOverrideEnabled"], "Continuous")

# --- SetVirtualMedia("CD", url): every Manager's VirtualMedia; eject when Inserted and
# EjectMedia is offered, then InsertMedia {Image, Inserted, WriteProtected}.
managers = members(root["Managers"]["@odata.id"])
check("Managers", len(managers), 1)
manager = managers[0]
media = members(manager["VirtualMedia"]["@odata.id"])
cd = next(m for m in media if "CD" in m["MediaTypes"])
actions = cd["Actions"]
check("SupportsMediaEject", "#VirtualMedia.EjectMedia" in actions, True)
check("SupportsMediaInsert", "#VirtualMedia.InsertMedia" in actions, True)
if cd["Inserted"]:
    send("POST", actions["#VirtualMedia.EjectMedia"]["target"], {})
send("POST", actions["#VirtualMedia.InsertMedia"]["target"],
     {"Image": image, "Inserted": True, "WriteProtected": True})
# --- InsertedVirtualMedia: the Ids of inserted media.
inserted = [m["Id"] for m in members(manager["VirtualMedia"]["@odata.id"]) if m["Inserted"]]
check("inserted media", inserted, [cd["Id"]])
# SetVirtualMedia("CD", ""): eject only.
cd, _ = get(cd["@odata.id"])
send("POST", cd["Actions"]["#VirtualMedia.EjectMedia"]["target"], {})
check("ejected", get(cd["@odata.id"])[0]["Inserted"], False)

# --- Inventory (failInventoryOnError false in providers/redfish): UpdateService's
# FirmwareInventory, compatible Chassis (enclosure, PSUs through Power), compatible
# Systems (CPUs, DIMMs, drives, BIOS, NICs), Managers.
update_service, _ = get(root["UpdateService"]["@odata.id"])
firmware = members(update_service["FirmwareInventory"]["@odata.id"])
versions = {item["Id"]: item["Version"] for item in firmware}
check("firmware inventory ids", sorted(versions), ["BIOS", "BMC"])
chassis_list = members(root["Chassis"]["@odata.id"])
check("Chassis @odata.id is one bmclib knows",
      [c["@odata.id"] in KNOWN_CHASSIS for c in chassis_list], [True])
power, _ = get(chassis_list[0]["Power"]["@odata.id"])
check("PSUs", len(power["PowerSupplies"]), 1)
system = systems()[0]
cpus = members(system["Processors"]["@odata.id"])
check("CPU architecture", cpus[0]["ProcessorArchitecture"], "x86")
dimms = members(system["Memory"]["@odata.id"])
check("DIMMs", len(dimms), 1)
storage = members(system["Storage"]["@odata.id"])
drives = [get(d["@odata.id"])[0] for d in storage[0]["Drives"]]
check("drive sizes known", all(d.get("CapacityBytes") for d in drives), True)
nics = members(system["EthernetInterfaces"]["@odata.id"])
check("NIC MACs", all(n["MACAddress"] for n in nics), True)
check("BiosVersion", system["BiosVersion"], versions["BIOS"])
check("BMC firmware", manager["FirmwareVersion"], versions["BMC"])

# --- GetBiosConfiguration: the compatible System's Bios Attributes.
bios, _ = get(system["Bios"]["@odata.id"])
check("BIOS attributes", bios["Attributes"], {"BootMode": "Uefi", "SecureBoot": "Disabled"})
# --- SetBiosConfiguration: only changed attributes, at OnReset, to the settings object
# with the ETag of its GET as If-Match.
settings_uri = bios["@Redfish.Settings"]["SettingsObject"]["@odata.id"]
_, settings_etag = get(settings_uri)
send("PATCH", settings_uri,
     {"Attributes": {"SecureBoot": "Enabled"}, "@Redfish.SettingsApplyTime": {"ApplyTime": "OnReset"}},
     {"If-Match": settings_etag})
check("pending", get(settings_uri)[0]["Attributes"]["SecureBoot"], "Enabled")
check("running boot unchanged", get(system["Bios"]["@odata.id"])[0]["Attributes"]["SecureBoot"], "Disabled")

# --- GetSecureBoot / SetSecureBoot (gofish Update sends the changed field only).
secure_boot, _ = get(system["SecureBoot"]["@odata.id"])
check("SecureBootEnable (the setting)", secure_boot["SecureBootEnable"], True)
send("PATCH", secure_boot["@odata.id"], {"SecureBootEnable": False})
check("SecureBootEnable set", get(secure_boot["@odata.id"])[0]["SecureBootEnable"], False)
send("PATCH", secure_boot["@odata.id"], {"SecureBootEnable": True})

# --- PowerSet("reset"): PowerCycle; the BIOS change applies with this boot.
reset("PowerCycle")
wait_power("On")
deadline = time.time() + 15
while get(system["Bios"]["@odata.id"])[0]["Attributes"]["SecureBoot"] != "Enabled":
    if time.time() > deadline:
        raise AssertionError("Secure Boot never applied by the reboot")
    time.sleep(0.1)
print("ok BIOS setting applied at the next boot")

# --- PowerSet("cycle"): ForceRestart (refused by bmclib itself while off); SendNMI: Nmi;
# PowerSet("soft"): GracefulShutdown; PowerSet("off"): ForceOff.
reset("ForceRestart")
wait_power("On")
reset("Nmi")
reset("GracefulShutdown")
wait_power("Off")
check("BootProgress when off", systems()[0]["BootProgress"]["LastState"], "None")
reset("On")
wait_power("On")
reset("ForceOff")
wait_power("Off")

# --- BMCReset: Managers' Reset with the type asked; this BMC offers none, and says so.
allowed = manager["Actions"]["#Manager.Reset"]["ResetType@Redfish.AllowableValues"]
check("Manager reset types offered", allowed, [])

# --- Close: DELETE the session.
check("logout", client.delete(url + session_uri).status_code in (200, 204), True)
print("ALL OK")
