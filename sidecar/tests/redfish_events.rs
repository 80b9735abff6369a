//! Event subscriptions: delivered by HTTP POST to a receiver the test runs, streamed over
//! SSE, filtered by EventTypes, and kept across a BMC restart; HttpHeaders sent with each
//! event, never read back, stored only sealed, and sent again after a restart.

mod redfish_support;

use redfish_support::{Bmc, assert_success, free_tcp_port, run_python};

#[test]
fn events_reach_subscribers_and_sse_and_survive_a_restart() {
    let mut bmc = Bmc::start();
    let port = free_tcp_port().to_string();
    let output = run_python(&bmc, "events_flow.py", &["subscribe", &port]);
    assert_success(&output, "events (subscribe)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ok receiver got PoweredOn"), "{stdout}");
    assert!(stdout.contains("ok SSE got PoweredOn"), "{stdout}");

    bmc.restart();
    let output = run_python(&bmc, "events_flow.py", &["restarted", &port]);
    assert_success(&output, "events (after restart)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ok receiver got PoweredOff after restart"),
        "{stdout}"
    );
}

#[test]
fn http_headers_are_sent_with_events_never_shown_and_survive_a_restart_sealed() {
    let mut bmc = Bmc::start();
    let port = free_tcp_port().to_string();
    let output = run_python(&bmc, "events_headers.py", &["subscribe", &port]);
    assert_success(&output, "event headers (subscribe)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in [
        "ok malformed HttpHeaders refused, nothing stored",
        "ok subscribed through sushy; GET shows no header values",
        "ok receiver got PoweredOn with the subscription's headers",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    // The simulator's state file is the backend's record store (a VM annotation on KubeVirt):
    // the subscription is there, its header values are not (sealed, see redfish/seal.rs).
    let state = std::fs::read_to_string(&bmc.state_file).unwrap();
    assert!(
        state.contains("/events") && state.contains("sealed_http_headers"),
        "subscription or its sealed headers not stored: {state}"
    );
    assert!(
        !state.contains("s3cret") && !state.contains("host-0"),
        "{state}"
    );

    bmc.restart();
    let output = run_python(&bmc, "events_headers.py", &["restarted", &port]);
    assert_success(&output, "event headers (after restart)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "ok after the restart the receiver got PoweredOff with the subscription's headers"
        ),
        "{stdout}"
    );
}
