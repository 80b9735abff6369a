//! Who may have which certificate: pure decisions over what the API server said about the
//! token (TokenReview), what the CSR asks for and where the VM's launcher Pods run.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use kubevirt_bmc_contract::certificate::service_dns_names;
use kubevirt_bmc_contract::names;

/// Why a request gets no certificate. The text goes to the client: it names what was asked,
/// never a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token was not accepted by the API server")]
    Unauthenticated,
    #[error("{user} is not a ServiceAccount; only a VM's BMC account may ask for its certificate")]
    NotAServiceAccount { user: String },
    #[error(
        "{user} may ask only for the certificate of its own VM; VM {namespace}/{vm} has account system:serviceaccount:{namespace}:{account}"
    )]
    OtherAccount {
        user: String,
        namespace: String,
        vm: String,
        account: String,
    },
    #[error("the request asks for no name and no address")]
    Empty,
    #[error("{name:?} is not a name of VM {vm}'s Service (allowed: {allowed})")]
    Name {
        name: String,
        vm: String,
        allowed: String,
    },
    #[error("{ip} is not the address of a launcher Pod of VM {vm}")]
    Address { ip: IpAddr, vm: String },
}

/// `system:serviceaccount:<namespace>:<name>` split, as apiserver's
/// `pkg/authentication/serviceaccount/util.go` `SplitUsername` does (a namespace and name are
/// DNS names, so neither holds a colon).
pub fn split_service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// What a CSR asks for, from its subject alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// The one rule: the account `<vm>-bmc` of the VM's namespace may have a certificate for the
/// names of the VM's Service and the addresses of the VM's launcher Pods, and nothing else.
pub fn authorize(
    user: &str,
    namespace: &str,
    vm: &str,
    asked: &Asked,
    pod_ips: &[IpAddr],
    cluster_domain: &str,
) -> Result<(), Refusal> {
    let Some((account_namespace, account)) = split_service_account(user) else {
        return Err(Refusal::NotAServiceAccount {
            user: user.to_owned(),
        });
    };
    let expected = names::service_account(vm);
    if account_namespace != namespace || account != expected {
        return Err(Refusal::OtherAccount {
            user: user.to_owned(),
            namespace: namespace.to_owned(),
            vm: vm.to_owned(),
            account: expected,
        });
    }
    if asked.dns.is_empty() && asked.ips.is_empty() {
        return Err(Refusal::Empty);
    }
    let allowed = service_dns_names(vm, namespace, cluster_domain);
    if let Some(name) = asked.dns.iter().find(|n| !allowed.contains(n)) {
        return Err(Refusal::Name {
            name: name.clone(),
            vm: vm.to_owned(),
            allowed: allowed.join(", "),
        });
    }
    if let Some(ip) = asked.ips.iter().find(|ip| !pod_ips.contains(ip)) {
        return Err(Refusal::Address {
            ip: *ip,
            vm: vm.to_owned(),
        });
    }
    Ok(())
}

