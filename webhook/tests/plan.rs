//! The pure reconcile decision: VM + namespace + observed children -> writes.

mod common;

use std::collections::BTreeMap;

use common::fixture;
use kubevirt_bmc_webhook::annotations;
use kubevirt_bmc_webhook::annotations::Created;
use kubevirt_bmc_webhook::annotations::{ServiceType, Status};
use kubevirt_bmc_webhook::controller::children::{self, VmRef};
use kubevirt_bmc_webhook::controller::media::DvAction;
use kubevirt_bmc_webhook::controller::plan::{
    Fresh, Launcher, Observed, Plan, Policy, SecretsPlan, plan, secrets_to_create,
};
use kubevirt_bmc_webhook::names;
use serde_json::{Value, json};

fn vm_ref() -> VmRef {
    VmRef {
        name: "vm1".into(),
        namespace: "vms".into(),
        uid: "vm1-uid".into(),
    }
}

/// The captured vm1 as the user wrote it, before any opt-in: runStrategy Halted, no template
/// opt-in, no startStrategy.
fn fresh_vm(annotations: Value) -> Value {
    let mut vm = fixture("vm-vm1.json");
    vm["metadata"]["annotations"] = annotations;
    vm["metadata"]["resourceVersion"] = json!("100");
    vm["spec"]["runStrategy"] = json!("Halted");
    let t = vm["spec"]["template"].as_object_mut().unwrap();
    t["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(annotations::ENABLED);
    t["spec"].as_object_mut().unwrap().remove("startStrategy");
    vm.as_object_mut().unwrap().remove("status");
    pin_mac(&mut vm);
    vm
}

/// The boot NIC's MAC written into the template, as kubemacpool's VM webhook leaves it at
/// create (k8snetworkplumbingwg/kubemacpool pkg/webhook/virtualmachine/virtualmachine.go).
/// The captured vm1 has none (a cluster without kubemacpool).
fn pin_mac(vm: &mut Value) {
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] =
        json!("02:5a:12:00:00:01");
}

fn prepared_vm() -> Value {
    let mut vm = fixture("vm-vm1.json");
    vm["metadata"]["resourceVersion"] = json!("200");
    vm["metadata"]["annotations"] = json!({
        annotations::ENABLED: "true",
        annotations::ORIGINAL: "{\"runStrategy\":\"Halted\"}",
    });
    vm["spec"]["template"]["metadata"]["labels"] = json!({
        names::OPT_IN_LABEL: "true",
        names::VM_LABEL: "vm1",
    });
    pin_mac(&mut vm);
    vm
}

fn opted_in(
    p: Plan,
) -> (
    SecretsPlan,
    bool,
    Option<Value>,
    kubevirt_bmc_webhook::controller::media::MediaPlan,
    Vec<kubevirt_bmc_webhook::controller::plan::Note>,
) {
    match p {
        Plan::OptedIn {
            secrets,
            prepare,
            vm_patch,
            media,
            notes,
            ..
        } => (secrets, prepare, vm_patch, media, notes),
        other => panic!("expected OptedIn, got {other:?}"),
    }
}

fn status_of(patch: &Value) -> Status {
    serde_json::from_str(
        patch["metadata"]["annotations"][annotations::STATUS]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn a_vm_that_did_not_opt_in_is_left_alone() {
    let vm = fresh_vm(json!({}));
    assert_eq!(
        plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()),
        Plan::Nothing
    );
    let vm = fresh_vm(json!({annotations::ENABLED: "false"}));
    let mut observed = Observed::default();
    observed
        .namespace_labels
        .insert(annotations::ENABLED.into(), "true".into());
    assert_eq!(
        plan(&vm, &vm_ref(), &observed, &Fresh::test()),
        Plan::Nothing,
        "the VM's false beats the namespace"
    );
}

#[test]
fn opt_in_creates_credentials_and_prepares_the_vm_recording_originals() {
    let vm = fresh_vm(json!({annotations::ENABLED: "true"}));
    let (secret, prepare, patch, _, notes) =
        opted_in(plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()));
    assert!(prepare);
    assert_eq!(
        secret,
        SecretsPlan {
            credentials: BTreeMap::from([
                ("username".into(), b"admin".to_vec()),
                ("password".into(), b"generated-password".to_vec()),
                ("session-key".into(), b"generated-session-key".to_vec()),
            ]),
            created: Created::default(),
        }
    );
    let patch = patch.unwrap();
    assert_eq!(patch["metadata"]["resourceVersion"], "100");
    assert_eq!(patch["spec"]["runStrategy"], "Always");
    assert_eq!(patch["spec"]["template"]["spec"]["startStrategy"], "Paused");
    assert_eq!(
        patch["spec"]["template"]["metadata"]["annotations"][annotations::ENABLED],
        "true"
    );
    assert_eq!(
        patch["metadata"]["annotations"][annotations::ORIGINAL],
        "{\"runStrategy\":\"Halted\"}"
    );
    // KubeVirt copies these onto the launcher Pod: the webhook's objectSelector and the
    // Service's selector.
    assert_eq!(
        patch["spec"]["template"]["metadata"]["labels"],
        json!({names::OPT_IN_LABEL: "true", names::VM_LABEL: "vm1"})
    );
    let status = status_of(&patch);
    assert_eq!(status.service, "vm1-bmc.vms.svc");
    assert!(!status.ready);
    assert_eq!(status.reason, "waiting for the VM's launcher Pod");
    assert_eq!(notes[0].reason, "BmcPrepared");
}

