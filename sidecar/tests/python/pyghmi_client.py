"""Drives a BMC with pyghmi's IPMI client at its default settings; prints one JSON line.

Usage: pyghmi_client.py HOST PORT USER PASSWORD
"""
import json
import sys

from pyghmi.ipmi import command


def main():
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ipmi = command.Command(bmc=host, port=port, userid=user, password=password)
    out = {}
    out["power_initial"] = ipmi.get_power()["powerstate"]
    ipmi.set_power("on", wait=True)
    out["power_after_on"] = ipmi.get_power()["powerstate"]
    ipmi.set_bootdev("network", persist=True, uefiboot=True)
    out["bootdev"] = ipmi.get_bootdev()
    ipmi.set_power("off", wait=True)
    out["power_after_off"] = ipmi.get_power()["powerstate"]
    out["device_id"] = ipmi.raw_command(netfn=6, command=1)["data"][0]
    ipmi.ipmi_session.logout()
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
