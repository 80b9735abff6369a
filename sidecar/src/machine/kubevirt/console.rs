//! The decisions of the serial-console bridge, pure: the subresource URL, the WebSocket
//! upgrade request and its validation, what a refusal means, when to reconnect and what the
//! operator is told on the console. The I/O is in `console_bridge`.
//!
//! KubeVirt serves the VMI's serial console at
//! `GET /apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{vm}/console`
//! as a WebSocket with subprotocol `plain.kubevirt.io`: binary messages carrying the raw
//! serial bytes, one channel, no channel prefix byte (unlike the `v4.channel.k8s.io` framing
//! kube's own `connect` insists on).

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::machine::MachineError;

pub const PROTOCOL: &str = "plain.kubevirt.io";

/// Reconnect delays: quick enough to catch a rebooted VM's first lines, bounded so a VM
/// that stays off costs one request every few seconds.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub fn console_path(namespace: &str, vm: &str) -> String {
    format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{vm}/console"
    )
}

/// The upgrade request; `key` is a fresh random `Sec-WebSocket-Key`. Authentication and TLS
/// are added by the kube client that sends it.
pub fn upgrade_request(path: &str, key: &str) -> Result<http::Request<Vec<u8>>, MachineError> {
    http::Request::get(path)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, key)
        .header(header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL)
        .body(Vec::new())
        .map_err(|e| MachineError::Invalid(format!("console request: {e}")))
}

/// RFC 6455 4.1: a 101 with `Upgrade: websocket`, `Connection: Upgrade`, the accept value
/// derived from our key, and the subprotocol we asked for (a server that picked another
/// framing would corrupt the serial stream).
pub fn check_handshake(
    status: StatusCode,
    headers: &HeaderMap,
    expected_accept: &str,
) -> Result<(), MachineError> {
    let has = |name: header::HeaderName, wanted: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(wanted))
    };
    let problem = if status != StatusCode::SWITCHING_PROTOCOLS {
        format!("answered {status} instead of 101 Switching Protocols")
    } else if !has(header::UPGRADE, "websocket") {
        "did not upgrade to websocket".to_owned()
    } else if !has(header::CONNECTION, "upgrade") {
        "did not answer Connection: Upgrade".to_owned()
    } else if headers
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .and_then(|v| v.to_str().ok())
        != Some(expected_accept)
    {
        "answered a wrong Sec-WebSocket-Accept".to_owned()
    } else if headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .map(HeaderValue::as_bytes)
        != Some(PROTOCOL.as_bytes())
    {
        format!("did not agree to the {PROTOCOL} subprotocol")
    } else {
        return Ok(());
    };
    Err(MachineError::Unavailable(format!(
        "the KubeVirt console endpoint {problem}"
    )))
}

/// What a refused console request (not 101) means, from its status code and the message of
/// its `Status` body. `vm` is "namespace/name".
pub fn refusal(code: u16, message: &str, vm: &str) -> MachineError {
    match code {
        // virt-api: 404 without a VMI, 400 "VMI is not running", 409 "VMI is in failed status".
        404 | 409 => MachineError::NotAllowed(format!(
            "VM {vm} has no running instance; its serial console opens when it runs ({message})"
        )),
        400 if message.contains("No serial consoles") => MachineError::NotSupported(format!(
            "VM {vm} has no serial console (autoattachSerialConsole is false): {message}"
        )),
        400 => MachineError::NotAllowed(format!(
            "VM {vm} has no running instance; its serial console opens when it runs ({message})"
        )),
        403 => MachineError::Forbidden(format!(
            "the BMC's service account may not get virtualmachineinstances/console of {vm}; \
             grant it in the VM's BMC Role ({message})"
        )),
        401 => MachineError::Forbidden(format!(
            "the KubeVirt API did not accept the BMC's service-account token ({message})"
        )),
        code => MachineError::Unavailable(format!(
            "KubeVirt API answered {code} to the serial console request of {vm}: {message}"
        )),
    }
}

/// The `message` of a `Status` body, or the body itself when it is not one.
pub fn status_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Status {
        message: String,
    }
    match serde_json::from_slice::<Status>(body) {
        Ok(status) => status.message,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            // A proxy's HTML page is no help on a serial console.
            text.chars().take(200).collect()
        }
    }
}

/// Doubling reconnect delay, reset by a connection that worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

/// Why a connection ended while attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The API server or virt-handler closed it (or the network dropped it).
    Dropped(String),
    /// The cache saw the VMI replaced (a reboot is a new VMI) while the socket was open.
    Replaced,
}

