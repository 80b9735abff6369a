//! What the plugin reads off a VirtualMachine (kubevirt.io/v1, as the API server returns it):
//! whether it asked for a BMC, what the controller reported, and the hardware facts an
//! installer needs (boot NIC and its MAC, firmware boot mode).

use std::collections::BTreeMap;

use kubevirt_bmc_contract::annotations::{self, AnnotationError, BootOverride, PowerState, Status};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmError {
    #[error(
        "VM {namespace}/{name} is not opted in to a BMC: run `kubectl bmc enable {name} -n {namespace}` (or `kubectl annotate vm {name} -n {namespace} {key}=true`)",
        key = annotations::ENABLED
    )]
    NotOptedIn { namespace: String, name: String },
    #[error("VM {namespace}/{name}: {source}")]
    InvalidAnnotation {
        namespace: String,
        name: String,
        source: AnnotationError,
    },
    #[error(
        "VM {namespace}/{name} declares no network interface (spec.template.spec.domain.devices.interfaces): an installer needs a NIC to boot from"
    )]
    NoInterfaces { namespace: String, name: String },
    #[error("VM {namespace}/{name} has no interface named {wanted:?}; it has: {available}")]
    NoSuchInterface {
        namespace: String,
        name: String,
        wanted: String,
        available: String,
    },
    #[error(
        "VM {namespace}/{name}: interface {nic:?} has no pinned MAC address, so KubeVirt gives it a new one on every start and the installer could not recognise the host; set spec.template.spec.domain.devices.interfaces[{index}].macAddress (e.g. `kubectl patch vm {name} -n {namespace} --type=json -p '[{{\"op\":\"add\",\"path\":\"/spec/template/spec/domain/devices/interfaces/{index}/macAddress\",\"value\":\"52:54:00:xx:xx:xx\"}}]'`), or pick another NIC with --interface"
    )]
    NoPinnedMac {
        namespace: String,
        name: String,
        nic: String,
        index: usize,
    },
    #[error(
        "VM {namespace}/{name}: interface {nic:?} has MAC address {mac:?}, which is not six colon- or dash-separated hex pairs"
    )]
    BadMac {
        namespace: String,
        name: String,
        nic: String,
        mac: String,
    },
}

/// How a VM came to want a BMC (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptIn {
    /// `bmc.kubevirt.io/enabled: "true"` on the VM.
    Annotated,
    /// No annotation on the VM, but the controller reports on it: its namespace carries the
    /// label (the plugin does not read namespaces; a user may not be allowed to).
    Namespace,
    No,
}

/// One opted-in VM, as read from its object.
#[derive(Debug, Clone, PartialEq)]
pub struct Vm<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: &'a Value,
    pub annotations: BTreeMap<String, String>,
}

