//! The VM's boot NIC and whether its MAC is pinned: one rule for the controller (which warns
//! on the VM) and `kubectl bmc hosts` (which refuses to print a host without it).
//!
//! Installers (Metal3's BareMetalHost `bootMACAddress`, OpenShift's install-config
//! `bootMACAddress`, Ironic's port) recognise the host by this MAC. A template interface with
//! no `macAddress` gets one chosen for each new VMI (kubevirt/enhancements
//! veps/sig-network/persistent-mac-addresses.md, "Current Behavior": empty
//! `interfaces[].macAddress` in the VM, a MAC only in the VMI's status, a new one after each
//! stop/start), and the BMC's power cycles create new VMIs. kubemacpool's VM webhook
//! (k8snetworkplumbingwg/kubemacpool pkg/webhook/virtualmachine/virtualmachine.go) allocates
//! a MAC at VM create and patches it into `interfaces[i].macAddress`, so with it the template
//! holds the MAC and this rule is satisfied.

use serde_json::Value;

/// Why a NIC was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Named,
    LowestBootOrder,
    First,
}

impl Choice {
    pub fn describe(self) -> &'static str {
        match self {
            Choice::Named => "named by --interface",
            Choice::LowestBootOrder => "lowest bootOrder",
            Choice::First => "first interface",
        }
    }
}

/// Index of the boot NIC among interfaces given as `(name, bootOrder)`: the one named
/// `wanted`; without it, the lowest bootOrder (what the guest firmware tries first); without
/// any bootOrder, the first interface.
pub fn choose(nics: &[(&str, Option<u64>)], wanted: Option<&str>) -> Option<(usize, Choice)> {
    if let Some(wanted) = wanted {
        return nics
            .iter()
            .position(|(name, _)| *name == wanted)
            .map(|i| (i, Choice::Named));
    }
    if let Some((i, _)) = nics
        .iter()
        .enumerate()
        .filter_map(|(i, (_, order))| Some((i, (*order)?)))
        .min_by_key(|(_, order)| *order)
    {
        return Some((i, Choice::LowestBootOrder));
    }
    (!nics.is_empty()).then_some((0, Choice::First))
}

/// The template's interfaces (`spec.template.spec.domain.devices.interfaces`) of a VM.
pub fn template_interfaces(vm: &Value) -> &[Value] {
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// The MAC pinned on one template interface. An empty `macAddress` is KubeVirt's "unset"
/// (the field is `omitempty`), so it pins nothing.
pub fn pinned_mac(interface: &Value) -> Option<&str> {
    interface["macAddress"].as_str().filter(|m| !m.is_empty())
}

/// The VM's boot NIC (no name asked for) when its MAC is not pinned: `(index, name)`. None
/// when it is pinned, or when the VM declares no interface (no NIC, no MAC to pin).
pub fn unpinned_boot_nic(vm: &Value) -> Option<(usize, &str)> {
    let interfaces = template_interfaces(vm);
    let keys: Vec<(&str, Option<u64>)> = interfaces
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default(),
                i["bootOrder"].as_u64(),
            )
        })
        .collect();
    let (index, _) = choose(&keys, None)?;
    pinned_mac(&interfaces[index])
        .is_none()
        .then_some((index, keys[index].0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(interfaces: Value) -> Value {
        json!({"spec": {"template": {"spec": {"domain": {"devices": {"interfaces": interfaces}}}}}})
    }

    #[test]
    fn the_lowest_boot_order_wins_over_the_first_interface() {
        let nics = [("a", None), ("b", Some(3)), ("c", Some(1))];
        assert_eq!(choose(&nics, None), Some((2, Choice::LowestBootOrder)));
        assert_eq!(choose(&nics[..1], None), Some((0, Choice::First)));
        assert_eq!(choose(&nics, Some("b")), Some((1, Choice::Named)));
        assert_eq!(choose(&nics, Some("z")), None);
        assert_eq!(choose(&[], None), None);
    }

    #[test]
    fn only_the_boot_nic_s_mac_counts() {
        let unpinned_boot = vm(json!([
            {"name": "default", "macAddress": "02:00:00:00:00:01"},
            {"name": "prov", "bootOrder": 1}
        ]));
        assert_eq!(unpinned_boot_nic(&unpinned_boot), Some((1, "prov")));
        let pinned_boot = vm(json!([
            {"name": "default"},
            {"name": "prov", "bootOrder": 1, "macAddress": "02:00:00:00:00:02"}
        ]));
        assert_eq!(unpinned_boot_nic(&pinned_boot), None);
        assert_eq!(
            unpinned_boot_nic(&vm(json!([{"name": "default", "macAddress": ""}]))),
            Some((0, "default"))
        );
        assert_eq!(unpinned_boot_nic(&vm(json!([]))), None);
        assert_eq!(unpinned_boot_nic(&json!({"spec": {}})), None);
    }
}