/// Decides the bracketed lines the operator sees on the console: each state is said once,
/// a successful reconnect says whether it reached a new VM instance.
#[derive(Debug, Default)]
pub struct Narrator {
    /// The VMI of the last connection, if there was one.
    connected_to: Option<Option<String>>,
    /// The last problem said, so a retry loop does not repeat it.
    said: Option<String>,
}

pub const BREAK_NOTICE: &[u8] =
    b"\r\n[kubevirt-bmc: the KubeVirt serial console cannot send a break; ignored]\r\n";

fn line(text: &str) -> Vec<u8> {
    format!("\r\n[kubevirt-bmc: {text}]\r\n").into_bytes()
}

impl Narrator {
    /// Connected to the console of VMI `vmi` (its UID as the cache knows it).
    pub fn connected(&mut self, vmi: Option<&str>) -> Option<Vec<u8>> {
        let previous = self.connected_to.replace(vmi.map(str::to_owned));
        let had_problem = self.said.take().is_some();
        match previous {
            // The first connection of this attachment: the console speaks for itself.
            None if !had_problem => None,
            None => Some(line("console connected")),
            Some(before) if before.as_deref() != vmi || vmi.is_none() => {
                Some(line("console reconnected to the new VM instance"))
            }
            Some(_) => Some(line("console reconnected")),
        }
    }

    /// The connection ended; the bridge reconnects.
    pub fn ended(&mut self, how: &Ended) -> Option<Vec<u8>> {
        match how {
            // The reconnect line says it, or the wait for the next instance does.
            Ended::Replaced => None,
            Ended::Dropped(reason) => self.say(format!(
                "console connection closed ({reason}); reconnecting"
            )),
        }
    }

    /// A connection attempt failed with `error`.
    pub fn failed(&mut self, error: &MachineError) -> Option<Vec<u8>> {
        let text = match error {
            MachineError::NotAllowed(_) => {
                "no running VM instance; waiting for one to attach its serial console".to_owned()
            }
            MachineError::Forbidden(message) => {
                format!("cannot open the serial console: {message}")
            }
            MachineError::NotSupported(message) => format!("no serial console: {message}"),
            other => format!("cannot reach the serial console ({other}); retrying"),
        };
        self.say(text)
    }