impl<'a> Vm<'a> {
    pub fn new(object: &'a Value) -> Vm<'a> {
        let annotations = object["metadata"]["annotations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Vm {
            namespace: object["metadata"]["namespace"].as_str().unwrap_or_default(),
            name: object["metadata"]["name"].as_str().unwrap_or_default(),
            object,
            annotations,
        }
    }

    pub fn opt_in(&self) -> Result<OptIn, VmError> {
        match annotations::enabled(&self.annotations) {
            Ok(Some(true)) => Ok(OptIn::Annotated),
            Ok(Some(false)) => Ok(OptIn::No),
            Ok(None) if self.annotations.contains_key(annotations::STATUS) => Ok(OptIn::Namespace),
            Ok(None) => Ok(OptIn::No),
            Err(source) => Err(VmError::InvalidAnnotation {
                namespace: self.namespace.to_owned(),
                name: self.name.to_owned(),
                source,
            }),
        }
    }

    /// An error a person can act on unless the VM asked for a BMC.
    pub fn require_opted_in(&self) -> Result<(), VmError> {
        match self.opt_in()? {
            OptIn::No => Err(VmError::NotOptedIn {
                namespace: self.namespace.to_owned(),
                name: self.name.to_owned(),
            }),
            OptIn::Annotated | OptIn::Namespace => Ok(()),
        }
    }

    /// What the controller last wrote; `None` before its first report.
    pub fn status(&self) -> Option<Status> {
        self.annotations
            .get(annotations::STATUS)
            .and_then(|raw| Status::parse(raw))
    }

    /// The power a BMC client last asked for (the sidecar's record), if any.
    pub fn requested_power(&self) -> Option<PowerState> {
        self.annotations
            .get(annotations::POWER)
            .and_then(|raw| PowerState::parse(raw))
    }

    pub fn boot_override(&self) -> Option<BootOverride> {
        self.annotations
            .get(annotations::BOOT_OVERRIDE)
            .and_then(|raw| BootOverride::from_annotation(raw))
    }

    /// Power as the BMC reports it, from KubeVirt's printableStatus: an opted-in VM is kept
    /// running and BMC "off" is a paused VMI (see the README's power model). Any other status
    /// (Starting, Stopped, ErrorUnschedulable, ...) is shown as KubeVirt words it.
    pub fn power(&self) -> String {
        match self.object["status"]["printableStatus"].as_str() {
            Some("Running") => "On".to_owned(),
            Some("Paused") => "Off".to_owned(),
            Some(other) => other.to_owned(),
            None => "Unknown".to_owned(),
        }
    }

    pub fn interfaces(&self) -> Vec<Nic> {
        self.object["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(index, i)| Nic {
                index,
                name: i["name"].as_str().unwrap_or_default().to_owned(),
                mac: kubevirt_bmc_contract::nic::pinned_mac(i).map(str::to_owned),
                boot_order: i["bootOrder"].as_u64(),
                masquerade: i.get("masquerade").is_some(),
            })
            .collect()
    }

    /// The NIC an installer boots the host from, and why that one (see [`NIC_CHOICE`]).
    pub fn boot_nic(&self, wanted: Option<&str>) -> Result<(Nic, Choice), VmError> {
        let nics = self.interfaces();
        let (nic, choice) = choose_nic(&nics, wanted).ok_or_else(|| match wanted {
            Some(wanted) if !nics.is_empty() => VmError::NoSuchInterface {
                namespace: self.namespace.to_owned(),
                name: self.name.to_owned(),
                wanted: wanted.to_owned(),
                available: nics
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            _ => VmError::NoInterfaces {
                namespace: self.namespace.to_owned(),
                name: self.name.to_owned(),
            },
        })?;
        let Some(raw) = &nic.mac else {
            return Err(VmError::NoPinnedMac {
                namespace: self.namespace.to_owned(),
                name: self.name.to_owned(),
                nic: nic.name.clone(),
                index: nic.index,
            });
        };
        let mac = normalise_mac(raw).ok_or_else(|| VmError::BadMac {
            namespace: self.namespace.to_owned(),
            name: self.name.to_owned(),
            nic: nic.name.clone(),
            mac: raw.clone(),
        })?;
        Ok((
            Nic {
                mac: Some(mac),
                ..nic.clone()
            },
            choice,
        ))
    }

    /// The firmware the VM boots with, in the installers' words.
    pub fn boot_mode(&self) -> BootMode {
        let loader = &self.object["spec"]["template"]["spec"]["domain"]["firmware"]["bootloader"];
        match loader.get("efi") {
            // KubeVirt: EFI's secureBoot "Defaults to true" (VirtualMachine CRD,
            // firmware.bootloader.efi.secureBoot).
            Some(efi) if efi["secureBoot"] == false => BootMode::Uefi,
            Some(_) => BootMode::UefiSecureBoot,
            // KubeVirt: bios "If set (default), BIOS will be used."
            None => BootMode::Legacy,
        }
    }
}

/// What `--help` says about the MAC `hosts` takes.
pub const NIC_CHOICE: &str = "the boot MAC is the pinned macAddress of the NIC named by --interface; without it, of the interface with the lowest bootOrder; without any bootOrder, of the VM's first interface (spec.template.spec.domain.devices.interfaces[0])";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub index: usize,
    pub name: String,
    pub mac: Option<String>,
    pub boot_order: Option<u64>,
    /// Bound with `masquerade` (NAT behind the Pod's IP): the guest gets its address from
    /// KubeVirt's own DHCP in the Pod, so a provisioning network's DHCP/PXE never reaches it.
    pub masquerade: bool,
}

