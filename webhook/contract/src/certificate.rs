//! The sidecar's serving certificate: which names it may carry, where it asks for it and what
//! it sends and gets back. The controller signs with the installation's CA (a Secret of
//! [`CA_NAME`] in its namespace) and publishes the CA certificate in the ConfigMap of the same
//! name, readable by every authenticated user, so clients verify the BMC instead of turning
//! verification off.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::names;

/// Secret (CA key and certificate) and ConfigMap (certificate only) in the controller's
/// namespace.
pub const CA_NAME: &str = "kubevirt-bmc-ca";
/// The ConfigMap's key with the PEM CA certificate (the key kube-root-ca.crt uses too).
pub const CA_CONFIGMAP_KEY: &str = "ca.crt";
/// Path of the controller's HTTPS server where a sidecar sends its CSR.
pub const SIGN_PATH: &str = "/bmc-certificate";
/// The URL of [`SIGN_PATH`], set by the webhook on the sidecar.
pub const SIGNER_URL_ENV: &str = "KUBEVIRT_BMC_CERTIFICATE_URL";
/// The PEM bundle the sidecar trusts for that URL (the webhook's serving CA).
pub const SIGNER_CA_ENV: &str = "KUBEVIRT_BMC_CERTIFICATE_URL_CA";
/// The cluster's DNS domain (kubelet `--cluster-domain`), set on both sides.
pub const CLUSTER_DOMAIN_ENV: &str = "KUBEVIRT_BMC_CLUSTER_DOMAIN";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// What a sidecar sends, with its ServiceAccount token as bearer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignRequest {
    pub namespace: String,
    pub vm: String,
    /// PKCS#10, PEM. Its subject alternative names are what is asked for; nothing else of
    /// the request is copied into the certificate.
    pub csr: String,
}

/// What the controller answers on success.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignResponse {
    /// The leaf, PEM.
    pub certificate: String,
    /// The CA that signed it, PEM (what the ConfigMap publishes).
    pub ca: String,
    /// Validity, Unix seconds, so the sidecar plans its renewal without parsing X.509.
    pub not_before: u64,
    pub not_after: u64,
}

/// The DNS names of the VM's Service, as cluster DNS answers them (kubernetes
/// `pkg/kubelet/network/dns/dns.go` search path: `<ns>.svc.<domain>`, `svc.<domain>`): a
/// certificate for these and the launcher Pod's IP is valid however a client in the cluster
/// names the BMC.
pub fn service_dns_names(vm: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    let service = names::service(vm);
    vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
    ]
}

/// What a sidecar asks for: the Service's names and the Pod's address.
pub fn requested_names(
    vm: &str,
    namespace: &str,
    cluster_domain: &str,
    pod_ip: Option<IpAddr>,
) -> (Vec<String>, Vec<IpAddr>) {
    (
        service_dns_names(vm, namespace, cluster_domain),
        pod_ip
            .into_iter()
            .filter(|ip| !ip.is_unspecified())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_the_service_name_of_the_vm() {
        assert_eq!(
            service_dns_names("vm1", "vms", "cluster.local"),
            [
                "vm1-bmc",
                "vm1-bmc.vms",
                "vm1-bmc.vms.svc",
                "vm1-bmc.vms.svc.cluster.local"
            ]
        );
        // A VM name that is no DNS label gets the derived Service name.
        let names = service_dns_names("1node", "vms", "example.org");
        assert!(names[0].starts_with("vm-1node-bmc-"), "{names:?}");
        assert!(names[3].ends_with(".vms.svc.example.org"), "{names:?}");
    }

    #[test]
    fn an_unspecified_pod_ip_is_not_asked_for() {
        let (_, ips) = requested_names(
            "vm1",
            "vms",
            "cluster.local",
            Some("0.0.0.0".parse().unwrap()),
        );
        assert!(ips.is_empty());
        let (_, ips) = requested_names(
            "vm1",
            "vms",
            "cluster.local",
            Some("10.1.2.3".parse().unwrap()),
        );
        assert_eq!(ips, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
    }
}
