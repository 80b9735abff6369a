//! The injection decision on the captured launcher Pods.

mod common;

use common::{fixture, fixture_pod};
use k8s_openapi::api::core::v1::Pod;
use kubevirt_bmc_webhook::annotations;
use kubevirt_bmc_webhook::inject::{Decision, InjectionConfig, SkipReason, decide};
use kubevirt_bmc_webhook::names;
use serde_json::{Value, json};

fn patch_of(decision: Decision) -> (json_patch::Patch, Vec<String>) {
    match decision {
        Decision::Patch {
            patch, warnings, ..
        } => (patch, warnings),
        other => panic!("expected a patch, got {other:?}"),
    }
}

fn apply(pod: &Pod, patch: &json_patch::Patch) -> Pod {
    let mut doc = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut doc, patch).expect("the patch applies");
    serde_json::from_value(doc).expect("the patched Pod is a valid Pod")
}

fn bmc(pod: &Pod) -> &k8s_openapi::api::core::v1::Container {
    pod.spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == names::CONTAINER)
        .expect("bmc init container")
}

#[test]
fn opted_in_pod_gets_the_sidecar_appended_with_the_contract_env() {
    let pod = fixture_pod("pod-a-vm1-optin.json");
    let (patch, warnings) = patch_of(decide(&pod, &InjectionConfig::test()));
    assert!(warnings.is_empty(), "{warnings:?}");
    let patched = apply(&pod, &patch);
    let spec = patched.spec.as_ref().unwrap();
    let inits: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["guest-console-log", "volumecontainerdisk", "bmc"]);
    assert_eq!(spec.containers[0].name, "compute");
    let c = bmc(&patched);
    assert_eq!(c.restart_policy.as_deref(), Some("Always"));
    assert_eq!(c.image.as_deref(), Some("example.org/kubevirt-bmc:dev"));
    assert_eq!(c.args.as_deref(), Some(&["serve".to_owned()][..]));
    let env: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .map(|e| {
            let source = e.value.clone().unwrap_or_else(|| {
                e.value_from
                    .as_ref()
                    .unwrap()
                    .field_ref
                    .as_ref()
                    .unwrap()
                    .field_path
                    .clone()
            });
            (e.name.clone(), source)
        })
        .collect();
    for expected in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("VM_NAME", "metadata.annotations['kubevirt.io/domain']"),
        ("POD_NAME", "metadata.name"),
        ("POD_IP", "status.podIP"),
        ("KUBEVIRT_BMC_IPMI_PORT", "623"),
        ("KUBEVIRT_BMC_REDFISH_PORT", "443"),
        ("KUBEVIRT_BMC_HEALTH_LISTEN", "0.0.0.0:8623"),
        (
            "KUBEVIRT_BMC_CREDENTIALS_DIR",
            "/etc/kubevirt-bmc/credentials",
        ),
    ] {
        assert!(
            env.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "missing {expected:?} in {env:?}"
        );
    }
    let ports: Vec<_> = c
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap(),
                p.container_port,
                p.protocol.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("ipmi".to_owned(), 623, "UDP".to_owned()),
            ("redfish".to_owned(), 443, "TCP".to_owned()),
            ("health".to_owned(), 8623, "TCP".to_owned())
        ]
    );
    let resources = c.resources.as_ref().unwrap();
    assert_eq!(resources.requests, resources.limits);
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(sc.run_as_user, None, "the Pod's runAsUser 107 applies");
    let readiness = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    let liveness = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    assert_eq!(spec.service_account_name.as_deref(), Some("vm1-bmc"));
    // The token is mounted in the sidecar only.
    for other in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let has_token = other
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == names::TOKEN_VOLUME);
        assert_eq!(has_token, other.name == "bmc", "{}", other.name);
    }
    let volumes = spec.volumes.as_ref().unwrap();
    let creds = volumes
        .iter()
        .find(|v| v.name == names::CREDENTIALS_VOLUME)
        .unwrap();
    assert_eq!(
        creds.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("vm1-bmc-credentials")
    );
    let sysctls = spec
        .security_context
        .as_ref()
        .unwrap()
        .sysctls
        .as_ref()
        .unwrap();
    assert_eq!(sysctls[0].name, "net.ipv4.ip_unprivileged_port_start");
    assert_eq!(sysctls[0].value, "0");
    assert_eq!(
        patched.metadata.annotations.as_ref().unwrap()[annotations::INJECTED],
        "true"
    );
}

