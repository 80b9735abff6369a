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
    // Its own user, whatever the Pod's (was: none, inheriting the Pod's; see the root-VMI test).
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.run_as_group, Some(65532));
    assert_eq!(sc.run_as_non_root, Some(true));
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
    // The Pod keeps the account KubeVirt gave it (was: rewritten to vm1-bmc, the bug).
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
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
    assert_eq!(creds.secret.as_ref().unwrap().optional, Some(true));
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
    // The capture's serviceAccountName op was the bug (issue 12): the Pod's account is never
    // ours to change. Every other op is on the same path, in the same order.
    let mut expected: Vec<_> = paths(&accepted)
        .into_iter()
        .filter(|(_, path)| path != "/spec/serviceAccountName")
        .collect();
    expected.push((
        "add".to_owned(),
        "/metadata/annotations/bmc.kubevirt.io~1injected".to_owned(),
    ));
    assert_eq!(paths(&ours), expected);
    // The sysctl is the accepted value verbatim. The volumes moved on from the capture where it
    // was the bug: the token is the `<vm>-bmc-token` Secret instead of the Pod account's
    // projected token, and both volumes are optional.
    assert_eq!(ours[3]["value"], accepted[4]["value"]);
    assert_eq!(ours[1]["value"]["secret"]["secretName"], "vm1-bmc-token");
    assert_eq!(
        ours[2]["value"]["secret"]["secretName"],
        accepted[2]["value"]["secret"]["secretName"]
    );
    // The container differs only where the contract moved on from the capture: probes on the
    // plain-HTTP health port, the contract's env, the `serve` command.
    let (c, a) = (&ours[0]["value"], &accepted[0]["value"]);
    for key in [
        "name",
        "image",
        "imagePullPolicy",
        "restartPolicy",
        "resources",
        "terminationMessagePolicy",
    ] {
        assert_eq!(c[key], a[key], "{key}");
    }
    assert_eq!(c["volumeMounts"][1], a["volumeMounts"][1]);
    assert_eq!(
        c["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubevirt-bmc/serviceaccount"
    );
    // The captured context plus the sidecar's own user and group (issue 12, section 3).
    let mut context = a["securityContext"].clone();
    context["runAsUser"] = json!(65532);
    context["runAsGroup"] = json!(65532);
    assert_eq!(c["securityContext"], context);
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
        assert_eq!(
            patched.spec.as_ref().unwrap().service_account_name,
            pod.spec.as_ref().unwrap().service_account_name,
            "{name}: the Pod's account is left alone"
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
    assert_eq!(ops[3]["path"], "/spec/securityContext");
    let patched = apply(&pod, &patch);
    let c = bmc(&patched);
    assert_eq!(
        c.security_context.as_ref().unwrap().run_as_user,
        Some(65532),
        "the sidecar names its own non-root user"
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
    assert_eq!(ops[3]["path"], "/spec/securityContext/sysctls/-");
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

/// The opted-in captures plus the three renderings that hand the Pod's token to the guest or
/// to a proxy (kubevirt pkg/virt-controller/services/rendervolumes.go: a `serviceAccount` volume
/// sets the Pod's account and automounts its token; virt-launcher copies it into an ISO).
fn identity_cases() -> Vec<(String, Pod)> {
    let mut cases: Vec<(String, Pod)> = [
        "pod-a-vm1-optin.json",
        "pod-e-vm1-migration-target.json",
        "pod-f-vm4-legacy-containerdisk.json",
    ]
    .iter()
    .map(|n| ((*n).to_owned(), fixture_pod(n)))
    .collect();
    let base = fixture_pod("pod-a-vm1-optin.json");
    cases.push((
        "serviceAccount volume".into(),
        with(base.clone(), |p| {
            p["spec"]["serviceAccountName"] = json!("default");
            p["spec"]["automountServiceAccountToken"] = json!(true);
            p["spec"]["containers"][0]["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "default-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}));
        }),
    ));
    cases.push((
        "Istio injection".into(),
        with(base.clone(), |p| {
            p["metadata"]["annotations"]["sidecar.istio.io/inject"] = json!("true");
            p["spec"]["automountServiceAccountToken"] = json!(true);
        }),
    ));
    cases.push((
        "automountServiceAccountToken: true with another account".into(),
        with(base, |p| {
            p["spec"]["serviceAccountName"] = json!("builder");
            p["spec"]["automountServiceAccountToken"] = json!(true);
        }),
    ));
    cases
}

/// Issue 12 §1: the patch never changes the Pod's account, its automount, or any volume or
/// mount of another container, and the `<vm>-bmc` token reaches `bmc` only, away from the
/// default token path. Failed before: every capture got `serviceAccountName: <vm>-bmc`.
#[test]
fn the_pods_identity_is_never_changed_and_the_bmc_token_reaches_bmc_only() {
    for (name, pod) in identity_cases() {
        let (patch, _) = patch_of(decide(&pod, &InjectionConfig::test()));
        let text = serde_json::to_string(&patch).unwrap();
        assert!(!text.contains("serviceAccountName"), "{name}: {text}");
        assert!(!text.contains("automountServiceAccountToken"), "{name}");
        let patched = apply(&pod, &patch);
        let (before, after) = (pod.spec.as_ref().unwrap(), patched.spec.as_ref().unwrap());
        assert_eq!(
            after.service_account_name, before.service_account_name,
            "{name}"
        );
        assert_eq!(
            after.automount_service_account_token, before.automount_service_account_token,
            "{name}"
        );
        // Every volume of the Pod is kept verbatim, ours come after them.
        let (vb, va) = (
            before.volumes.clone().unwrap(),
            after.volumes.clone().unwrap(),
        );
        assert_eq!(va[..vb.len()], vb[..], "{name}");
        for c in before
            .containers
            .iter()
            .chain(before.init_containers.iter().flatten())
        {
            let now = after
                .containers
                .iter()
                .chain(after.init_containers.iter().flatten())
                .find(|x| x.name == c.name)
                .unwrap();
            assert_eq!(now, c, "{name}: container {} changed", c.name);
        }
        let vm = &pod.metadata.annotations.as_ref().unwrap()["kubevirt.io/domain"];
        let token_secret = format!("{vm}-bmc-token");
        let token_volumes: Vec<_> = va
            .iter()
            .filter(|v| {
                serde_json::to_string(v)
                    .unwrap()
                    .contains(&format!("\"{token_secret}\""))
            })
            .collect();
        assert_eq!(token_volumes.len(), 1, "{name}");
        let token = token_volumes[0];
        assert_eq!(token.name, names::TOKEN_VOLUME);
        assert_eq!(
            token.secret.as_ref().unwrap().optional,
            Some(true),
            "{name}"
        );
        for c in after
            .containers
            .iter()
            .chain(after.init_containers.iter().flatten())
        {
            let mounts: Vec<_> = c
                .volume_mounts
                .iter()
                .flatten()
                .filter(|m| m.name == token.name)
                .collect();
            if c.name == "bmc" {
                assert_eq!(mounts.len(), 1, "{name}");
                assert_ne!(
                    mounts[0].mount_path, "/var/run/secrets/kubernetes.io/serviceaccount",
                    "{name}: never the default token path"
                );
                assert_eq!(mounts[0].mount_path, names::TOKEN_MOUNT);
                let env = c.env.as_ref().unwrap();
                assert!(env.iter().any(|e| e.name == "KUBEVIRT_BMC_TOKEN_DIR"
                    && e.value.as_deref() == Some(names::TOKEN_MOUNT)));
            } else {
                assert!(mounts.is_empty(), "{name}: {} gets the BMC token", c.name);
            }
        }
    }
}

/// Issue 12 §3: KubeVirt renders a root VMI's Pod with `runAsUser: 0` and nothing else
/// (kubevirt pkg/virt-controller/services/template.go `computePodSecurityContext`, `Root`
/// feature gate); derived from the captured pod-a by replacing its non-root context with that.
/// The sidecar's `runAsNonRoot` then needs its own user, or the kubelet refuses the container
/// ("container's runAsUser breaks non-root policy") and, native sidecar, `compute` never starts.
#[test]
fn a_root_vmi_pod_gets_a_sidecar_with_its_own_non_root_user() {
    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        p["spec"]["securityContext"] = json!({"runAsUser": 0});
    });
    let (patch, _) = patch_of(decide(&pod, &InjectionConfig::test()));
    let patched = apply(&pod, &patch);
    let pod_context = patched
        .spec
        .as_ref()
        .unwrap()
        .security_context
        .clone()
        .unwrap();
    assert_eq!(
        pod_context.run_as_user,
        Some(0),
        "the Pod's context is KubeVirt's"
    );
    let c = bmc(&patched);
    let sc = c.security_context.as_ref().unwrap();
    // The kubelet's check (kuberuntime_container_linux.go verifyRunAsNonRoot): the effective
    // user is the container's runAsUser, else the Pod's; runAsNonRoot refuses 0.
    let effective_uid = sc.run_as_user.or(pod_context.run_as_user);
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(effective_uid, Some(65532));
    assert_eq!(sc.run_as_group.or(pod_context.run_as_group), Some(65532));
    // No fsGroup in a root Pod: the Secret files must be world-readable for uid 65532.
    let volumes = patched.spec.as_ref().unwrap().volumes.clone().unwrap();
    for v in volumes.iter().filter(|v| v.name.starts_with("bmc-")) {
        assert_eq!(
            v.secret.as_ref().unwrap().default_mode,
            Some(0o444),
            "{}",
            v.name
        );
    }
}