/// The validity of a certificate issued at `now`: a few minutes back for clocks that are
/// slightly behind (cert-manager backdates the same way), `lifetime` ahead.
pub fn validity(now: SystemTime, lifetime: Duration) -> (SystemTime, SystemTime) {
    const BACKDATE: Duration = Duration::from_secs(300);
    (now - BACKDATE, now + lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "system:serviceaccount:vms:vm1-bmc";

    fn asked(dns: &[&str], ips: &[&str]) -> Asked {
        Asked {
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn pods() -> Vec<IpAddr> {
        vec!["10.244.1.7".parse().unwrap()]
    }

    #[test]
    fn the_vms_own_account_gets_its_service_names_and_pod_ip() {
        let all = asked(
            &[
                "vm1-bmc",
                "vm1-bmc.vms",
                "vm1-bmc.vms.svc",
                "vm1-bmc.vms.svc.cluster.local",
            ],
            &["10.244.1.7"],
        );
        assert_eq!(
            authorize(USER, "vms", "vm1", &all, &pods(), "cluster.local"),
            Ok(())
        );
        // A subset is fine too.
        let some = asked(&["vm1-bmc.vms.svc"], &[]);
        assert_eq!(
            authorize(USER, "vms", "vm1", &some, &pods(), "cluster.local"),
            Ok(())
        );
    }

    #[test]
    fn another_vms_account_is_refused() {
        let asked = asked(&["vm1-bmc.vms.svc"], &[]);
        let other = "system:serviceaccount:vms:vm2-bmc";
        let refusal = authorize(other, "vms", "vm1", &asked, &pods(), "cluster.local").unwrap_err();
        assert!(matches!(refusal, Refusal::OtherAccount { .. }), "{refusal}");
        // The same account name in another namespace is another account.
        let elsewhere = "system:serviceaccount:team:vm1-bmc";
        assert!(matches!(
            authorize(elsewhere, "vms", "vm1", &asked, &pods(), "cluster.local"),
            Err(Refusal::OtherAccount { .. })
        ));
        // A user, or the Pod's own account, is no BMC account.
        for user in [
            "alice",
            "system:serviceaccount:vms:default",
            "system:serviceaccount:vms",
        ] {
            assert!(
                authorize(user, "vms", "vm1", &asked, &pods(), "cluster.local").is_err(),
                "{user}"
            );
        }
    }

    #[test]
    fn names_and_addresses_of_other_vms_are_refused() {
        for (dns, ips) in [
            (vec!["vm2-bmc.vms.svc"], vec![]),
            (vec!["vm1-bmc.other.svc"], vec![]),
            (vec!["kubernetes.default.svc"], vec![]),
            (vec!["vm1-bmc.vms.svc.evil.example"], vec![]),
            (vec!["*.vms.svc"], vec![]),
            (vec![], vec!["10.244.1.8"]),
            (vec!["vm1-bmc"], vec!["127.0.0.1"]),
        ] {
            let asked = asked(&dns, &ips);
            let refusal =
                authorize(USER, "vms", "vm1", &asked, &pods(), "cluster.local").unwrap_err();
            assert!(
                matches!(refusal, Refusal::Name { .. } | Refusal::Address { .. }),
                "{dns:?} {ips:?}: {refusal}"
            );
        }
        // No Pod (not started yet, or deleted): no address is the VM's.
        let ip_only = asked(&[], &["10.244.1.7"]);
        assert!(matches!(
            authorize(USER, "vms", "vm1", &ip_only, &[], "cluster.local"),
            Err(Refusal::Address { .. })
        ));
        assert_eq!(
            authorize(
                USER,
                "vms",
                "vm1",
                &Asked::default(),
                &pods(),
                "cluster.local"
            ),
            Err(Refusal::Empty)
        );
    }

    #[test]
    fn a_derived_service_name_is_the_one_allowed() {
        let service = names::service("1node");
        let user = format!(
            "system:serviceaccount:vms:{}",
            names::service_account("1node")
        );
        let ok = asked(&[&format!("{service}.vms.svc")], &[]);
        assert_eq!(
            authorize(&user, "vms", "1node", &ok, &[], "cluster.local"),
            Ok(())
        );
        let plain = asked(&["1node-bmc.vms.svc"], &[]);
        assert!(authorize(&user, "vms", "1node", &plain, &[], "cluster.local").is_err());
    }

    #[test]
    fn service_account_user_names_split_as_the_apiserver_does() {
        assert_eq!(split_service_account(USER), Some(("vms", "vm1-bmc")));
        assert_eq!(split_service_account("system:serviceaccount::x"), None);
        assert_eq!(split_service_account("system:serviceaccount:a:b:c"), None);
        assert_eq!(split_service_account("system:node:n1"), None);
    }

    #[test]
    fn validity_is_backdated_and_ends_after_the_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (from, until) = validity(now, Duration::from_secs(3600));
        assert_eq!(now.duration_since(from).unwrap(), Duration::from_secs(300));
        assert_eq!(
            until.duration_since(now).unwrap(),
            Duration::from_secs(3600)
        );
    }
}
