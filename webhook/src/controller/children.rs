//! The objects one opted-in VM owns, built as k8s-openapi types (pure).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::ServiceType;
use crate::names;

/// Who the VM is, as far as its children need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl VmRef {
    pub fn owner(&self) -> OwnerReference {
        OwnerReference {
            api_version: "kubevirt.io/v1".to_owned(),
            kind: "VirtualMachine".to_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            // blockOwnerDeletion would need update on virtualmachines/finalizers: not granted.
            block_owner_deletion: None,
        }
    }

    pub fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    names::WEBHOOK_NAME.to_owned(),
                ),
                (names::VM_LABEL.to_owned(), names::vm_label(&self.name)),
            ])),
            owner_references: Some(vec![self.owner()]),
            ..Default::default()
        }
    }
}

pub fn service_account(vm: &VmRef) -> ServiceAccount {
    ServiceAccount {
        metadata: vm.meta(names::service_account(&vm.name)),
        // The sidecar gets a projected token; nothing else in the Pod needs one.
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

pub fn role(vm: &VmRef) -> Role {
    Role {
        metadata: vm.meta(names::role(&vm.name)),
        rules: Some(
            names::VM_ROLE_RULES
                .iter()
                .map(|(group, resources, verbs)| PolicyRule {
                    api_groups: Some(vec![(*group).to_owned()]),
                    resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
                    verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
                    resource_names: Some(vec![vm.name.clone()]),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

pub fn role_binding(vm: &VmRef) -> RoleBinding {
    RoleBinding {
        metadata: vm.meta(names::role(&vm.name)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: names::role(&vm.name),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: names::service_account(&vm.name),
            namespace: Some(vm.namespace.clone()),
            ..Default::default()
        }]),
    }
}

pub fn service(vm: &VmRef, service_type: ServiceType) -> Service {
    let port = |name: &str, number: u16, protocol: &str| ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(number),
        protocol: Some(protocol.to_owned()),
        // By name: the sidecar may listen on high ports when the sysctl is off.
        target_port: Some(IntOrString::String(name.to_owned())),
        ..Default::default()
    };
    Service {
        metadata: vm.meta(names::service(&vm.name)),
        spec: Some(ServiceSpec {
            type_: Some(service_type.as_str().to_owned()),
            selector: Some(BTreeMap::from([
                (names::VM_LABEL.to_owned(), names::vm_label(&vm.name)),
                (
                    names::LAUNCHER_LABEL.to_owned(),
                    names::LAUNCHER_VALUE.to_owned(),
                ),
            ])),
            // A powered-off (paused) VM's Pod is NotReady; its BMC must still be reachable.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![
                port(names::IPMI_PORT_NAME, names::IPMI_PORT, "UDP"),
                port(names::REDFISH_PORT_NAME, names::REDFISH_PORT, "TCP"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn credentials_secret(vm: &VmRef, data: BTreeMap<String, Vec<u8>>) -> Secret {
    Secret {
        metadata: vm.meta(names::credentials_secret(&vm.name)),
        type_: Some("Opaque".to_owned()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}