impl Nic {
    /// Why an installer that boots this NIC over PXE (IPMI deployments) would fail, if it would.
    pub fn pxe_warning(&self) -> Option<String> {
        self.masquerade.then(|| {
            format!(
                "interface {:?} uses masquerade (NAT on the pod network): PXE from a provisioning network cannot reach it; IPMI deployments boot over PXE, so give the VM a bridge NIC on that network (Multus) or use --protocol redfish (virtual media)",
                self.name
            )
        })
    }
}

pub use kubevirt_bmc_contract::nic::Choice;

/// The contract's boot-NIC rule ([`kubevirt_bmc_contract::nic::choose`]), the controller's too.
pub fn choose_nic<'n>(nics: &'n [Nic], wanted: Option<&str>) -> Option<(&'n Nic, Choice)> {
    let keys: Vec<(&str, Option<u64>)> = nics
        .iter()
        .map(|n| (n.name.as_str(), n.boot_order))
        .collect();
    kubevirt_bmc_contract::nic::choose(&keys, wanted).map(|(i, choice)| (&nics[i], choice))
}

/// KubeVirt accepts `de:ad:00:00:be:af` and `DE-AD-00-00-BE-AF` (VirtualMachine CRD,
/// interfaces[].macAddress); Metal3's bootMACAddress pattern wants colons. Lower case, colons.
pub fn normalise_mac(raw: &str) -> Option<String> {
    let parts: Vec<&str> = raw.split([':', '-']).collect();
    (parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())))
    .then(|| parts.join(":").to_ascii_lowercase())
}

