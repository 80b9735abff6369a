//! Every YAML document under manifests/ parses into its Kubernetes type, and names, ports,
//! paths and RBAC agree with the code's constants. Also: certs/generate.sh makes a certificate
//! the webhook serves and a client verifies for the Service's DNS name.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubevirt_bmc_webhook::names;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// (file, document) for every document of every YAML file.
fn documents() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&root().join("manifests"), &mut files);
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in parsed.into_iter().filter(|d| !d.is_null()) {
            docs.push((file.clone(), doc));
        }
    }
    docs
}

fn typed<T: serde::de::DeserializeOwned>(file: &Path, doc: &Value) -> T {
    serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{}: {} does not parse: {e}", file.display(), doc["kind"]))
}

#[derive(Default)]
struct Install {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    pdbs: Vec<PodDisruptionBudget>,
    services: Vec<Service>,
    mutating: Vec<(PathBuf, MutatingWebhookConfiguration)>,
    validating: Vec<ValidatingWebhookConfiguration>,
    cert_manager: Vec<Value>,
    kustomizations: Vec<(PathBuf, Value)>,
    json_patches: Vec<(PathBuf, Value)>,
}

fn install() -> Install {
    let mut i = Install::default();
    for (file, doc) in documents() {
        if doc.is_array() {
            i.json_patches.push((file, doc));
            continue;
        }
        match doc["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no kind", file.display()))
        {
            "Namespace" => i.namespaces.push(typed(&file, &doc)),
            "ServiceAccount" => i.service_accounts.push(typed(&file, &doc)),
            "ClusterRole" => i.cluster_roles.push(typed(&file, &doc)),
            "ClusterRoleBinding" => i.cluster_role_bindings.push(typed(&file, &doc)),
            "Role" => i.roles.push(typed(&file, &doc)),
            "RoleBinding" => i.role_bindings.push(typed(&file, &doc)),
            "Deployment" => i.deployments.push(typed(&file, &doc)),
            "PodDisruptionBudget" => i.pdbs.push(typed(&file, &doc)),
            "Service" => i.services.push(typed(&file, &doc)),
            "MutatingWebhookConfiguration" => {
                let t = typed(&file, &doc);
                i.mutating.push((file, t))
            }
            "ValidatingWebhookConfiguration" => i.validating.push(typed(&file, &doc)),
            "Issuer" | "Certificate" => i.cert_manager.push(doc),
            "Kustomization" => i.kustomizations.push((file, doc)),
            other => panic!("{}: unexpected kind {other}", file.display()),
        }
    }
    i
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    }
}

#[test]
fn kustomizations_reference_files_that_exist() {
    let i = install();
    assert_eq!(
        i.kustomizations.len(),
        4,
        "manifests/, base and two overlays"
    );
    for (file, k) in &i.kustomizations {
        let dir = file.parent().unwrap();
        for r in k["resources"].as_array().into_iter().flatten() {
            let p = dir.join(r.as_str().unwrap());
            assert!(
                p.exists(),
                "{}: resource {} missing",
                file.display(),
                p.display()
            );
        }
        for p in k["patches"].as_array().into_iter().flatten() {
            let p = dir.join(p["path"].as_str().unwrap());
            assert!(
                p.exists(),
                "{}: patch {} missing",
                file.display(),
                p.display()
            );
        }
        for g in k["secretGenerator"].as_array().into_iter().flatten() {
            assert_eq!(g["name"], names::TLS_SECRET);
            assert_eq!(g["namespace"], names::INSTALL_NAMESPACE);
            let script = std::fs::read_to_string(root().join("certs/generate.sh")).unwrap();
            for f in g["files"].as_array().unwrap() {
                assert!(
                    script.contains(&format!("$out/{}", f.as_str().unwrap())),
                    "certs/generate.sh writes {f}"
                );
            }
        }
    }
    let top = &i
        .kustomizations
        .iter()
        .find(|(f, _)| f.parent().unwrap().ends_with("manifests"))
        .unwrap()
        .1;
    assert_eq!(
        top["resources"][0], "overlays/cert-manager",
        "cert-manager is the default install"
    );
}

