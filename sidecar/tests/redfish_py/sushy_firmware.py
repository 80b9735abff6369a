"""sushy's firmware and boot-progress reads, as Ironic's bios, firmware and inspect interfaces
make them (`ironic/drivers/modules/redfish/bios.py` cache_bios_settings and
apply_configuration, `firmware.py` cache_firmware_components, `inspect.py`), and the
Manager's network resources. Exits non-zero on any mismatch.

Usage: sushy_firmware.py URL USER PASSWORD VM
"""
import sys
import time

import requests
import sushy
from sushy import auth

url, user, password, vm = sys.argv[1:5]


def check(label, got, want):
    if got != want:
        raise AssertionError(f"{label}: got {got!r}, want {want!r}")
    print(f"ok {label} = {got!r}")


def wait(label, predicate, timeout=15):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"never: {label}")
        time.sleep(0.1)
    print(f"ok {label}")


root = sushy.Sushy(url + "/redfish/v1", auth=auth.SessionOrBasicAuth(user, password), verify=False)
# No system id: the collection's only member (the alias), as sushy does without one.
system = root.get_system()
check("default system name", system.name, vm)
named = root.get_system(f"/redfish/v1/Systems/{vm}")
check("VM-named system is the same machine", named.uuid, system.uuid)

# --- Bios: attributes, registry, settings object, apply times.
bios = system.bios
check("attributes", dict(bios.attributes), {"BootMode": "Uefi", "SecureBoot": "Disabled"})
check("pending (nothing yet)", dict(bios.pending_attributes), {"BootMode": "Uefi", "SecureBoot": "Disabled"})
check("supported apply times", [str(t) for t in bios.supported_apply_times], ["ApplyTime.ON_RESET"])
registry = bios.get_attribute_registry()
if registry is None:
    raise AssertionError("no attribute registry")
entries = {a.name: a for a in registry.registry_entries.attributes}
check("registry attributes", sorted(entries), ["BootMode", "SecureBoot"])
check("BootMode values", [v["ValueName"] for v in entries["BootMode"].allowable_values], ["Uefi", "Bios"])
check("BootMode writable", entries["BootMode"].read_only, False)
check("BootMode needs a reset", entries["BootMode"].reset_required, True)

# --- Ironic's apply_configuration: set, reboot, read back.
system.reset_system(sushy.ResetType.ON)
wait("powered on", lambda: system.refresh(force=True) or system.power_state == sushy.PowerState.ON)
check("boot progress", system.boot_progress.last_state, sushy.BootProgressStates.OS_RUNNING)
bios.set_attributes({"SecureBoot": "Enabled"}, apply_time=sushy.ApplyTime.ON_RESET)
bios.invalidate()
bios.refresh(force=True)
check("pending after set", bios.pending_attributes["SecureBoot"], "Enabled")
check("running boot keeps its settings", bios.attributes["SecureBoot"], "Disabled")
secure_boot = system.secure_boot
check("Secure Boot setting", secure_boot.enabled, True)
check("Secure Boot of the current boot", secure_boot.current_boot, sushy.SecureBootCurrentBoot.DISABLED)
try:
    bios.set_attributes({"SecureBoot": "Maybe"})
    raise AssertionError("a value not in the registry was accepted")
except sushy.exceptions.BadRequestError as error:
    check("bad value refused", "PropertyValueNotInList" in str(error), True)
try:
    bios.set_attributes({"BootMode": "Uefi"}, apply_time=sushy.ApplyTime.IMMEDIATE)
    raise AssertionError("Immediate was accepted")
except sushy.exceptions.BadRequestError as error:
    check("Immediate refused", "PropertyValueNotInList" in str(error), True)
system.reset_system(sushy.ResetType.FORCE_RESTART)


def applied():
    bios.invalidate()
    bios.refresh(force=True)
    return bios.attributes["SecureBoot"] == "Enabled"


wait("BIOS setting applied by the reboot", applied)
check("secure boot resource agrees", system.secure_boot.enabled, True)

# --- Ironic's firmware components: System.BiosVersion, Manager.FirmwareVersion, and the
# UpdateService's inventory.
system.refresh(force=True)
check("BiosVersion", system.bios_version, "OVMF (UEFI)")
manager = root.get_manager()
updates = root.get_update_service()
inventory = {item.identity: item.version for item in updates.firmware_inventory.get_members()}
check("firmware inventory", inventory, {"BIOS": system.bios_version, "BMC": manager.firmware_version})
check("update service enabled", updates.service_enabled, False)
try:
    updates.simple_update("http://127.0.0.1/firmware.bin")
    raise AssertionError("simple_update went through")
except sushy.exceptions.BadRequestError as error:
    check("simple_update refused with the reason", "neither can be updated" in str(error), True)
# The target posted directly (bmclib posts to the one it read): the same refusal.
http = requests.Session()
http.verify = False
http.trust_env = False  # a CA bundle in the environment would override verify=False
http.auth = (user, password)
refused = http.post(url + "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
                    json={"ImageURI": "http://127.0.0.1/firmware.bin"})
check("SimpleUpdate status", refused.status_code, 400)
check("SimpleUpdate message", refused.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"],
      "Base.1.4.0.ActionNotSupported")

# --- Inspection: the processor architecture.
check("processor summary", system.processors.summary, (2, sushy.ProcessorArchitecture.X86))

# --- Manager: network protocol and its interface.
protocol = http.get(url + manager.path + "/NetworkProtocol").json()
port = int(url.rsplit(":", 1)[1])
check("HTTPS port", protocol["HTTPS"], {"ProtocolEnabled": True, "Port": port})
check("IPMI enabled", protocol["IPMI"]["ProtocolEnabled"], True)
nics = manager.ethernet_interfaces.get_members()
check("BMC interfaces", [n.identity for n in nics], ["eth0"])
check("BMC address", nics[0].json["IPv4Addresses"][0]["Address"], "127.0.0.1")

system.reset_system(sushy.ResetType.FORCE_OFF)
wait("off", lambda: system.refresh(force=True) or system.power_state == sushy.PowerState.OFF)
system.refresh(force=True)
check("boot progress off", system.boot_progress.last_state, sushy.BootProgressStates.NONE)
print("ALL OK")