/// The ops the real API server accepted, in the same order and on the same paths, plus our stamp.
#[test]
fn patch_has_the_shape_the_api_server_accepted() {
    let pod = fixture_pod("pod-a-vm1-optin.json");
    let (patch, _) = patch_of(decide(&pod, &InjectionConfig::test()));
    let ours = serde_json::to_value(&patch).unwrap();
    let accepted = fixture("jsonpatch-vm1-injected.json");
    let paths = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|op| {
                (
                    op["op"].as_str().unwrap().to_owned(),
                    op["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mut expected = paths(&accepted);
    expected.push((
        "add".to_owned(),
        "/metadata/annotations/bmc.kubevirt.io~1injected".to_owned(),
    ));
    assert_eq!(paths(&ours), expected);
    // Volumes, service account and sysctl are the accepted values verbatim.
    for i in 1..5 {
        assert_eq!(ours[i]["value"], accepted[i]["value"], "op {i}");
    }
    // The container differs only where the contract moved on from the capture: probes on the
    // plain-HTTP health port, the contract's env, the `serve` command.
    let (c, a) = (&ours[0]["value"], &accepted[0]["value"]);
    for key in [
        "name",
        "image",
        "imagePullPolicy",
        "restartPolicy",
        "resources",
        "volumeMounts",
        "terminationMessagePolicy",
    ] {
        assert_eq!(c[key], a[key], "{key}");
    }
    assert_eq!(c["securityContext"], a["securityContext"]);
}

#[test]
fn patch_applies_to_every_opted_in_capture() {
    for name in [
        "pod-a-vm1-optin.json",
        "pod-e-vm1-migration-target.json",
        "pod-f-vm4-legacy-containerdisk.json",
    ] {
        let pod = fixture_pod(name);
        let (patch, _) = patch_of(decide(&pod, &InjectionConfig::test()));
        let patched = apply(&pod, &patch);
        let vm = &pod.metadata.annotations.as_ref().unwrap()["kubevirt.io/domain"];
        assert_eq!(
            patched.spec.as_ref().unwrap().service_account_name,
            Some(format!("{vm}-bmc")),
            "{name}"
        );
        assert_eq!(
            patched
                .spec
                .as_ref()
                .unwrap()
                .init_containers
                .as_ref()
                .unwrap()
                .last()
                .unwrap()
                .name,
            "bmc",
            "{name}: appended, never prepended"
        );
        // Injecting the result again is a no-op.
        assert_eq!(
            decide(&patched, &InjectionConfig::test()),
            Decision::Skip(SkipReason::AlreadyInjected),
            "{name}"
        );
    }
}

#[test]
fn not_opted_in_bad_value_and_ephemeral_pods() {
    let config = InjectionConfig::test();
    assert_eq!(
        decide(&fixture_pod("pod-b-vm2-no-optin.json"), &config),
        Decision::Skip(SkipReason::NotOptedIn)
    );
    assert_eq!(
        decide(&fixture_pod("pod-d-vm1-ephemeral.json"), &config),
        Decision::Skip(SkipReason::EphemeralProvisioning)
    );
    match decide(&fixture_pod("pod-c-vm3-bad-value.json"), &config) {
        Decision::Deny(message) => assert_eq!(
            message,
            "annotation bmc.kubevirt.io/enabled=\"maybe\" is not valid: allowed values are \"true\" and \"false\""
        ),
        other => panic!("{other:?}"),
    }
}

fn with(mut pod: Pod, edit: impl FnOnce(&mut Value)) -> Pod {
    let mut doc = serde_json::to_value(&pod).unwrap();
    edit(&mut doc);
    pod = serde_json::from_value(doc).unwrap();
    pod
}

#[test]
fn missing_arrays_and_security_context_are_created_whole() {
    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        let spec = p["spec"].as_object_mut().unwrap();
        spec.remove("initContainers");
        spec.remove("volumes");
        spec.remove("securityContext");
    });
    let (patch, _) = patch_of(decide(&pod, &InjectionConfig::test()));
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(ops[0]["path"], "/spec/initContainers");
    assert!(ops[0]["value"].is_array());
    assert_eq!(ops[1]["path"], "/spec/volumes");
    assert_eq!(ops[2]["path"], "/spec/volumes/-");
    assert_eq!(ops[4]["path"], "/spec/securityContext");
    let patched = apply(&pod, &patch);
    let c = bmc(&patched);
    assert_eq!(
        c.security_context.as_ref().unwrap().run_as_user,
        Some(65532),
        "no Pod-level runAsUser: the sidecar names a non-root one"
    );
    let creds = patched.spec.as_ref().unwrap().volumes.as_ref().unwrap()[1].clone();
    assert_eq!(creds.secret.unwrap().default_mode, Some(0o444));
}

#[test]
fn existing_sysctls_get_ours_appended_or_a_warning() {
    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        p["spec"]["securityContext"]["sysctls"] =
            json!([{"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"}]);
    });
    let (patch, _) = patch_of(decide(&pod, &InjectionConfig::test()));
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(ops[4]["path"], "/spec/securityContext/sysctls/-");
    let patched = apply(&pod, &patch);
    let sysctls = patched
        .spec
        .unwrap()
        .security_context
        .unwrap()
        .sysctls
        .unwrap();
    assert_eq!(sysctls.len(), 2);

    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        p["spec"]["securityContext"]["sysctls"] =
            json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "1024"}]);
    });
    let (patch, warnings) = patch_of(decide(&pod, &InjectionConfig::test()));
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("ip_unprivileged_port_start=\"1024\""),
        "{warnings:?}"
    );
    assert!(
        !serde_json::to_string(&patch).unwrap().contains("sysctls"),
        "the user's value is left alone"
    );
}