#[test]
fn deployment_service_and_pdb_agree_with_the_code() {
    let i = install();
    assert_eq!(
        i.namespaces[0].metadata.name.as_deref(),
        Some(names::INSTALL_NAMESPACE)
    );
    assert_eq!(
        i.service_accounts[0].metadata.name.as_deref(),
        Some(names::WEBHOOK_NAME)
    );
    let d = &i.deployments[0];
    assert_eq!(d.metadata.name.as_deref(), Some(names::WEBHOOK_NAME));
    assert_eq!(
        d.metadata.namespace.as_deref(),
        Some(names::INSTALL_NAMESPACE)
    );
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(names::WEBHOOK_NAME)
    );
    let c = &pod.containers[0];
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("https"), i32::from(names::WEBHOOK_PORT))
    );
    let env: BTreeMap<_, _> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.clone()))
        .collect();
    assert_eq!(
        env["KUBEVIRT_BMC_WEBHOOK_LISTEN"].as_deref(),
        Some(format!("0.0.0.0:{}", names::WEBHOOK_PORT).as_str())
    );
    assert!(env.contains_key("KUBEVIRT_BMC_SIDECAR_IMAGE"));
    assert_eq!(
        env["KUBEVIRT_BMC_SIDECAR_IMAGE"], c.image,
        "the sidecar image is the webhook's own"
    );
    let mount = &c.volume_mounts.as_ref().unwrap()[0];
    let cert = env["KUBEVIRT_BMC_WEBHOOK_TLS_CERT"].clone().unwrap();
    assert!(
        cert.starts_with(&mount.mount_path),
        "{cert} under {}",
        mount.mount_path
    );
    let volume = &pod.volumes.as_ref().unwrap()[0];
    assert_eq!(volume.name, mount.name);
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some(names::TLS_SECRET)
    );
    for (probe, path) in [
        (&c.readiness_probe, "/readyz"),
        (&c.liveness_probe, "/healthz"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }
    let labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();

    let svc = &i.services[0];
    assert_eq!(svc.metadata.name.as_deref(), Some(names::WEBHOOK_NAME));
    let svc_spec = svc.spec.as_ref().unwrap();
    assert_eq!(svc_spec.selector.as_ref().unwrap(), &labels);
    let p = &svc_spec.ports.as_ref().unwrap()[0];
    assert_eq!(
        (p.port, p.target_port.clone()),
        (443, Some(IntOrString::String("https".into())))
    );

    let pdb = i.pdbs[0].spec.as_ref().unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert_eq!(
        pdb.selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &labels
    );
}

#[test]
fn webhook_configurations_agree_with_the_router() {
    let i = install();
    let (_, m) = i
        .mutating
        .iter()
        .find(|(f, _)| f.ends_with("base/webhooks.yaml"))
        .unwrap();
    assert_eq!(m.metadata.name.as_deref(), Some(names::WEBHOOK_NAME));
    let w = &m.webhooks.as_ref().unwrap()[0];
    assert_eq!(w.name, names::MUTATING_WEBHOOK);
    let svc = w.client_config.service.as_ref().unwrap();
    assert_eq!(
        (svc.name.as_str(), svc.namespace.as_str()),
        (names::WEBHOOK_NAME, names::INSTALL_NAMESPACE)
    );
    assert_eq!(svc.path.as_deref(), Some(names::MUTATE_PODS_PATH));
    assert_eq!(svc.port, Some(443));
    assert_eq!(
        w.object_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &BTreeMap::from([
            (
                names::LAUNCHER_LABEL.to_owned(),
                names::LAUNCHER_VALUE.to_owned()
            ),
            (
                names::OPT_IN_LABEL.to_owned(),
                names::OPT_IN_VALUE.to_owned()
            )
        ])
    );
    let r = &w.rules.as_ref().unwrap()[0];
    assert_eq!(r.operations.as_deref().unwrap(), ["CREATE"]);
    assert_eq!(r.resources.as_deref().unwrap(), ["pods"]);
    assert_eq!(w.side_effects, "None");
    assert_eq!(w.timeout_seconds, Some(5));
    assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(w.admission_review_versions, ["v1"]);

    let v = &i.validating[0].webhooks.as_ref().unwrap()[0];
    assert_eq!(v.name, names::VALIDATING_WEBHOOK);
    assert_eq!(
        v.client_config.service.as_ref().unwrap().path.as_deref(),
        Some(names::VALIDATE_VMS_PATH)
    );
    let r = &v.rules.as_ref().unwrap()[0];
    assert_eq!(r.api_groups.as_deref().unwrap(), ["kubevirt.io"]);
    assert_eq!(r.resources.as_deref().unwrap(), ["virtualmachines"]);
    assert_eq!(v.side_effects, "None");
}

