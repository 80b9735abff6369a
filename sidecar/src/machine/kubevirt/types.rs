//! The few parts of KubeVirt's `VirtualMachine` and `VirtualMachineInstance` (kubevirt.io/v1)
//! that the BMC reads. No crate provides them for kube 5, and the full schema is huge.
//!
//! Every struct keeps the fields it does not name in `rest`, so a value read and serialized
//! again is the value the API server sent. The BMC still never writes whole objects: it
//! writes merge patches of its own annotations and JSON patches guarded by `test` ops (see
//! `boot` and `ops`), so fields this subset does not know can never be dropped.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const GROUP: &str = "kubevirt.io";
pub const VERSION: &str = "v1";
/// The annotation KubeVirt stamps on a VMI: the VM `metadata.generation` it was created from.
pub const VM_GENERATION_ANNOTATION: &str = "kubevirt.io/vm-generation";

type Rest = Map<String, Value>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VirtualMachine {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VmSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    #[serde(default)]
    pub template: VmTemplate,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub spec: VmiSpec,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiSpec {
    #[serde(default)]
    pub domain: Domain,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_strategy: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    #[serde(default)]
    pub devices: Devices,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Device>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Device>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// A disk (disk, lun or cdrom) or a network interface: what carries a `bootOrder`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    #[serde(flatten)]
    pub rest: Rest,
}

impl Device {
    pub fn is_cdrom(&self) -> bool {
        self.rest.contains_key("cdrom")
    }

    pub fn mac_address(&self) -> Option<&str> {
        self.rest.get("macAddress").and_then(Value::as_str)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Firmware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Bootloader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bootloader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efi: Option<Value>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VirtualMachineInstance {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VmiSpec,
    #[serde(default)]
    pub status: VmiStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmiStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<VmiInterface>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmiInterface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

impl VirtualMachine {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    pub fn generation(&self) -> i64 {
        self.metadata.generation.unwrap_or(0)
    }
}

impl VirtualMachineInstance {
    pub fn uid(&self) -> Option<&str> {
        self.metadata.uid.as_deref()
    }

    pub fn phase(&self) -> &str {
        self.status.phase.as_deref().unwrap_or("")
    }

    /// KubeVirt removes the Paused condition on unpause (it never writes Paused=False), but
    /// a False one is honoured in case a future version does.
    pub fn is_paused(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Paused" && c.status == "True")
    }

    pub fn is_terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// virt-handler sets `AgentConnected` True while the guest agent's channel is connected
    /// and removes it when it is not (kubevirt/kubevirt `pkg/virt-handler/vm.go`
    /// `updateGuestAgentConditions`, condition `VirtualMachineInstanceAgentConnected` in
    /// `staging/src/kubevirt.io/api/core/v1/types.go`).
    pub fn agent_connected(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == "AgentConnected" && c.status == "True")
    }

    /// The VM generation whose template this VMI was created from.
    pub fn vm_generation(&self) -> Option<i64> {
        self.metadata
            .annotations
            .as_ref()?
            .get(VM_GENERATION_ANNOTATION)?
            .parse()
            .ok()
    }
}

macro_rules! kubevirt_resource {
    ($type:ty, $kind:literal, $plural:literal) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = kube::core::NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(VERSION)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

kubevirt_resource!(VirtualMachine, "VirtualMachine", "virtualmachines");
kubevirt_resource!(
    VirtualMachineInstance,
    "VirtualMachineInstance",
    "virtualmachineinstances"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../e2e/testdata/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn vm_fixture_round_trips_without_losing_a_field_of_the_template() {
        let raw = fixture("vm-vm1.json");
        let vm: VirtualMachine = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(vm.spec.run_strategy.as_deref(), Some("Always"));
        assert_eq!(
            vm.spec.template.spec.start_strategy.as_deref(),
            Some("Paused")
        );
        assert_eq!(vm.spec.template.spec.domain.devices.disks.len(), 2);
        let back = serde_json::to_value(&vm.spec).unwrap();
        assert_eq!(back, raw["spec"]);
    }

    #[test]
    fn vmi_fixtures_tell_paused_from_running() {
        let paused: VirtualMachineInstance =
            serde_json::from_value(fixture("vmi-vm1-paused.json")).unwrap();
        let running: VirtualMachineInstance =
            serde_json::from_value(fixture("vmi-vm1-running.json")).unwrap();
        assert!(paused.is_paused());
        assert!(!running.is_paused());
        assert_eq!(running.phase(), "Running");
        assert_eq!(running.vm_generation(), Some(1));
        assert_eq!(
            running.status.interfaces[0].mac.as_deref(),
            Some("52:54:00:6e:3a:1d")
        );
    }
}