    fn say(&mut self, text: String) -> Option<Vec<u8>> {
        if self.said.as_deref() == Some(text.as_str()) {
            return None;
        }
        let out = line(&text);
        self.said = Some(text);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept_headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept.parse().unwrap());
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(PROTOCOL),
        );
        h
    }

    #[test]
    fn the_url_names_the_vmi_console_subresource() {
        assert_eq!(
            console_path("vms", "vm1"),
            "/apis/subresources.kubevirt.io/v1/namespaces/vms/virtualmachineinstances/vm1/console"
        );
    }

    #[test]
    fn the_upgrade_request_asks_for_kubevirts_plain_framing() {
        let r = upgrade_request("/x", "dGhlIHNhbXBsZSBub25jZQ==").unwrap();
        assert_eq!(r.method(), http::Method::GET);
        let h = r.headers();
        assert_eq!(h[header::CONNECTION], "Upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(h[header::SEC_WEBSOCKET_KEY], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "plain.kubevirt.io");
    }

    #[test]
    fn a_proper_101_passes_and_each_missing_part_fails() {
        // RFC 6455's own example key and accept value.
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert!(
            check_handshake(
                StatusCode::SWITCHING_PROTOCOLS,
                &accept_headers(accept),
                accept
            )
            .is_ok()
        );
        let fails = |status, headers: HeaderMap| {
            let Err(MachineError::Unavailable(m)) = check_handshake(status, &headers, accept)
            else {
                panic!("accepted")
            };
            m
        };
        assert!(fails(StatusCode::OK, accept_headers(accept)).contains("200 OK"));
        let mut h = accept_headers(accept);
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_static("bogus"),
        );
        assert!(fails(StatusCode::SWITCHING_PROTOCOLS, h).contains("Sec-WebSocket-Accept"));
        let mut h = accept_headers(accept);
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        assert!(fails(StatusCode::SWITCHING_PROTOCOLS, h).contains("plain.kubevirt.io"));
        let mut h = accept_headers(accept);
        h.remove(header::SEC_WEBSOCKET_PROTOCOL);
        assert!(fails(StatusCode::SWITCHING_PROTOCOLS, h).contains("subprotocol"));
        let mut h = accept_headers(accept);
        h.remove(header::UPGRADE);
        assert!(fails(StatusCode::SWITCHING_PROTOCOLS, h).contains("websocket"));
        let mut h = accept_headers(accept);
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert!(fails(StatusCode::SWITCHING_PROTOCOLS, h).contains("Connection"));
        // Header values are case-insensitive tokens and may be lists.
        let mut h = accept_headers(accept);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(check_handshake(StatusCode::SWITCHING_PROTOCOLS, &h, accept).is_ok());
    }

    #[test]
    fn refusals_say_what_is_missing() {
        let vm = "vms/vm1";
        assert!(
            matches!(refusal(400, "VMI is not running", vm), MachineError::NotAllowed(m) if m.contains("VMI is not running"))
        );
        assert!(
            matches!(refusal(404, "virtualmachineinstance.kubevirt.io \"vm1\" not found", vm), MachineError::NotAllowed(m) if m.contains("no running instance"))
        );
        assert!(matches!(
            refusal(409, "VMI is in failed status", vm),
            MachineError::NotAllowed(_)
        ));
        assert!(
            matches!(refusal(400, "No serial consoles are present.", vm), MachineError::NotSupported(m) if m.contains("autoattachSerialConsole"))
        );
        let MachineError::Forbidden(m) = refusal(
            403,
            "User \"x\" cannot get resource \"virtualmachineinstances/console\"",
            vm,
        ) else {
            panic!()
        };
        assert!(
            m.contains("get virtualmachineinstances/console of vms/vm1"),
            "{m}"
        );
        assert!(m.contains("BMC Role"), "{m}");
        assert!(
            matches!(refusal(401, "Unauthorized", vm), MachineError::Forbidden(m) if m.contains("token"))
        );
        assert!(
            matches!(refusal(503, "down", vm), MachineError::Unavailable(m) if m.contains("503"))
        );
    }

    #[test]
    fn status_bodies_give_their_message_and_other_bodies_are_cut_short() {
        assert_eq!(
            status_message(br#"{"kind":"Status","message":"VMI is not running","code":400}"#),
            "VMI is not running"
        );
        assert_eq!(status_message(b"  plain text\n"), "plain text");
        assert_eq!(status_message(&[b'x'; 500]).len(), 200);
    }

    #[test]
    fn backoff_doubles_to_its_bound_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_FIRST);
    }

    fn text(bytes: Option<Vec<u8>>) -> Option<String> {
        bytes.map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn a_first_clean_connection_is_silent_and_a_new_instance_is_announced() {
        let mut n = Narrator::default();
        assert_eq!(n.connected(Some("uid-1")), None);
        assert_eq!(n.ended(&Ended::Replaced), None);
        assert_eq!(
            text(n.connected(Some("uid-2"))).as_deref(),
            Some("\r\n[kubevirt-bmc: console reconnected to the new VM instance]\r\n")
        );
        assert_eq!(
            text(n.ended(&Ended::Dropped("closed by the server".into()))).as_deref(),
            Some(
                "\r\n[kubevirt-bmc: console connection closed (closed by the server); reconnecting]\r\n"
            )
        );
        assert_eq!(
            text(n.connected(Some("uid-2"))).as_deref(),
            Some("\r\n[kubevirt-bmc: console reconnected]\r\n")
        );
    }

    #[test]
    fn waiting_is_said_once_however_often_it_is_retried() {
        let mut n = Narrator::default();
        let waiting = MachineError::NotAllowed("VMI is not running".into());
        let first = text(n.failed(&waiting)).unwrap();
        assert!(first.contains("waiting for one"), "{first}");
        assert_eq!(n.failed(&waiting), None);
        assert_eq!(
            n.failed(&MachineError::NotAllowed("other wording".into())),
            None
        );
        let forbidden =
            MachineError::Forbidden("may not get virtualmachineinstances/console".into());
        assert!(
            text(n.failed(&forbidden))
                .unwrap()
                .contains("virtualmachineinstances/console")
        );
        assert_eq!(n.failed(&forbidden), None);
        // Connected after waiting: said, so the operator knows the wait is over.
        assert_eq!(
            text(n.connected(Some("uid-1"))).as_deref(),
            Some("\r\n[kubevirt-bmc: console connected]\r\n")
        );
        // The same problem after a connection is news again.
        assert!(n.failed(&waiting).is_some());
    }
}