#[test]
fn cluster_role_is_exactly_the_controllers_rules_and_covers_the_vm_role() {
    let i = install();
    let rules = i.cluster_roles[0].rules.clone().unwrap();
    let expected: Vec<PolicyRule> = names::CONTROLLER_RULES
        .iter()
        .map(|(g, r, v)| rule(g, r, v))
        .collect();
    assert_eq!(rules, expected);
    // RBAC refuses to grant what the granter lacks: every per-VM rule must be held.
    for (group, resources, verbs) in names::VM_ROLE_RULES {
        for resource in *resources {
            for verb in *verbs {
                assert!(
                    rules.iter().any(
                        |r| r.api_groups.as_ref().unwrap().iter().any(|g| g == group)
                            && r.resources.as_ref().unwrap().iter().any(|x| x == resource)
                            && r.verbs.iter().any(|v| v == verb)
                    ),
                    "ClusterRole lacks {verb} {group}/{resource}"
                );
            }
        }
    }
    let b = &i.cluster_role_bindings[0];
    assert_eq!(b.role_ref.name, names::WEBHOOK_NAME);
}

/// `kubectl auth can-i --as=system:serviceaccount:kubevirt-bmc:kubevirt-bmc-webhook get secrets
/// -n kube-system` must answer no: the ClusterRole (bound cluster-wide) reads no Secret, holds
/// no TokenRequest and no RBAC escalation, and every rule has its reason written next to it.
#[test]
fn the_controller_can_read_no_secret_and_mint_no_token() {
    let i = install();
    let rules = i.cluster_roles[0].rules.clone().unwrap();
    let allows = |resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups
                .as_ref()
                .unwrap()
                .iter()
                .any(|g| g.is_empty() || g == "*")
                && r.resources
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource || x == "*")
                && r.verbs.iter().any(|v| v == verb || v == "*")
        })
    };
    for verb in [
        "get",
        "list",
        "watch",
        "patch",
        "update",
        "delete",
        "deletecollection",
    ] {
        assert!(
            !allows("secrets", verb),
            "ClusterRole allows {verb} on secrets"
        );
    }
    assert!(allows("secrets", "create"));
    assert!(!allows("serviceaccounts/token", "create"));
    for r in &rules {
        for verb in ["escalate", "bind", "impersonate", "*"] {
            assert!(!r.verbs.iter().any(|v| v == verb), "{verb} in {r:?}");
        }
    }
    let text = std::fs::read_to_string(root().join("manifests/base/rbac.yaml")).unwrap();
    let rule_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("- apiGroups:"))
        .map(|(n, _)| n)
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    // The five per-VM rules share one comment; every other rule has its own.
    for (k, n) in rule_lines.iter().enumerate() {
        if (1..5).contains(&k) {
            continue;
        }
        assert!(
            lines[n - 1].trim_start().starts_with('#'),
            "rbac.yaml line {}: rule without its reason",
            n + 1
        );
    }
    let b = &i.cluster_role_bindings[0];
    let s = &b.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (s.name.as_str(), s.namespace.as_deref()),
        (names::WEBHOOK_NAME, Some(names::INSTALL_NAMESPACE))
    );
}

#[test]
fn cert_manager_overlay_issues_the_service_name_and_injects_the_ca() {
    let i = install();
    let cert = i
        .cert_manager
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == names::TLS_SECRET)
        .unwrap();
    assert_eq!(cert["spec"]["secretName"], names::TLS_SECRET);
    let dns = format!("{}.{}.svc", names::WEBHOOK_NAME, names::INSTALL_NAMESPACE);
    assert!(
        cert["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == dns.as_str())
    );
    // Issued by the CA Issuer whose Secret is the sidecars' CA, itself self-signed: the CA
    // that sidecars get to check the controller (the webhook Secret's ca.crt) is that
    // long-lived CA, not a serving certificate cert-manager replaces.
    let issuer = |name: &Value| {
        i.cert_manager
            .iter()
            .find(|d| d["kind"] == "Issuer" && &d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Issuer {name}"))
    };
    let ca_issuer = issuer(&cert["spec"]["issuerRef"]["name"]);
    assert_eq!(ca_issuer["spec"]["ca"]["secretName"], "kubevirt-bmc-ca");
    let ca = i
        .cert_manager
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == "kubevirt-bmc-ca")
        .unwrap();
    assert_eq!(ca["spec"]["isCA"], true);
    assert!(
        issuer(&ca["spec"]["issuerRef"]["name"])["spec"]
            .get("selfSigned")
            .is_some()
    );
    let (_, patch) = i
        .mutating
        .iter()
        .find(|(f, _)| f.ends_with("cert-manager/cainjector.yaml"))
        .unwrap();
    assert_eq!(
        patch.metadata.annotations.as_ref().unwrap()["cert-manager.io/inject-ca-from"],
        format!(
            "{}/{}",
            names::INSTALL_NAMESPACE,
            cert["metadata"]["name"].as_str().unwrap()
        )
    );
    let (_, cabundle) = i
        .json_patches
        .iter()
        .find(|(f, _)| f.ends_with("cabundle.yaml"))
        .unwrap();
    assert_eq!(cabundle[0]["path"], "/webhooks/0/clientConfig/caBundle");
}

