//! Arbitrary bytes as the body the API server POSTs to `/mutate-pods` and
//! `/validate-virtualmachines`, through the same calls the HTTPS handlers make
//! (`admission::mutate_pods` / `validate_vms`, then `admission::encode`).
//!
//! Invariants: nothing panics; every answer encodes; what cannot be read as a review is
//! refused with a reason, a review whose object cannot be read is admitted unchanged with a
//! warning; only `injected` carries a patch; that patch applies cleanly (json-patch, as the
//! API server applies it) to the submitted Pod, a submitted object that was a valid Pod stays
//! one, and the patched Pod is left alone when reviewed again (no double injection).
#![no_main]

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kubevirt_bmc_webhook::admission;
use kubevirt_bmc_webhook::inject::InjectionConfig;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn configs() -> [InjectionConfig; 2] {
    let low = InjectionConfig::test();
    let high = InjectionConfig {
        low_port_sysctl: false,
        ..InjectionConfig::test()
    };
    [low, high]
}

fn mutate(data: &[u8], config: &InjectionConfig) {
    let (review, outcome) = admission::mutate_pods(data, config);
    let wire = admission::encode(&review).expect("every review encodes");
    let wire: Value = serde_json::from_slice(&wire).expect("the wire form is JSON");
    let response = review
        .response
        .as_ref()
        .expect("every answer carries a response");
    // serde skips ignored fields without checking their UTF-8, so a review can decode while
    // the body is not JSON text; with those bytes replaced it is the same review.
    let submitted: Option<Value> = serde_json::from_str(&String::from_utf8_lossy(data)).ok();
    let request = submitted.as_ref().map(|v| &v["request"]);

    match outcome.as_str() {
        "invalid" => {
            assert!(!response.allowed, "an unreadable review was allowed");
            assert!(
                !response.result.message.is_empty(),
                "refused without a reason"
            );
        }
        "unreadable-object" => {
            assert!(response.allowed);
            assert!(
                response.warnings.as_ref().is_some_and(|w| !w.is_empty()),
                "admitted an unreadable object without saying so"
            );
        }
        "denied" => {
            assert!(!response.allowed);
            assert!(!response.result.message.is_empty(), "denied without reason");
        }
        "injected" => assert!(response.allowed),
        skipped if skipped.starts_with("skipped-") => assert!(response.allowed),
        other => panic!("unexpected outcome {other:?}"),
    }
    if outcome != "invalid"
        && let Some(request) = request
    {
        let uid = request["uid"].as_str().unwrap_or_default();
        assert_eq!(response.uid, uid, "the answer names another request");
    }

    let Some(patch_bytes) = &response.patch else {
        assert_ne!(outcome, "injected", "injected without a patch");
        return;
    };
    assert_eq!(outcome, "injected", "{outcome} carries a patch");
    let on_wire = base64::engine::general_purpose::STANDARD
        .decode(wire["response"]["patch"].as_str().expect("patch is base64"))
        .expect("patch is base64");
    assert_eq!(&on_wire, patch_bytes);
    assert_eq!(wire["response"]["patchType"], "JSONPatch");

    let patch: json_patch::Patch =
        serde_json::from_slice(patch_bytes).expect("the patch is a JSONPatch");
    // Left: a body serde decodes but no JSON parser reads whole (a lone surrogate escape in
    // a skipped field); the API server never sends one.
    let Some(request) = request else {
        return;
    };
    let original = request["object"].clone();
    let mut pod = original.clone();
    if let Err(error) = json_patch::patch(&mut pod, &patch) {
        panic!("the patch does not apply to the submitted Pod: {error}");
    }
    if serde_json::from_value::<Pod>(original).is_ok()
        && let Err(error) = serde_json::from_value::<Pod>(pod.clone())
    {
        panic!("the patched Pod is no longer a Pod: {error}");
    }

    let mut again = submitted.clone().expect("readable");
    again["request"]["object"] = pod;
    let (second, outcome) = admission::mutate_pods(&serde_json::to_vec(&again).unwrap(), config);
    assert_eq!(outcome, "skipped-already-injected", "the patched Pod");
    assert!(second.response.unwrap().patch.is_none());
}

fn validate(data: &[u8]) {
    let (review, outcome) = admission::validate_vms(data);
    admission::encode(&review).expect("every review encodes");
    let response = review
        .response
        .as_ref()
        .expect("every answer carries a response");
    assert!(response.patch.is_none(), "validation never patches");
    match outcome.as_str() {
        "invalid" | "denied" => {
            assert!(!response.allowed);
            assert!(
                !response.result.message.is_empty(),
                "refused without reason"
            );
        }
        "allowed" | "warned" => assert!(response.allowed),
        other => panic!("unexpected outcome {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    for config in configs() {
        mutate(data, &config);
    }
    validate(data);
});
