//! The webhook's objectSelector (manifests/base/webhooks.yaml) against the captured launcher
//! Pods: kube-apiserver sends a Pod CREATE to the webhook only when its labels match
//! (staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/object/matcher.go,
//! `MatchObjectSelector`;
//! the fake's `MutatingWebhook::selects` models the matchLabels form we use).

use std::path::PathBuf;

use kubevirt_bmc_e2e::fake_apiserver::admission::MutatingWebhook;
use kubevirt_bmc_e2e::fake_apiserver::kubevirt::launcher_pod;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn hook() -> MutatingWebhook {
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/base/webhooks.yaml"),
    )
    .unwrap();
    MutatingWebhook::from_manifest(&manifest, "127.0.0.1:1".parse().unwrap(), b"").unwrap()
}

#[test]
fn launcher_pods_of_vms_that_did_not_opt_in_are_never_sent() {
    let hook = hook();
    // Captured from a real cluster: a launcher Pod of a VM without the opt-in, and one whose
    // annotation is malformed; neither carries the label, so neither reaches the webhook.
    for name in ["pod-b-vm2-no-optin.json", "pod-c-vm3-bad-value.json"] {
        let pod = fixture(name);
        assert_eq!(pod["metadata"]["labels"]["kubevirt.io"], "virt-launcher");
        assert!(!hook.selects(&pod), "{name} would be sent to the webhook");
    }
    // The opted-in capture predates the label: annotated only, it is not sent either (the
    // controller reports RestartRequired for such a Pod, as for one started in an outage).
    assert!(!hook.selects(&fixture("pod-a-vm1-optin.json")));
}

#[test]
fn a_vm_the_controller_prepared_gets_launcher_pods_that_are_sent() {
    let hook = hook();
    // The VMI of a prepared VM carries the template's labels; virt-controller copies them onto
    // the launcher Pod (the fake's `launcher_pod` models template.go's `podLabels`).
    let vmi = json!({
        "metadata": {"name": "vm1", "namespace": "vms", "uid": "u1",
            "labels": {"bmc.kubevirt.io/enabled": "true", "bmc.kubevirt.io/vm": "vm1"},
            "annotations": {"bmc.kubevirt.io/enabled": "true"}},
        "spec": {}
    });
    let pod = launcher_pod(&fixture("pod-b-vm2-no-optin.json"), &vmi);
    assert!(hook.selects(&pod));
    // The same VM after opt-out (labels removed from the template): not sent.
    let mut vmi = vmi;
    vmi["metadata"]["labels"] = json!({});
    let pod = launcher_pod(&fixture("pod-b-vm2-no-optin.json"), &vmi);
    assert!(!hook.selects(&pod));
}