#[tokio::test]
async fn generated_certificate_is_served_for_the_service_dns_name() {
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("bash")
        .arg(root().join("certs/generate.sh"))
        .args(["--out", out.path().to_str().unwrap(), "--days", "2"])
        .status()
        .expect("bash runs certs/generate.sh (openssl must be installed: run e2e/setup.sh)");
    assert!(status.success());
    let bundle = std::fs::read_to_string(out.path().join("cabundle.yaml")).unwrap();
    let patch: Vec<Value> = serde_saphyr::from_multiple::<Value>(&bundle)
        .unwrap()
        .pop()
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    use base64::Engine;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(patch[0]["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(ca_pem, std::fs::read(out.path().join("ca.crt")).unwrap());
    use rustls_pki_types::pem::PemObject;
    let ca = rustls_pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap();
    let server = common::tls::start(
        &out.path().join("tls.crt"),
        &out.path().join("tls.key"),
        Duration::from_secs(60),
    )
    .await;
    let name = format!("{}.{}.svc", names::WEBHOOK_NAME, names::INSTALL_NAMESPACE);
    let mut client = common::tls::Client::connect_as(server.addr, &ca, &name).await;
    let (status, _) = client.request("GET", "/healthz", Default::default()).await;
    assert_eq!(status, 200);
}

#[test]
fn the_injected_command_is_where_the_image_puts_the_sidecar() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let command = kubevirt_bmc_webhook::sidecar::SIDECAR_COMMAND;
    assert!(
        dockerfile.contains(&format!(" {command}\n")),
        "Dockerfile does not install {command}"
    );
}

/// The sidecars' CA (issue 12): the controller reads exactly one Secret, `kubevirt-bmc-ca` in
/// its own namespace, by name; every authenticated user may read the published CA certificate
/// and nothing else; cert-manager's overlay issues that Secret and tells the controller not to
/// make one; a TokenReview is all the ClusterRole gained.
#[test]
fn the_sidecar_ca_is_read_by_name_and_published_to_authenticated_users() {
    use kubevirt_bmc_contract::certificate::CA_NAME;
    let i = install();
    let role = |name: &str| {
        i.roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Role {name}"))
    };
    let ca = role("kubevirt-bmc-ca");
    assert_eq!(
        ca.metadata.namespace.as_deref(),
        Some(names::INSTALL_NAMESPACE)
    );
    for rule in ca.rules.as_ref().unwrap() {
        let resources = rule.resources.as_ref().unwrap();
        if resources.iter().any(|r| r == "secrets") {
            assert_eq!(rule.verbs, ["get"]);
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&[CA_NAME.to_owned()][..])
            );
        }
        if rule.verbs.iter().any(|v| v != "create") {
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&[CA_NAME.to_owned()][..]),
                "{rule:?} not limited by name"
            );
        }
    }
    let reader = role("kubevirt-bmc-ca-reader");
    assert_eq!(
        reader.rules.as_ref().unwrap(),
        &[PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![CA_NAME.into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]
    );
    let binding = |name: &str| {
        i.role_bindings
            .iter()
            .find(|b| b.role_ref.name == name)
            .unwrap_or_else(|| panic!("no RoleBinding of {name}"))
    };
    let subject = &binding("kubevirt-bmc-ca-reader").subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("Group", "system:authenticated")
    );
    let subject = &binding("kubevirt-bmc-ca").subjects.as_ref().unwrap()[0];
    assert_eq!(subject.name, names::WEBHOOK_NAME);
    let issued = i
        .cert_manager
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == CA_NAME)
        .expect("the cert-manager overlay issues the CA");
    assert_eq!(issued["spec"]["isCA"], true);
    let (_, no_create) = i
        .json_patches
        .iter()
        .find(|(f, _)| f.ends_with("cert-manager/ca-create.yaml"))
        .unwrap();
    assert_eq!(no_create[0]["value"]["name"], "KUBEVIRT_BMC_CA_CREATE");
    assert_eq!(no_create[0]["value"]["value"], "false");
    let env = i.deployments[0]
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    for name in [
        "KUBEVIRT_BMC_ALLOW_EXTERNAL_SERVICES",
        "KUBEVIRT_BMC_SIDECAR_CERTIFICATE_URL",
        "KUBEVIRT_BMC_SIDECAR_CERTIFICATE_URL_CA",
    ] {
        assert!(
            env.iter().any(|e| e.name == name),
            "Deployment lacks {name}"
        );
    }
}