/// A user-named Secret is mounted by the kubelet (projected with our session key), never read
/// by the controller; the sidecar is told which one, to check its owner's consent.
#[test]
fn a_user_named_secret_is_projected_with_its_consent_key() {
    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        p["metadata"]["annotations"]["bmc.kubevirt.io/credentials-secret"] = json!("team-bmc");
    });
    let (patch, warnings) = patch_of(decide(&pod, &InjectionConfig::test()));
    assert!(warnings.is_empty(), "{warnings:?}");
    let patched = apply(&pod, &patch);
    let volumes = patched.spec.as_ref().unwrap().volumes.clone().unwrap();
    let creds = volumes
        .iter()
        .find(|v| v.name == names::CREDENTIALS_VOLUME)
        .unwrap();
    let sources = creds.projected.as_ref().unwrap().sources.clone().unwrap();
    let user = sources[0].secret.as_ref().unwrap();
    assert_eq!(user.name, "team-bmc");
    assert_eq!(user.optional, Some(true));
    let keys: Vec<_> = user
        .items
        .iter()
        .flatten()
        .map(|i| (i.key.as_str(), i.path.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("username", "username"),
            ("password", "password"),
            ("kubevirt-bmc-vms", "consent-vms")
        ]
    );
    let ours = sources[1].secret.as_ref().unwrap();
    assert_eq!(ours.name, "vm1-bmc-credentials");
    let env = bmc(&patched).env.clone().unwrap();
    assert!(env.iter().any(
        |e| e.name == "KUBEVIRT_BMC_USER_CREDENTIALS" && e.value.as_deref() == Some("team-bmc")
    ));

    // A bad name would make the API server refuse the Pod: left out with a warning instead.
    let pod = with(fixture_pod("pod-a-vm1-optin.json"), |p| {
        p["metadata"]["annotations"]["bmc.kubevirt.io/credentials-secret"] = json!("Bad_Name");
    });
    let (patch, warnings) = patch_of(decide(&pod, &InjectionConfig::test()));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(!serde_json::to_string(&patch).unwrap().contains("Bad_Name"));
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

#[test]
fn the_installations_egress_ranges_reach_the_sidecar_env_and_none_means_no_env() {
    use kubevirt_bmc_contract::egress::{ALLOW_ENV, DENY_ENV, EgressPolicy, parse_list};
    let pod = fixture_pod("pod-a-vm1-optin.json");
    let env_of = |config: &InjectionConfig| {
        let (patch, _) = patch_of(decide(&pod, config));
        let patched = apply(&pod, &patch);
        bmc(&patched)
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let plain = env_of(&InjectionConfig::test());
    assert!(!plain.contains_key(ALLOW_ENV) && !plain.contains_key(DENY_ENV));
    let config = InjectionConfig {
        egress: EgressPolicy::new(
            parse_list("10.96.7.20/32").unwrap(),
            parse_list("10.96.0.0/12,10.244.0.0/16").unwrap(),
        ),
        ..InjectionConfig::test()
    };
    let env = env_of(&config);
    assert_eq!(env[ALLOW_ENV].as_deref(), Some("10.96.7.20/32"));
    assert_eq!(env[DENY_ENV].as_deref(), Some("10.96.0.0/12,10.244.0.0/16"));
}