#[test]
fn every_vm_name_gets_valid_object_names_recorded_on_its_status() {
    let long = |n: usize| format!("v{}", "x".repeat(n - 1));
    for name in ["1node".to_owned(), long(63), long(64), long(253)] {
        let vm_ref = VmRef {
            name: name.clone(),
            namespace: "vms".into(),
            uid: "uid".into(),
        };
        let mut vm = fresh_vm(json!({annotations::ENABLED: "true"}));
        vm["metadata"]["name"] = json!(name);
        let (_, prepare, patch, _, _) =
            opted_in(plan(&vm, &vm_ref, &Observed::default(), &Fresh::test()));
        assert!(prepare, "{name}");
        let patch = patch.unwrap();
        let status = status_of(&patch);
        let objects = status.objects.clone().expect("object names recorded");
        assert_eq!(objects, names::ObjectNames::of(&name));
        assert_eq!(status.service, format!("{}.vms.svc", objects.service));
        // A Service name is a DNS-1035 label; the label value at most 63 characters.
        let svc = &objects.service;
        assert!(
            svc.len() <= 63
                && svc.starts_with(|c: char| c.is_ascii_lowercase())
                && svc
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}: {svc}"
        );
        assert!(objects.label.len() <= 63, "{name}");
        assert_eq!(
            patch["spec"]["template"]["metadata"]["labels"][names::VM_LABEL],
            json!(objects.label)
        );
        // The children carry the same names and a valid label.
        let service = children::service(&vm_ref, ServiceType::ClusterIp);
        assert_eq!(service.metadata.name.as_ref(), Some(svc));
        assert_eq!(
            service.spec.unwrap().selector.unwrap()[names::VM_LABEL],
            objects.label
        );
        let sa = children::service_account(&vm_ref);
        assert_eq!(sa.metadata.name, Some(objects.service_account.clone()));
        assert!(objects.service_account.len() <= 253);
    }
}

