"""sushy resets during power transitions: Ironic's reboot and power-off must never meet a
refusal (sushy does not retry a POST on 503). Exits non-zero on any mismatch.

Usage: sushy_transition.py URL USER PASSWORD VM
"""
import sys
import time

import sushy
from sushy import auth

url, user, password, vm = sys.argv[1:5]
root = sushy.Sushy(url, auth=auth.BasicAuth(username=user, password=password), verify=False)
system = root.get_system(f"/redfish/v1/Systems/{vm}")


def state():
    system.refresh(force=True)
    return system.power_state


def wait_power(wanted, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if state() == wanted:
            return
        time.sleep(0.05)
    raise AssertionError(f"power never reached {wanted}: {system.power_state}")


system.reset_system(sushy.ResetType.ON)
assert state() == sushy.PowerState.POWERING_ON, system.power_state
print("ok powering on")
# During the boot: a hard reset, On again, then a hard off all succeed at once.
system.reset_system(sushy.ResetType.FORCE_RESTART)
system.reset_system(sushy.ResetType.ON)
print("ok reset and on during the boot")
system.reset_system(sushy.ResetType.FORCE_OFF)
wait_power(sushy.PowerState.OFF, timeout=1)
print("ok force off during the boot")
system.reset_system(sushy.ResetType.ON)
wait_power(sushy.PowerState.ON)
# During a soft off: a hard reset wins and the machine comes back on.
system.reset_system(sushy.ResetType.GRACEFUL_SHUTDOWN)
assert state() == sushy.PowerState.POWERING_OFF, system.power_state
system.reset_system(sushy.ResetType.FORCE_RESTART)
wait_power(sushy.PowerState.ON)
print("ok force restart during a soft off")
print("ALL OK")
