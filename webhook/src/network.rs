//! Does a packet sent to the Pod's IP on 623/UDP or 443/TCP reach the sidecar, or the guest?
//! Pure, over the VM's JSON (KubeVirt has no Rust types and we only read a few fields).

use serde_json::Value;

use crate::names;

/// A networking setup that hands the BMC's packets to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    /// Masquerade with no `ports` list forwards every inbound port to the guest.
    MasqueradeWithoutPorts { interface: String },
    /// A `ports` list that names a BMC port forwards that port to the guest.
    PortForwardedToGuest {
        interface: String,
        port: u16,
        protocol: &'static str,
    },
    /// Bridge binding on the pod network gives the Pod's IP to the guest.
    BridgeOnPodNetwork { interface: String },
    /// No interfaces declared: KubeVirt adds one on the pod network with bridge binding.
    NoInterfaces,
}

impl Unreachable {
    /// One line, short enough for an admission warning and an Event.
    pub fn message(&self) -> String {
        match self {
            Unreachable::MasqueradeWithoutPorts { interface } => format!(
                "BMC unreachable: interface {interface:?} uses masquerade without a ports list, so every inbound port (623/UDP, 443/TCP too) goes to the guest; list the guest's ports"
            ),
            Unreachable::PortForwardedToGuest {
                interface,
                port,
                protocol,
            } => format!(
                "BMC unreachable on {port}/{protocol}: interface {interface:?} forwards that port to the guest; remove it from the ports list"
            ),
            Unreachable::BridgeOnPodNetwork { interface } => format!(
                "BMC unreachable: interface {interface:?} uses bridge binding on the pod network, which gives the Pod's IP to the guest; use masquerade with a ports list"
            ),
            Unreachable::NoInterfaces => "BMC unreachable: the VM declares no interfaces, so KubeVirt adds a bridge on the pod network and the guest takes the Pod's IP; declare a masquerade interface with a ports list".to_owned(),
        }
    }

    /// Bounded label for Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Unreachable::MasqueradeWithoutPorts { .. } => "MasqueradeWithoutPorts",
            Unreachable::PortForwardedToGuest { .. } => "BmcPortForwardedToGuest",
            Unreachable::BridgeOnPodNetwork { .. } => "BridgeOnPodNetwork",
            Unreachable::NoInterfaces => "NoInterfacesDeclared",
        }
    }
}

/// Checks the VM's template (`spec.template.spec`).
pub fn check_vm(vm: &Value) -> Vec<Unreachable> {
    check_vmi_spec(&vm["spec"]["template"]["spec"])
}

pub fn check_vmi_spec(spec: &Value) -> Vec<Unreachable> {
    let interfaces = spec["domain"]["devices"]["interfaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let networks = spec["networks"].as_array().cloned().unwrap_or_default();
    if interfaces.is_empty() {
        let autoattach = spec["domain"]["devices"]["autoattachPodInterface"].as_bool();
        let only_secondary =
            !networks.is_empty() && networks.iter().all(|n| n.get("pod").is_none());
        return if autoattach == Some(false) || only_secondary {
            Vec::new()
        } else {
            vec![Unreachable::NoInterfaces]
        };
    }
    let mut found = Vec::new();
    for iface in &interfaces {
        let name = iface["name"].as_str().unwrap_or_default().to_owned();
        let on_pod_network = networks
            .iter()
            .any(|n| n["name"].as_str() == Some(name.as_str()) && n.get("pod").is_some());
        if !on_pod_network {
            continue;
        }
        if iface.get("bridge").is_some() {
            found.push(Unreachable::BridgeOnPodNetwork { interface: name });
            continue;
        }
        let forwards_ports = iface.get("masquerade").is_some()
            || iface.get("passt").is_some()
            || iface["binding"]["name"].as_str() == Some("passt");
        if !forwards_ports {
            continue;
        }
        match iface["ports"].as_array() {
            None => found.push(Unreachable::MasqueradeWithoutPorts { interface: name }),
            Some(ports) if ports.is_empty() => {
                found.push(Unreachable::MasqueradeWithoutPorts { interface: name })
            }
            Some(ports) => {
                for p in ports {
                    let number = p["port"].as_u64().unwrap_or(0);
                    let protocol = p["protocol"].as_str().unwrap_or("TCP").to_ascii_uppercase();
                    for (port, proto) in [(names::IPMI_PORT, "UDP"), (names::REDFISH_PORT, "TCP")] {
                        if number == u64::from(port) && protocol == proto {
                            found.push(Unreachable::PortForwardedToGuest {
                                interface: name.clone(),
                                port,
                                protocol: proto,
                            });
                        }
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(interfaces: Value, networks: Value) -> Value {
        json!({"spec": {"template": {"spec": {
            "domain": {"devices": {"interfaces": interfaces}},
            "networks": networks
        }}}})
    }

    #[test]
    fn masquerade_with_ports_is_reachable() {
        let v = vm(
            json!([{"name": "default", "masquerade": {}, "ports": [{"port": 22}]}]),
            json!([{"name": "default", "pod": {}}]),
        );
        assert_eq!(check_vm(&v), []);
    }

    #[test]
    fn masquerade_without_ports_is_not() {
        let v = vm(
            json!([{"name": "default", "masquerade": {}}]),
            json!([{"name": "default", "pod": {}}]),
        );
        let found = check_vm(&v);
        assert_eq!(
            found,
            [Unreachable::MasqueradeWithoutPorts {
                interface: "default".into()
            }]
        );
        assert!(
            found[0]
                .message()
                .contains("masquerade without a ports list")
        );
    }

    #[test]
    fn a_forwarded_bmc_port_is_named() {
        let v = vm(
            json!([{"name": "default", "masquerade": {}, "ports": [{"port": 443}, {"port": 623, "protocol": "UDP"}, {"port": 623}]}]),
            json!([{"name": "default", "pod": {}}]),
        );
        let found = check_vm(&v);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].message().contains("443/TCP"));
        assert!(found[1].message().contains("623/UDP"));
    }

    #[test]
    fn bridge_on_pod_network_is_unreachable_but_on_multus_it_is_fine() {
        let v = vm(
            json!([{"name": "default", "bridge": {}}]),
            json!([{"name": "default", "pod": {}}]),
        );
        assert_eq!(check_vm(&v)[0].reason(), "BridgeOnPodNetwork");
        let v = vm(
            json!([{"name": "data", "bridge": {}}]),
            json!([{"name": "data", "multus": {"networkName": "vlan10"}}]),
        );
        assert_eq!(check_vm(&v), []);
    }

    #[test]
    fn no_interfaces_means_default_bridge_unless_autoattach_is_off() {
        let v = json!({"spec": {"template": {"spec": {"domain": {"devices": {}}}}}});
        assert_eq!(check_vm(&v), [Unreachable::NoInterfaces]);
        let v = json!({"spec": {"template": {"spec": {"domain": {"devices": {"autoattachPodInterface": false}}}}}});
        assert_eq!(check_vm(&v), []);
    }

    #[test]
    fn passt_follows_the_ports_rule() {
        let v = vm(
            json!([{"name": "default", "binding": {"name": "passt"}}]),
            json!([{"name": "default", "pod": {}}]),
        );
        assert_eq!(check_vm(&v).len(), 1);
    }
}
