//! virt-api's serial console: `GET .../virtualmachineinstances/{name}/console` upgraded to
//! a WebSocket with subprotocol `plain.kubevirt.io` (binary messages of raw serial bytes).
//! RBAC as kube-apiserver applies it (`get` on `virtualmachineinstances/console`), virt-api's
//! refusals (404 without a VMI, 409 for a failed one, 400 when it is not running), a boot
//! banner on connect, an echo of what is typed (a terminal's CR as CR LF), and the socket
//! closed when the VMI goes away or is replaced, as virt-handler does when the domain ends.

use std::sync::Arc;

use axum::body::Body;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

use super::super::store::{EventType, Gvr, Key};
use super::super::{Grant, Shared};
use super::{Open, Route, authorize, parse_route, status};

pub const PROTOCOL: &str = "plain.kubevirt.io";

/// Whether this request is for the console endpoint (it needs its upgrade kept).
pub fn is_console(method: &Method, path: &str) -> bool {
    method == Method::GET
        && parse_route(path).is_some_and(|r| {
            r.gvr.group == "subresources.kubevirt.io"
                && r.gvr.resource == "virtualmachineinstances"
                && r.subresource.as_deref() == Some("console")
        })
}

/// The banner a fresh connection prints: names the VMI so a test can tell instances apart.
pub fn banner(namespace: &str, name: &str, uid: &str) -> String {
    format!("\r\nfake serial console of VMI {namespace}/{name} (uid {uid})\r\n{name} login: ")
}

pub fn open(
    shared: &Arc<Shared>,
    grant: &Grant,
    headers: &HeaderMap,
    path: &str,
    upgrade: hyper::upgrade::OnUpgrade,
) -> Response<Body> {
    let Some(route) = parse_route(path) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        );
    };
    let Some(name) = route.name.clone() else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        );
    };
    if let Err(response) = authorize(grant, "get", &route, Some(&name)) {
        return response;
    }
    let vmi = shared
        .store()
        .get(&Key::new(Gvr::vmi(), &route.namespace, &name))
        .cloned();
    let uid = match refusal(vmi.as_ref(), &name) {
        Err(response) => return response,
        Ok(uid) => uid,
    };
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return status(400, "BadRequest", "websocket upgrade required", json!({}));
    };
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == PROTOCOL);
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    // Like gorilla's upgrader in virt-api: no protocol header unless one we speak was offered.
    if offered {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL);
    }
    tokio::spawn(serve(shared.clone(), route, name, uid, upgrade));
    response.body(Body::empty()).expect("valid response")
}