/// Boot modes as Metal3's BareMetalHost and OpenShift's install-config spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Uefi,
    UefiSecureBoot,
    Legacy,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Uefi => "UEFI",
            BootMode::UefiSecureBoot => "UEFISecureBoot",
            BootMode::Legacy => "legacy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(annotations: Value, interfaces: Value, firmware: Value) -> Value {
        json!({
            "metadata": {"name": "vm1", "namespace": "vms", "annotations": annotations},
            "spec": {"template": {"spec": {"domain": {
                "devices": {"interfaces": interfaces},
                "firmware": firmware,
            }}}},
        })
    }

    fn nic(name: &str, mac: Option<&str>, boot_order: Option<u64>) -> Value {
        let mut v = json!({"name": name, "bridge": {}});
        if let Some(mac) = mac {
            v["macAddress"] = json!(mac);
        }
        if let Some(order) = boot_order {
            v["bootOrder"] = json!(order);
        }
        v
    }

    #[test]
    fn opt_in_follows_the_annotation_then_the_controllers_report() {
        let on = vm(
            json!({"bmc.kubevirt.io/enabled": "true"}),
            json!([]),
            json!({}),
        );
        assert_eq!(Vm::new(&on).opt_in(), Ok(OptIn::Annotated));
        let off = vm(
            json!({"bmc.kubevirt.io/enabled": "false", "bmc.kubevirt.io/status": "{}"}),
            json!([]),
            json!({}),
        );
        assert_eq!(Vm::new(&off).opt_in(), Ok(OptIn::No));
        let by_ns = vm(
            json!({"bmc.kubevirt.io/status": "{}"}),
            json!([]),
            json!({}),
        );
        assert_eq!(Vm::new(&by_ns).opt_in(), Ok(OptIn::Namespace));
        let none = vm(json!({}), json!([]), json!({}));
        let err = Vm::new(&none).require_opted_in().unwrap_err();
        assert_eq!(
            err.to_string(),
            "VM vms/vm1 is not opted in to a BMC: run `kubectl bmc enable vm1 -n vms` (or `kubectl annotate vm vm1 -n vms bmc.kubevirt.io/enabled=true`)"
        );
        let typo = vm(
            json!({"bmc.kubevirt.io/enabled": "yes"}),
            json!([]),
            json!({}),
        );
        assert!(
            Vm::new(&typo)
                .opt_in()
                .unwrap_err()
                .to_string()
                .contains("allowed values are \"true\" and \"false\"")
        );
    }

    #[test]
    fn the_boot_nic_is_named_else_lowest_boot_order_else_first() {
        let nics = json!([
            nic("default", Some("02:00:00:00:00:01"), None),
            nic("prov", Some("02:00:00:00:00:02"), Some(2)),
            nic("data", Some("02-00-00-00-00-0A"), Some(1)),
        ]);
        let object = vm(json!({}), nics, json!({}));
        let v = Vm::new(&object);
        let (n, why) = v.boot_nic(None).unwrap();
        assert_eq!(
            (n.name.as_str(), n.mac.as_deref(), why),
            ("data", Some("02:00:00:00:00:0a"), Choice::LowestBootOrder)
        );
        let (n, why) = v.boot_nic(Some("prov")).unwrap();
        assert_eq!((n.name.as_str(), why), ("prov", Choice::Named));
        let err = v.boot_nic(Some("nope")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VM vms/vm1 has no interface named \"nope\"; it has: default, prov, data"
        );

        let plain = vm(
            json!({}),
            json!([
                nic("a", Some("02:00:00:00:00:01"), None),
                nic("b", None, None)
            ]),
            json!({}),
        );
        let (n, why) = Vm::new(&plain).boot_nic(None).unwrap();
        assert_eq!((n.name.as_str(), why), ("a", Choice::First));
    }

    #[test]
    fn a_nic_without_a_pinned_mac_is_an_error_naming_the_field_to_set() {
        let object = vm(
            json!({}),
            json!([
                nic("a", Some("02:00:00:00:00:01"), None),
                nic("b", None, Some(1))
            ]),
            json!({}),
        );
        let err = Vm::new(&object).boot_nic(None).unwrap_err();
        assert_eq!(
            err,
            VmError::NoPinnedMac {
                namespace: "vms".into(),
                name: "vm1".into(),
                nic: "b".into(),
                index: 1
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("spec.template.spec.domain.devices.interfaces[1].macAddress"),
            "{text}"
        );
        assert!(text.contains("--interface"), "{text}");
        let none = vm(json!({}), json!([]), json!({}));
        assert!(matches!(
            Vm::new(&none).boot_nic(None),
            Err(VmError::NoInterfaces { .. })
        ));
        let bad = vm(
            json!({}),
            json!([nic("a", Some("02:00:00"), None)]),
            json!({}),
        );
        assert!(matches!(
            Vm::new(&bad).boot_nic(None),
            Err(VmError::BadMac { .. })
        ));
    }

    #[test]
    fn boot_mode_follows_kubevirts_firmware_defaults() {
        let cases = [
            (json!({}), BootMode::Legacy),
            (json!({"bootloader": {"bios": {}}}), BootMode::Legacy),
            (json!({"bootloader": {"efi": {}}}), BootMode::UefiSecureBoot),
            (
                json!({"bootloader": {"efi": {"secureBoot": true}}}),
                BootMode::UefiSecureBoot,
            ),
            (
                json!({"bootloader": {"efi": {"secureBoot": false}}}),
                BootMode::Uefi,
            ),
        ];
        for (firmware, mode) in cases {
            let object = vm(json!({}), json!([]), firmware.clone());
            assert_eq!(Vm::new(&object).boot_mode(), mode, "{firmware}");
        }
    }

    #[test]
    fn only_a_masquerade_nic_gets_the_pxe_warning() {
        let object = vm(
            json!({}),
            json!([
                {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"},
                nic("prov", Some("02:00:00:00:00:02"), None),
            ]),
            json!({}),
        );
        let nics = Vm::new(&object).interfaces();
        assert!(nics[0].pxe_warning().unwrap().contains("masquerade"));
        assert_eq!(nics[1].pxe_warning(), None);
    }

    #[test]
    fn macs_are_normalised_or_refused() {
        assert_eq!(
            normalise_mac("DE-AD-00-00-BE-AF").as_deref(),
            Some("de:ad:00:00:be:af")
        );
        for bad in [
            "",
            "de:ad:00:00:be",
            "de:ad:00:00:be:af:00",
            "zz:ad:00:00:be:af",
        ] {
            assert_eq!(normalise_mac(bad), None, "{bad}");
        }
    }
}
