//! `kubectl bmc hosts`: what an installer needs to know about a VM's BMC, in the installer's
//! own format. Pure: the caller has read the VM and its credentials.
//!
//! * Metal3: a `BareMetalHost` (metal3.io/v1alpha1) and the Secret its `bmc.credentialsName`
//!   names, as metal3-io/baremetal-operator `config/crd/bases/metal3.io_baremetalhosts.yaml`
//!   and `docs/api.md` (BMC address formats) define them.
//! * OpenShift: `platform.baremetal.hosts` entries of an install-config, as openshift/installer
//!   `pkg/types/baremetal/platform.go` (`Host`, `BMC`, `BootMode`) defines them.
//! * Rufio: a `Machine` (bmc.tinkerbell.org/v1alpha1) and the Secret its
//!   `connection.authSecretRef` names, as tinkerbell/rufio
//!   `config/crd/bases/bmc.tinkerbell.org_machines.yaml` defines them.

use base64::Engine;
use kubevirt_bmc_contract::names;
use serde_json::{Value, json};

use crate::vm::BootMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Metal3,
    Openshift,
    Rufio,
}

/// Which of the BMC's protocols the installer drives (Metal3 and OpenShift name one in the
/// address; Rufio's bmclib tries its providers in turn, so a Machine gets both ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `redfish-virtualmedia://`: power, boot device and virtual media over Redfish.
    Redfish,
    /// `ipmi://`: power and boot device over IPMI 2.0 (no virtual media).
    Ipmi,
}

/// One VM's BMC as an installer reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The VM's name: the host's name in every format.
    pub name: String,
    /// Where the generated objects go (Metal3 and Rufio look their Secret up there).
    pub target_namespace: String,
    /// Host name or IP of the BMC (by default the VM's `<vm>-bmc.<ns>.svc` Service).
    pub address: String,
    pub redfish_port: u16,
    pub ipmi_port: u16,
    pub protocol: Protocol,
    /// The BMC's Redfish certificate is one the installer can verify (a CA it trusts); the
    /// sidecar's own certificate is self-signed, so by default verification must be off.
    pub verify_certificate: bool,
    pub username: String,
    pub password: String,
    pub boot_mac: String,
    pub boot_mode: BootMode,
    /// install-config `role` (`master`, `worker`, `arbiter`); Metal3 and Rufio have none.
    pub role: Option<String>,
}

/// The Secret the generated objects refer to: a copy of the BMC credentials next to the host
/// object. Never the controller's own `<vm>-bmc-credentials` (see [`names::credentials_secret`]):
/// applying over it would drop its Redfish session key, and Metal3 labels the Secrets it uses.
pub fn auth_secret_name(vm: &str) -> String {
    format!("{vm}-bmc-auth")
}

impl Host {
    fn host_part(&self) -> String {
        // An IPv6 literal in a URL needs brackets.
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        }
    }

    /// The address in Metal3's (and so OpenShift's) URL form (baremetal-operator `docs/api.md`:
    /// `redfish-virtualmedia://<host>:<port>/<systemID>`, `ipmi://<host>:<port>`).
    pub fn bmc_url(&self) -> String {
        let host = self.host_part();
        match self.protocol {
            Protocol::Redfish => {
                let port = if self.redfish_port == names::REDFISH_PORT {
                    String::new()
                } else {
                    format!(":{}", self.redfish_port)
                };
                format!(
                    "redfish-virtualmedia://{host}{port}{}",
                    names::redfish_system_path(&self.name)
                )
            }
            Protocol::Ipmi => {
                if self.ipmi_port == names::IPMI_PORT {
                    format!("ipmi://{host}")
                } else {
                    format!("ipmi://{host}:{}", self.ipmi_port)
                }
            }
        }
    }

    /// Only HTTPS has a certificate to verify: IPMI gets no such field.
    fn disable_certificate_verification(&self) -> bool {
        self.protocol == Protocol::Redfish && !self.verify_certificate
    }

    fn secret(&self) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": auth_secret_name(&self.name), "namespace": self.target_namespace},
            "type": "Opaque",
            "data": {
                names::SECRET_USERNAME: b64(&self.username),
                names::SECRET_PASSWORD: b64(&self.password),
            },
        })
    }

    pub fn metal3(&self) -> Vec<Value> {
        let mut bmc = json!({
            "address": self.bmc_url(),
            "credentialsName": auth_secret_name(&self.name),
        });
        if self.disable_certificate_verification() {
            bmc["disableCertificateVerification"] = json!(true);
        }
        let host = json!({
            "apiVersion": "metal3.io/v1alpha1",
            "kind": "BareMetalHost",
            "metadata": {"name": self.name, "namespace": self.target_namespace},
            "spec": {
                // Required by the CRD; the BMC's power model makes "online" a running VMI.
                "online": true,
                "bmc": bmc,
                "bootMACAddress": self.boot_mac,
                "bootMode": self.boot_mode.as_str(),
            },
        });
        vec![self.secret(), host]
    }

    /// One `platform.baremetal.hosts` entry.
    pub fn openshift(&self) -> Value {
        let mut bmc = json!({
            "address": self.bmc_url(),
            "username": self.username,
            "password": self.password,
        });
        if self.disable_certificate_verification() {
            bmc["disableCertificateVerification"] = json!(true);
        }
        let mut host = json!({
            "name": self.name,
            "bmc": bmc,
            "bootMACAddress": self.boot_mac,
            "bootMode": self.boot_mode.as_str(),
        });
        if let Some(role) = &self.role {
            host["role"] = json!(role);
        }
        host
    }

    pub fn rufio(&self) -> Vec<Value> {
        let machine = json!({
            "apiVersion": "bmc.tinkerbell.org/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": self.name, "namespace": self.target_namespace},
            "spec": {"connection": {
                "host": self.address,
                "port": self.ipmi_port,
                "authSecretRef": {
                    "name": auth_secret_name(&self.name),
                    "namespace": self.target_namespace,
                },
                // Required by the CRD; bmclib's Redfish provider checks the certificate unless set.
                "insecureTLS": !self.verify_certificate,
                "providerOptions": {
                    "ipmitool": {"port": self.ipmi_port},
                    "redfish": {"port": self.redfish_port},
                },
            }},
        });
        vec![self.secret(), machine]
    }
}