#[test]
fn a_vm_prepared_before_the_labels_existed_gets_them() {
    let mut vm = prepared_vm();
    vm["spec"]["template"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let observed = Observed::default();
    let (_, _, patch, _, _) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    let patch = patch.unwrap();
    assert_eq!(
        patch["spec"]["template"]["metadata"]["labels"],
        json!({names::OPT_IN_LABEL: "true", names::VM_LABEL: "vm1"})
    );
    assert!(patch["spec"].get("runStrategy").is_none(), "{patch}");
}

#[test]
fn a_namespace_label_opts_every_vm_in() {
    let vm = fresh_vm(json!({}));
    let mut observed = Observed::default();
    observed
        .namespace_labels
        .insert(annotations::ENABLED.into(), "true".into());
    let (_, prepare, patch, _, _) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert!(prepare);
    assert_eq!(patch.unwrap()["spec"]["runStrategy"], "Always");
}

#[test]
fn a_prepared_vm_with_its_secret_and_ready_sidecar_reports_ready_and_changes_nothing_else() {
    let vm = prepared_vm();
    let observed = Observed {
        launcher: Some(Launcher {
            ip: Some("10.244.0.17".into()),
            injected: true,
            bmc_ready: true,
        }),
        ..Default::default()
    };
    let (_, _, patch, media, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    let patch = patch.unwrap();
    assert!(patch.get("spec").is_none(), "{patch}");
    let status = status_of(&patch);
    assert_eq!(
        status,
        Status {
            address: Some("10.244.0.17".into()),
            service: "vm1-bmc.vms.svc".into(),
            ready: true,
            reason: "ready".into(),
            objects: Some(names::ObjectNames::of("vm1")),
            warnings: Vec::new(),
        }
    );
    assert!(notes.is_empty());
    assert_eq!(media.data_volume, DvAction::None);

    // Level-triggered: with that status recorded, the next reconcile writes nothing.
    let mut vm = vm;
    vm["metadata"]["annotations"][annotations::STATUS] =
        patch["metadata"]["annotations"][annotations::STATUS].clone();
    let (_, _, patch, _, _) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert_eq!(patch, None);
}

#[test]
fn a_vm_halted_by_hand_is_reported_not_fought() {
    let mut vm = prepared_vm();
    vm["spec"]["runStrategy"] = json!("Halted");
    let observed = Observed::default();
    let (_, _, patch, _, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    let patch = patch.unwrap();
    assert!(patch["spec"].get("runStrategy").is_none(), "{patch}");
    assert!(status_of(&patch).reason.contains("stopped by hand"));
    assert_eq!(notes[0].reason, "VmHaltedByHand");
    assert!(notes[0].warning);
}

#[test]
fn a_running_vm_that_opts_in_is_told_to_restart() {
    let mut vm = fresh_vm(json!({annotations::ENABLED: "true"}));
    vm["spec"]["runStrategy"] = json!("Always");
    vm["status"] = json!({"created": true, "printableStatus": "Running"});
    let observed = Observed {
        launcher: Some(Launcher {
            ip: Some("10.0.0.5".into()),
            injected: false,
            bmc_ready: false,
        }),
        ..Default::default()
    };
    let (_, _, patch, _, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    let reasons: Vec<_> = notes.iter().map(|n| n.reason).collect();
    assert!(reasons.contains(&"RestartRequired"), "{reasons:?}");
    assert!(
        status_of(&patch.unwrap())
            .reason
            .contains("virtctl restart vm1")
    );
}

#[test]
fn a_deprecated_running_field_is_replaced_and_restored() {
    let mut vm = fresh_vm(json!({annotations::ENABLED: "true"}));
    let spec = vm["spec"].as_object_mut().unwrap();
    spec.remove("runStrategy");
    spec.insert("running".into(), json!(false));
    let (_, _, patch, _, _) = opted_in(plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()));
    let patch = patch.unwrap();
    assert_eq!(patch["spec"]["running"], Value::Null);
    assert!(patch["spec"].as_object().unwrap().contains_key("running"));
    assert_eq!(
        patch["metadata"]["annotations"][annotations::ORIGINAL],
        "{\"running\":false}"
    );

    let mut vm = prepared_vm();
    vm["metadata"]["annotations"] =
        json!({annotations::ENABLED: "false", annotations::ORIGINAL: "{\"running\":false}"});
    match plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()) {
        Plan::OptOut { vm_patch } => {
            assert_eq!(vm_patch["spec"]["running"], false);
            assert_eq!(vm_patch["spec"]["runStrategy"], Value::Null);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn opt_out_restores_the_originals_and_removes_our_annotations() {
    let mut vm = prepared_vm();
    vm["metadata"]["annotations"] = json!({
        annotations::ENABLED: "false",
        annotations::ORIGINAL: "{\"runStrategy\":\"Manual\",\"startStrategy\":\"Paused\"}",
        annotations::STATUS: "{}",
    });
    match plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()) {
        Plan::OptOut { vm_patch } => {
            assert_eq!(vm_patch["spec"]["runStrategy"], "Manual");
            assert_eq!(
                vm_patch["spec"]["template"]["spec"]["startStrategy"],
                "Paused"
            );
            assert_eq!(
                vm_patch["spec"]["template"]["metadata"]["annotations"][annotations::ENABLED],
                Value::Null
            );
            // The labels go too: the next launcher Pod is not sent to the webhook.
            let labels = vm_patch["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .unwrap();
            assert_eq!(labels[names::OPT_IN_LABEL], Value::Null);
            assert_eq!(labels[names::VM_LABEL], Value::Null);
            for key in [
                annotations::ORIGINAL,
                annotations::STATUS,
                annotations::MEDIA_STATUS,
            ] {
                assert_eq!(
                    vm_patch["metadata"]["annotations"][key],
                    Value::Null,
                    "{key}"
                );
                assert!(
                    vm_patch["metadata"]["annotations"]
                        .as_object()
                        .unwrap()
                        .contains_key(key)
                );
            }
            assert_eq!(vm_patch["metadata"]["resourceVersion"], "200");
        }
        other => panic!("{other:?}"),
    }
    // Removing the annotation altogether is an opt-out too.
    let mut vm = prepared_vm();
    vm["metadata"]["annotations"] = json!({annotations::ORIGINAL: "{\"runStrategy\":\"Halted\"}"});
    match plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()) {
        Plan::OptOut { vm_patch } => {
            assert_eq!(vm_patch["spec"]["runStrategy"], "Halted");
            assert_eq!(
                vm_patch["spec"]["template"]["spec"]["startStrategy"],
                Value::Null
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_annotation_is_reported_and_nothing_else_changes() {
    let vm = fresh_vm(json!({annotations::ENABLED: "yes"}));
    match plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()) {
        Plan::Invalid { vm_patch, note } => {
            assert_eq!(note.reason, "InvalidAnnotation");
            assert!(note.message.contains("bmc.kubevirt.io/enabled=\"yes\""));
            let patch = vm_patch.unwrap();
            assert!(patch.get("spec").is_none());
            assert!(status_of(&patch).reason.contains("allowed values"));
        }
        other => panic!("{other:?}"),
    }
}

/// A user-named Secret is never read: the controller generates no pair for it, copies its name
/// into the template for the webhook to mount, and the sidecar checks the owner's consent.
#[test]
fn the_users_credentials_secret_is_mounted_not_read() {
    let vm = fresh_vm(
        json!({annotations::ENABLED: "true", annotations::CREDENTIALS_SECRET: "my-creds"}),
    );
    let (secret, prepare, patch, _, _) =
        opted_in(plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()));
    assert!(prepare);
    assert_eq!(
        secret.credentials,
        BTreeMap::from([("session-key".into(), b"generated-session-key".to_vec())]),
        "only our session key; username and password come from the user's Secret"
    );
    let patch = patch.unwrap();
    assert_eq!(
        patch["spec"]["template"]["metadata"]["annotations"][annotations::CREDENTIALS_SECRET],
        "my-creds"
    );
    // Dropped from the VM: dropped from the template.
    let mut vm = prepared_vm();
    vm["spec"]["template"]["metadata"]["annotations"][annotations::CREDENTIALS_SECRET] =
        json!("my-creds");
    let (_, _, patch, _, _) = opted_in(plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()));
    assert_eq!(
        patch.unwrap()["spec"]["template"]["metadata"]["annotations"]
            [annotations::CREDENTIALS_SECRET],
        Value::Null
    );
}

/// Secrets are created once per ServiceAccount: recorded ones are not created again, and a
/// record made under another account (recreated since) is void.
#[test]
fn secrets_are_created_once_per_service_account() {
    let recorded = Created {
        service_account: Some("sa-1".into()),
        credentials: Some("c-1".into()),
        token: None,
    };
    let (now, credentials, token) = secrets_to_create(&recorded, "sa-1");
    assert_eq!((credentials, token), (false, true));
    assert_eq!(now.credentials.as_deref(), Some("c-1"));
    let (now, credentials, token) = secrets_to_create(&recorded, "sa-2");
    assert_eq!((credentials, token), (true, true));
    assert_eq!(now.service_account.as_deref(), Some("sa-2"));
    assert_eq!(now.credentials, None);
    // The record round-trips through the VM annotation.
    let vm = fresh_vm(json!({
        annotations::ENABLED: "true",
        annotations::CREATED: recorded.to_annotation(),
    }));
    let (secret, _, _, _, _) = opted_in(plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()));
    assert_eq!(secret.created, recorded);
}

/// Issue 12 §2: NodePort and LoadBalancer expose IPMI beyond the cluster, only when the
/// installation allows it. Failed before: the annotation alone decided.
#[test]
fn external_service_types_need_the_installation_to_allow_them() {
    let vm =
        fresh_vm(json!({annotations::ENABLED: "true", annotations::SERVICE_TYPE: "LoadBalancer"}));
    let service_type = |p: Plan| match p {
        Plan::OptedIn {
            service_type,
            notes,
            ..
        } => (service_type, notes),
        other => panic!("{other:?}"),
    };
    let (t, notes) = service_type(plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()));
    assert_eq!(t, ServiceType::ClusterIp);
    assert!(notes.iter().any(|n| n.reason == "ExternalServiceNotAllowed"
        && n.message.contains("--allow-external-services")));
    let observed = Observed {
        policy: Policy {
            external_services: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let (t, notes) = service_type(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert_eq!(t, ServiceType::LoadBalancer);
    assert!(
        !notes
            .iter()
            .any(|n| n.reason == "ExternalServiceNotAllowed")
    );
}

#[test]
fn unreachable_networking_is_reported() {
    let mut vm = prepared_vm();
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
        .as_object_mut()
        .unwrap()
        .remove("ports");
    let observed = Observed {
        ..Default::default()
    };
    let (_, _, patch, _, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert_eq!(notes[0].reason, "MasqueradeWithoutPorts");
    assert!(notes[0].warning);
    let status = status_of(&patch.unwrap());
    assert!(!status.ready);
    assert!(status.reason.contains("masquerade"));
}

#[test]
fn virtual_media_is_imported_then_attached_reported_and_ejected() {
    let media = r#"{"image":"https://example.org/boot.iso","inserted":true,"writeProtected":true}"#;
    let mut vm = prepared_vm();
    vm["metadata"]["annotations"][annotations::MEDIA] = json!(media);
    let observed = Observed {
        ..Default::default()
    };
    let (_, _, patch, m, _) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    let DvAction::Apply(dv) = &m.data_volume else {
        panic!("{:?}", m.data_volume)
    };
    assert_eq!(dv["metadata"]["name"], "vm1-bmc-media");
    assert_eq!(
        dv["spec"]["source"]["http"]["url"],
        "https://example.org/boot.iso"
    );
    assert_eq!(
        dv["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachine"
    );
    assert_eq!(
        dv["metadata"]["annotations"]["cdi.kubevirt.io/storage.bind.immediate.requested"], "true",
        "WaitForFirstConsumer storage must import a medium nothing consumes yet"
    );
    assert_eq!(
        dv["spec"]["storage"]["resources"]["requests"]["storage"], "4Gi",
        "no recorded image size: the default"
    );
    assert!(m.vm_spec.is_none(), "nothing attached before the import");
    assert_eq!(
        patch.unwrap()["metadata"]["annotations"][annotations::MEDIA_STATUS],
        "{\"phase\":\"Importing\"}"
    );

    // Import progress: still nothing attached.
    let mut observed = observed;
    let mut dv = dv.clone();
    dv["status"] = json!({"phase": "ImportInProgress", "progress": "42.0%"});
    observed.data_volume = Some(dv.clone());
    let (_, _, patch, m, _) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert_eq!(m.data_volume, DvAction::None);
    assert!(m.vm_spec.is_none());
    assert_eq!(
        patch.unwrap()["metadata"]["annotations"][annotations::MEDIA_STATUS],
        "{\"phase\":\"Importing\",\"progress\":\"42.0%\"}"
    );

    // Imported: the CD-ROM is attached, the VM's own disks kept.
    dv["status"] = json!({"phase": "Succeeded", "progress": "100.0%"});
    observed.data_volume = Some(dv.clone());
    let (_, _, patch, m, _) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    let patch = patch.unwrap();
    assert_eq!(
        patch["metadata"]["annotations"][annotations::MEDIA_STATUS],
        "{\"phase\":\"Ready\",\"progress\":\"100.0%\"}"
    );
    let attach = m.vm_spec.expect("attached once imported");
    let t = &attach["template"]["spec"];
    let disks = t["domain"]["devices"]["disks"].as_array().unwrap();
    assert_eq!(
        disks.last().unwrap(),
        &json!({"name": "bmc-media", "cdrom": {"bus": "sata", "readonly": true}})
    );
    assert!(disks.len() > 1, "the VM's own disks are kept");
    let volumes = t["volumes"].as_array().unwrap();
    assert_eq!(
        volumes.last().unwrap()["dataVolume"]["name"],
        "vm1-bmc-media"
    );
    let mut attached = vm.clone();
    attached["spec"]["template"]["spec"]["domain"]["devices"]["disks"] = json!(disks);
    attached["spec"]["template"]["spec"]["volumes"] = json!(volumes);
    let (_, _, _, m, _) = opted_in(plan(&attached, &vm_ref(), &observed, &Fresh::test()));
    assert!(m.vm_spec.is_none(), "attached once, not again");

    // A failed import detaches the CD-ROM so the VM can still start.
    let mut failed = dv.clone();
    failed["status"] = json!({"phase": "Failed", "conditions": [{"type": "Running",
        "status": "False", "reason": "Error", "message": "expected status code 200, got 404"}]});
    observed.data_volume = Some(failed);
    let (_, _, patch, m, _) = opted_in(plan(&attached, &vm_ref(), &observed, &Fresh::test()));
    let detached = m.vm_spec.expect("detached after a failed import");
    assert!(
        detached["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["name"] != "bmc-media")
    );
    let status = patch.unwrap()["metadata"]["annotations"][annotations::MEDIA_STATUS].clone();
    assert!(
        status.as_str().unwrap().contains("\"phase\":\"Failed\""),
        "{status}"
    );
    assert!(status.as_str().unwrap().contains("got 404"), "{status}");

    // Eject: the DataVolume is deleted and the disk detached.
    observed.data_volume = Some(dv);
    let mut ejected = attached.clone();
    ejected["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(annotations::MEDIA);
    ejected["metadata"]["annotations"][annotations::MEDIA_STATUS] = json!("{\"phase\":\"Ready\"}");
    let (_, _, patch, m, _) = opted_in(plan(&ejected, &vm_ref(), &observed, &Fresh::test()));
    assert_eq!(m.data_volume, DvAction::Delete);
    let patch = patch.unwrap();
    let disks = patch["spec"]["template"]["spec"]["domain"]["devices"]["disks"]
        .as_array()
        .unwrap();
    assert!(disks.iter().all(|d| d["name"] != "bmc-media"));
    assert_eq!(
        patch["metadata"]["annotations"][annotations::MEDIA_STATUS],
        Value::Null
    );
}

#[test]
fn the_import_is_sized_from_the_image_size_the_sidecar_recorded() {
    let mut vm = prepared_vm();
    // A RHEL DVD: bigger than the old fixed 4Gi.
    let size: u64 = 13_012_828_161;
    vm["metadata"]["annotations"][annotations::MEDIA] = json!(format!(
        r#"{{"image":"https://example.org/rhel.iso","inserted":true,"writeProtected":true,"sizeBytes":{size}}}"#
    ));
    let observed = Observed {
        ..Default::default()
    };
    let (_, _, _, m, _) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    let DvAction::Apply(dv) = &m.data_volume else {
        panic!("{:?}", m.data_volume)
    };
    // One byte over 12410 MiB: rounded up to whole MiB; CDI adds its filesystem overhead.
    assert_eq!(
        dv["spec"]["storage"]["resources"]["requests"]["storage"],
        "12411Mi"
    );
}

#[test]
fn children_are_scoped_to_the_vm() {
    let role = children::role(&vm_ref());
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 5);
    for rule in &rules {
        assert_eq!(
            rule.resource_names.as_deref(),
            Some(&["vm1".to_owned()][..])
        );
    }
    assert_eq!(rules[0].verbs, ["get", "list", "watch", "patch"]);
    assert_eq!(
        rules[1].resources.as_deref().unwrap(),
        ["virtualmachineinstances"]
    );
    assert_eq!(
        rules[3].api_groups.as_deref().unwrap(),
        ["subresources.kubevirt.io"]
    );
    // Serial over LAN reads this VM's console and nothing else.
    assert_eq!(
        rules[4].resources.as_deref().unwrap(),
        ["virtualmachineinstances/console"]
    );
    assert_eq!(rules[4].verbs, ["get"]);
    let svc = children::service(&vm_ref(), ServiceType::NodePort);
    let spec = svc.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(
        spec.selector.unwrap(),
        BTreeMap::from([
            (names::VM_LABEL.to_owned(), "vm1".to_owned()),
            ("kubevirt.io".to_owned(), "virt-launcher".to_owned())
        ])
    );
    let ports: Vec<_> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap()))
        .collect();
    assert_eq!(
        ports,
        [
            ("ipmi".into(), 623, "UDP".into()),
            ("redfish".into(), 443, "TCP".into())
        ]
    );
    let owner = &svc.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("VirtualMachine", "vm1-uid", Some(true))
    );
    let binding = children::role_binding(&vm_ref());
    assert_eq!(binding.subjects.unwrap()[0].name, "vm1-bmc");
}

/// The sidecar's own refusal (e.g. a user's Secret without its owner's consent) is reported on
/// the VM by the controller until the sidecar is ready.
#[test]
fn the_sidecars_refusal_is_reported_until_it_is_ready() {
    let mut vm = prepared_vm();
    vm["metadata"]["annotations"][annotations::SIDECAR_PROBLEM] = json!(
        "Secret team-bmc is named by bmc.kubevirt.io/credentials-secret but its owner has not agreed"
    );
    let launcher = |ready| Launcher {
        ip: Some("10.0.0.9".into()),
        injected: true,
        bmc_ready: ready,
    };
    let observed = Observed {
        launcher: Some(launcher(false)),
        ..Default::default()
    };
    let (_, _, patch, _, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert!(status_of(&patch.unwrap()).reason.contains("has not agreed"));
    assert!(
        notes
            .iter()
            .any(|n| n.reason == "BmcRefusesToServe" && n.warning)
    );
    let observed = Observed {
        launcher: Some(launcher(true)),
        ..Default::default()
    };
    let (_, _, patch, _, _) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert_eq!(status_of(&patch.unwrap()).reason, "ready");
}

/// Opt-out keeps the power a BMC client last asked for: on stays running (whatever the saved
/// strategy was), off becomes Halted (no paused VMI left without a BMC); with no wish recorded
/// the saved strategy comes back. startStrategy always comes back.
#[test]
fn opt_out_keeps_the_current_power_intent() {
    let cases = [
        // (saved at opt-in, power-state, expected runStrategy, expected running)
        (
            r#"{"runStrategy":"Halted"}"#,
            Some("On"),
            json!("Always"),
            Value::Null,
        ),
        (
            r#"{"runStrategy":"Always"}"#,
            Some("Off"),
            json!("Halted"),
            Value::Null,
        ),
        (
            r#"{"runStrategy":"Manual"}"#,
            Some("On"),
            json!("Manual"),
            Value::Null,
        ),
        (
            r#"{"runStrategy":"Manual"}"#,
            Some("Off"),
            json!("Halted"),
            Value::Null,
        ),
        (
            r#"{"runStrategy":"Halted"}"#,
            None,
            json!("Halted"),
            Value::Null,
        ),
        (r#"{"running":false}"#, Some("On"), Value::Null, json!(true)),
        (
            r#"{"running":true}"#,
            Some("Off"),
            Value::Null,
            json!(false),
        ),
    ];
    for (original, power, run_strategy, running) in cases {
        let mut vm = prepared_vm();
        let mut meta = json!({
            annotations::ENABLED: "false",
            annotations::ORIGINAL: original,
        });
        if let Some(power) = power {
            meta[annotations::POWER] = json!(power);
        }
        vm["metadata"]["annotations"] = meta;
        match plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()) {
            Plan::OptOut { vm_patch } => {
                assert_eq!(
                    vm_patch["spec"]["runStrategy"], run_strategy,
                    "{original} {power:?}"
                );
                assert_eq!(vm_patch["spec"]["running"], running, "{original} {power:?}");
                assert!(
                    vm_patch["spec"]["template"]["spec"]
                        .as_object()
                        .unwrap()
                        .contains_key("startStrategy"),
                    "startStrategy restored"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

/// What KubeVirt would refuse is refused at opt-in, with its reason on the VM, and the VM is
/// not patched: startStrategy Paused with a livenessProbe (vmi-create-admitter.go,
/// validateStartStrategy), and a migration receiver (runStrategy WaitAsReceiver).
#[test]
fn opt_in_refuses_what_kubevirt_would_refuse_and_says_why() {
    let mut probe = fresh_vm(json!({annotations::ENABLED: "true"}));
    probe["spec"]["template"]["spec"]["livenessProbe"] =
        json!({"httpGet": {"port": 1500}, "initialDelaySeconds": 120});
    let mut receiver = fresh_vm(json!({annotations::ENABLED: "true"}));
    receiver["spec"]["runStrategy"] = json!("WaitAsReceiver");
    for (vm, reason, says) in [
        (probe, "LivenessProbeBlocksPause", "livenessProbe"),
        (receiver, "MigrationReceiver", "WaitAsReceiver"),
    ] {
        let (_, prepare, vm_patch, _, notes) =
            opted_in(plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()));
        assert!(!prepare, "{reason}");
        let patch = vm_patch.expect("the status is written");
        assert!(patch["spec"].is_null(), "{reason}: spec untouched: {patch}");
        assert!(
            patch["metadata"]["annotations"][annotations::ORIGINAL].is_null(),
            "{reason}: not prepared"
        );
        let status = status_of(&patch);
        assert!(!status.ready);
        assert!(status.reason.contains(says), "{}", status.reason);
        assert!(
            notes.iter().any(|n| n.warning && n.reason == reason),
            "{notes:?}"
        );
    }
    // Manual, RerunOnFailure and Once are saved and replaced by Always (restored at opt-out).
    for strategy in ["Manual", "RerunOnFailure", "Once"] {
        let mut vm = fresh_vm(json!({annotations::ENABLED: "true"}));
        vm["spec"]["runStrategy"] = json!(strategy);
        let (_, prepare, vm_patch, _, _) =
            opted_in(plan(&vm, &vm_ref(), &Observed::default(), &Fresh::test()));
        assert!(prepare, "{strategy}");
        let patch = vm_patch.unwrap();
        assert_eq!(patch["spec"]["runStrategy"], "Always");
        assert!(
            patch["metadata"]["annotations"][annotations::ORIGINAL]
                .as_str()
                .unwrap()
                .contains(strategy)
        );
    }
}

/// A generated password is cut to 16 bytes for a compatible VM, before it is stored. A user's
/// password never reaches the controller (it reads no user Secret): the sidecar checks it from
/// the mounted file and refuses one IPMI would cut, reporting on the VM.
#[test]
fn generated_passwords_fit_ipmi_and_user_passwords_are_the_sidecars_to_check() {
    let generated = fresh_vm(json!({
        annotations::ENABLED: "true",
        annotations::IPMI_AUTH: "compatible",
    }));
    let (secret, prepare, _, _, _) = opted_in(plan(
        &generated,
        &vm_ref(),
        &Observed::default(),
        &Fresh::test(),
    ));
    assert!(prepare);
    assert_eq!(secret.credentials["password"].len(), 16);
    let user = fresh_vm(json!({
        annotations::ENABLED: "true",
        annotations::CREDENTIALS_SECRET: "my-creds",
        annotations::IPMI_AUTH: "compatible",
    }));
    let (secret, prepare, _, _, notes) =
        opted_in(plan(&user, &vm_ref(), &Observed::default(), &Fresh::test()));
    assert!(prepare);
    assert!(!secret.credentials.contains_key("password"));
    assert!(!notes.iter().any(|n| n.reason == "CredentialsUnfitForIpmi"));
}

fn ready_launcher() -> Observed {
    Observed {
        launcher: Some(Launcher {
            ip: Some("10.244.0.17".into()),
            injected: true,
            bmc_ready: true,
        }),
        ..Default::default()
    }
}

/// Issue 14: the captured vm1 (no kubemacpool: its NIC has no macAddress) gets its BMC, ready,
/// with a `BootMacNotPinned` warning in the status and one Warning Event; the next reconcile
/// writes and says nothing; once the MAC is pinned the warning leaves the status, silently.
#[test]
fn an_unpinned_boot_mac_warns_once_without_holding_back_the_bmc() {
    let mut vm = fixture("vm-vm1.json");
    vm["metadata"]["annotations"] = json!({
        annotations::ENABLED: "true",
        annotations::ORIGINAL: "{\"runStrategy\":\"Halted\"}",
    });
    vm["spec"]["template"]["metadata"]["labels"] = json!({
        names::OPT_IN_LABEL: "true",
        names::VM_LABEL: "vm1",
    });
    let observed = ready_launcher();
    let (_, prepare, patch, _, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert!(prepare);
    let patch = patch.unwrap();
    let status = status_of(&patch);
    assert!(status.ready, "{status:?}");
    assert_eq!(status.reason, "ready");
    assert_eq!(status.warnings.len(), 1, "{status:?}");
    assert_eq!(status.warnings[0].reason, "BootMacNotPinned");
    let message = &status.warnings[0].message;
    assert!(message.contains("interfaces[0].macAddress"), "{message}");
    assert!(message.contains("kubemacpool"), "{message}");
    let warned: Vec<_> = notes
        .iter()
        .filter(|n| n.reason == "BootMacNotPinned")
        .collect();
    assert_eq!(warned.len(), 1, "{notes:?}");
    assert!(warned[0].warning);

    vm["metadata"]["annotations"][annotations::STATUS] =
        patch["metadata"]["annotations"][annotations::STATUS].clone();
    let (_, _, again, _, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert_eq!(again, None);
    assert!(notes.is_empty(), "{notes:?}");

    pin_mac(&mut vm);
    let (_, _, fixed, _, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    let status = status_of(&fixed.unwrap());
    assert!(status.warnings.is_empty(), "{status:?}");
    assert!(status.ready);
    assert!(notes.is_empty(), "{notes:?}");
}

/// The pinned MAC as kubemacpool leaves it: no warning. A VM without interfaces has no NIC to
/// pin a MAC on: no BootMacNotPinned (its reachability is another reason's business).
#[test]
fn a_pinned_boot_mac_or_no_interface_gives_no_mac_warning() {
    let observed = ready_launcher();
    let vm = prepared_vm();
    let (_, _, patch, _, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert!(status_of(&patch.unwrap()).warnings.is_empty());
    assert!(notes.iter().all(|n| n.reason != "BootMacNotPinned"));

    let mut vm = prepared_vm();
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"] = json!([]);
    let (_, _, patch, _, notes) = opted_in(plan(&vm, &vm_ref(), &observed, &Fresh::test()));
    assert!(status_of(&patch.unwrap()).warnings.is_empty());
    assert!(notes.iter().all(|n| n.reason != "BootMacNotPinned"));
}