#[test]
fn without_the_sysctl_the_sidecar_uses_high_ports() {
    let config = InjectionConfig {
        low_port_sysctl: false,
        ..InjectionConfig::test()
    };
    let pod = fixture_pod("pod-a-vm1-optin.json");
    let (patch, _) = patch_of(decide(&pod, &config));
    assert!(!serde_json::to_string(&patch).unwrap().contains("sysctl"));
    let patched = apply(&pod, &patch);
    let c = bmc(&patched);
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [10623, 10443, 8623]);
    let env = c.env.as_ref().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "KUBEVIRT_BMC_IPMI_PORT" && e.value.as_deref() == Some("10623"))
    );
}

#[test]
fn other_service_account_is_kept_with_an_explaining_warning() {
    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        p["spec"]["serviceAccountName"] = json!("builder");
    });
    let (patch, warnings) = patch_of(decide(&pod, &InjectionConfig::test()));
    assert!(
        !serde_json::to_string(&patch)
            .unwrap()
            .contains("serviceAccountName")
    );
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("\"builder\"") && warnings[0].contains("--role=vm1-bmc"));
}

#[test]
fn non_launcher_and_opted_out_pods_are_skipped() {
    let config = InjectionConfig::test();
    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        p["metadata"]["labels"]["kubevirt.io"] = json!("something-else");
    });
    assert_eq!(
        decide(&pod, &config),
        Decision::Skip(SkipReason::NotLauncher)
    );
    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        p["metadata"]["annotations"]["bmc.kubevirt.io/enabled"] = json!("false");
    });
    assert_eq!(decide(&pod, &config), Decision::Skip(SkipReason::OptedOut));
}

#[test]
fn a_volume_name_clash_is_denied_with_the_name() {
    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        p["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "bmc-token", "emptyDir": {}}));
    });
    match decide(&pod, &InjectionConfig::test()) {
        Decision::Deny(m) => assert!(m.contains("\"bmc-token\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Admission reads a light view of the Pod; it must decide exactly as the full Pod does.
#[test]
fn the_light_pod_view_decides_like_the_full_pod() {
    use kubevirt_bmc_webhook::inject::decide_launcher;
    use kubevirt_bmc_webhook::launcher_pod::LauncherPod;
    for name in [
        "pod-a-vm1-optin.json",
        "pod-b-vm2-no-optin.json",
        "pod-c-vm3-bad-value.json",
        "pod-d-vm1-ephemeral.json",
        "pod-e-vm1-migration-target.json",
        "pod-f-vm4-legacy-containerdisk.json",
        "pod-vm1-injected.json",
    ] {
        let light: LauncherPod = serde_json::from_value(fixture(name)).unwrap();
        assert_eq!(
            decide_launcher(&light, &InjectionConfig::test()),
            decide(&fixture_pod(name), &InjectionConfig::test()),
            "{name}"
        );
    }
}

/// Found by the admission fuzz target: an opted-in Pod with no spec (absent or null) got a
/// patch adding under /spec, which the API server cannot apply (500 "doc is missing path").
#[test]
fn an_opted_in_pod_without_a_spec_is_denied_not_given_a_patch_that_cannot_apply() {
    use kubevirt_bmc_webhook::admission;
    for spec in [None, Some(Value::Null)] {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "virt-launcher-vm1-",
                "labels": {"kubevirt.io": "virt-launcher"},
                "annotations": {"bmc.kubevirt.io/enabled": "true", "kubevirt.io/domain": "vm1"},
            },
        });
        if let Some(spec) = spec {
            pod["spec"] = spec;
        }
        let review = json!({
            "kind": "AdmissionReview",
            "apiVersion": "admission.k8s.io/v1",
            "request": {
                "uid": "7c0c5e0e-0000-4000-8000-000000000001",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "userInfo": {},
                "object": pod,
            },
        });
        let (review, outcome) = admission::mutate_pods(
            &serde_json::to_vec(&review).unwrap(),
            &InjectionConfig::test(),
        );
        let response = review.response.unwrap();
        assert_eq!(outcome, "denied", "{pod}");
        assert!(!response.allowed);
        assert!(response.patch.is_none());
        assert!(
            response.result.message.contains("no spec"),
            "{}",
            response.result.message
        );
    }
}