/// virt-api's checks, in its order; the VMI's UID when the console may open.
// A refusal is the response itself, built once per refused request.
#[allow(clippy::result_large_err)]
fn refusal(vmi: Option<&Value>, name: &str) -> Result<String, Response<Body>> {
    let Some(vmi) = vmi else {
        return Err(status(
            404,
            "NotFound",
            &format!("virtualmachineinstance.kubevirt.io \"{name}\" not found"),
            json!({"name": name, "group": "kubevirt.io", "kind": "virtualmachineinstance"}),
        ));
    };
    if vmi["status"]["phase"] == "Failed" {
        return Err(status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"{name}\": VMI is in failed status"
            ),
            json!({"name": name, "group": "kubevirt.io", "kind": "virtualmachineinstance"}),
        ));
    }
    if !running(vmi) {
        return Err(status(400, "BadRequest", "VMI is not running", json!({})));
    }
    Ok(vmi["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn running(vmi: &Value) -> bool {
    vmi["status"]["phase"] == "Running" && vmi["metadata"].get("deletionTimestamp").is_none()
}

/// Does this store event end the console of VMI `uid`?
fn ends(kind: EventType, object: &Value, uid: &str) -> bool {
    kind == EventType::Deleted
        || object["metadata"]["uid"].as_str() != Some(uid)
        || !running(object)
}

async fn serve(
    shared: Arc<Shared>,
    route: Route,
    name: String,
    uid: String,
    upgrade: hyper::upgrade::OnUpgrade,
) {
    let mut events = shared.store().subscribe();
    let mut down = shared.down.subscribe();
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let mut socket = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Server,
        None,
    )
    .await;
    let _open = Open::count(&shared.open_consoles);
    // The VMI may have gone between the answer and the upgrade.
    let current = shared
        .store()
        .get(&Key::new(Gvr::vmi(), &route.namespace, &name))
        .cloned();
    if current
        .as_ref()
        .is_none_or(|vmi| ends(EventType::Modified, vmi, &uid))
    {
        let _ = socket.close(None).await;
        return;
    }
    let hello = banner(&route.namespace, &name, &uid);
    if socket
        .send(Message::Binary(hello.into_bytes().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    if socket.send(Message::Binary(echo(&bytes).into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if socket.send(Message::Binary(echo(text.as_bytes()).into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            event = events.recv() => match event {
                Ok(event) if event.key.gvr == Gvr::vmi()
                    && event.key.namespace == route.namespace
                    && event.key.name == name
                    && ends(event.kind, &event.object, &uid) =>
                {
                    let frame = CloseFrame {
                        code: CloseCode::Away,
                        reason: "the VMI's domain is gone".into(),
                    };
                    let _ = socket.close(Some(frame)).await;
                    return;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Missed events: decide from the store itself.
                    let now = shared
                        .store()
                        .get(&Key::new(Gvr::vmi(), &route.namespace, &name))
                        .cloned();
                    if now.is_none_or(|vmi| ends(EventType::Modified, &vmi, &uid)) {
                        let _ = socket.close(None).await;
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            // The guard `wait_for` yields is not Send: drop it inside.
            () = async { let _ = down.wait_for(|d| *d).await; } => return,
        }
    }
}

/// A terminal's echo: Enter (CR) comes back as CR LF.
fn echo(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for &b in bytes {
        out.push(b);
        if b == b'\r' {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error, Message};

    use super::super::super::{FakeApiServer, Gvr};

    const TOKEN: &str = "vm1-token";
    const PATH: &str =
        "/apis/subresources.kubevirt.io/v1/namespaces/vms/virtualmachineinstances/vm1/console";

    async fn fake() -> FakeApiServer {
        let fake = FakeApiServer::start().await.unwrap();
        fake.grant(TOKEN, "system:serviceaccount:vms:vm1-bmc", &["vm1"]);
        let path = format!(
            "{}/testdata/fixtures/vm-vm1.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let vm: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        fake.put(Gvr::vm(), "vms", "vm1", vm);
        fake
    }

    type Client = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

    /// Connects as kubevirt-bmc does; the refusal's status and Status body otherwise.
    async fn connect(fake: &FakeApiServer, path: &str) -> Result<Client, (u16, Value)> {
        let mut request = format!("ws://{}{path}", fake.addr())
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
        headers.insert("Sec-WebSocket-Protocol", super::PROTOCOL.parse().unwrap());
        let stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, response)) => {
                assert_eq!(
                    response.headers()["Sec-WebSocket-Protocol"],
                    super::PROTOCOL
                );
                Ok(socket)
            }
            Err(Error::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                Err((
                    response.status().as_u16(),
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                ))
            }
            Err(other) => panic!("{other}"),
        }
    }

    async fn read(socket: &mut Client) -> String {
        let next = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("console output");
        match next {
            Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_console_prints_a_banner_echoes_and_closes_when_the_vmi_is_replaced() {
        let fake = fake().await;
        let uid = fake.vmi("vms", "vm1").unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut socket = connect(&fake, PATH).await.unwrap();
        assert_eq!(read(&mut socket).await, super::banner("vms", "vm1", &uid));
        socket
            .send(Message::Binary(b"root\r".to_vec().into()))
            .await
            .unwrap();
        assert_eq!(read(&mut socket).await, "root\r\n");
        assert_eq!(fake.open_consoles(), 1);

        // A reboot: the guest ends, virt-controller makes a new VMI; the socket closes.
        assert!(fake.guest_shutdown("vms", "vm1"));
        let closed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap();
        assert!(
            matches!(closed, Some(Ok(Message::Close(Some(ref f)))) if f.reason.contains("gone")),
            "{closed:?}"
        );
        // The new VMI has a console of its own.
        let new_uid = fake.vmi("vms", "vm1").unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(new_uid, uid);
        let mut socket = connect(&fake, PATH).await.unwrap();
        assert_eq!(
            read(&mut socket).await,
            super::banner("vms", "vm1", &new_uid)
        );
        socket.close(None).await.unwrap();
        for _ in 0..50 {
            if fake.open_consoles() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fake.open_consoles(), 0);
    }

    #[tokio::test]
    async fn rbac_and_virt_apis_refusals_come_first() {
        let fake = fake().await;
        // resourceNames: another VM's console is forbidden.
        let other = PATH.replace("/vm1/", "/vm2/");
        let (code, body) = connect(&fake, &other).await.err().unwrap();
        assert_eq!(code, 403);
        assert_eq!(
            body["message"],
            "virtualmachineinstances.subresources.kubevirt.io \"vm2\" is forbidden: User \
             \"system:serviceaccount:vms:vm1-bmc\" cannot get resource \
             \"virtualmachineinstances/console\" in API group \"subresources.kubevirt.io\" in \
             the namespace \"vms\""
        );
        // A Role without the console rule.
        fake.deny_resources(TOKEN, &["virtualmachineinstances/console"]);
        assert_eq!(connect(&fake, PATH).await.err().unwrap().0, 403);
        fake.grant(TOKEN, "system:serviceaccount:vms:vm1-bmc", &["vm1"]);

        // No VMI: 404; a finished one: "VMI is not running".
        fake.hold_controller(true);
        assert!(fake.guest_shutdown("vms", "vm1"));
        let (code, body) = connect(&fake, PATH).await.err().unwrap();
        assert_eq!(
            (code, &body["message"]),
            (400, &json!("VMI is not running"))
        );
        fake.shared
            .store()
            .delete(&super::Key::new(Gvr::vmi(), "vms", "vm1"));
        let (code, body) = connect(&fake, PATH).await.err().unwrap();
        assert_eq!(code, 404);
        assert_eq!(
            body["message"],
            "virtualmachineinstance.kubevirt.io \"vm1\" not found"
        );
        fake.hold_controller(false);
        assert!(connect(&fake, PATH).await.is_ok());
    }
}