/// The whole output for `hosts`: YAML documents ready for `kubectl apply -f -` (Metal3,
/// Rufio) or the install-config fragment to merge (OpenShift).
pub fn documents(format: Format, hosts: &[Host]) -> Vec<Value> {
    match format {
        Format::Metal3 => hosts.iter().flat_map(Host::metal3).collect(),
        Format::Rufio => hosts.iter().flat_map(Host::rufio).collect(),
        Format::Openshift => vec![json!({
            "platform": {"baremetal": {"hosts": hosts.iter().map(Host::openshift).collect::<Vec<_>>()}}
        })],
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write YAML: {0}")]
pub struct YamlError(String);

/// Documents as a YAML stream, `---` before each.
pub fn to_yaml(documents: &[Value]) -> Result<String, YamlError> {
    let mut out = String::new();
    for doc in documents {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(doc).map_err(|e| YamlError(e.to_string()))?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(protocol: Protocol) -> Host {
        Host {
            name: "vm1".into(),
            target_namespace: "metal3".into(),
            address: "vm1-bmc.vms.svc".into(),
            redfish_port: 443,
            ipmi_port: 623,
            protocol,
            verify_certificate: false,
            username: "admin".into(),
            password: "s3cret".into(),
            boot_mac: "52:54:00:12:34:56".into(),
            boot_mode: BootMode::Uefi,
            role: None,
        }
    }

    #[test]
    fn addresses_are_in_metal3s_url_forms() {
        assert_eq!(
            host(Protocol::Redfish).bmc_url(),
            "redfish-virtualmedia://vm1-bmc.vms.svc/redfish/v1/Systems/vm1"
        );
        assert_eq!(host(Protocol::Ipmi).bmc_url(), "ipmi://vm1-bmc.vms.svc");
        let mut h = host(Protocol::Redfish);
        h.address = "fd00::7".into();
        h.redfish_port = 30443;
        assert_eq!(
            h.bmc_url(),
            "redfish-virtualmedia://[fd00::7]:30443/redfish/v1/Systems/vm1"
        );
        let mut h = host(Protocol::Ipmi);
        h.ipmi_port = 31623;
        assert_eq!(h.bmc_url(), "ipmi://vm1-bmc.vms.svc:31623");
    }

    #[test]
    fn certificate_verification_is_disabled_only_for_a_self_signed_https_bmc() {
        let redfish = host(Protocol::Redfish).metal3();
        assert_eq!(
            redfish[1]["spec"]["bmc"]["disableCertificateVerification"],
            true
        );
        let ipmi = host(Protocol::Ipmi).metal3();
        assert!(
            ipmi[1]["spec"]["bmc"]
                .get("disableCertificateVerification")
                .is_none()
        );
        let mut verified = host(Protocol::Redfish);
        verified.verify_certificate = true;
        assert!(
            verified.openshift()["bmc"]
                .get("disableCertificateVerification")
                .is_none()
        );
        assert_eq!(
            verified.rufio()[1]["spec"]["connection"]["insecureTLS"],
            false
        );
    }

    #[test]
    fn the_secret_is_a_copy_never_the_controllers_own() {
        let docs = host(Protocol::Redfish).metal3();
        let secret = &docs[0];
        assert_eq!(secret["metadata"]["name"], "vm1-bmc-auth");
        assert_ne!(auth_secret_name("vm1"), names::credentials_secret("vm1"));
        assert_eq!(secret["data"]["username"], "YWRtaW4=");
        assert_eq!(secret["data"]["password"], "czNjcmV0");
        assert_eq!(docs[1]["spec"]["bmc"]["credentialsName"], "vm1-bmc-auth");
    }

    #[test]
    fn yaml_keeps_a_digits_only_mac_a_string() {
        let yaml = to_yaml(&documents(Format::Metal3, &[host(Protocol::Redfish)])).unwrap();
        let back: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1]["spec"]["bootMACAddress"], "52:54:00:12:34:56");
        assert_eq!(back[1]["spec"]["online"], true);
    }
}
