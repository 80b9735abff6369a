//! Event subscriptions: delivered by HTTP POST to a receiver the test runs, streamed over
//! SSE, filtered by EventTypes, and kept across a BMC restart.

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
