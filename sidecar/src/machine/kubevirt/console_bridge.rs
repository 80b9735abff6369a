//! The serial-console bridge's I/O: one WebSocket to the VMI's console subresource while a
//! front end is attached, reconnected when it drops or the VMI is replaced. What to say and
//! when to retry is decided in `console`.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::Inner;
use super::console::{self, Backoff, Ended, Narrator};
use super::errors::describe_kube;
use crate::machine::{Console, ConsoleInput, MachineError};

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

const INPUT_QUEUE: usize = 64;
const OUTPUT_QUEUE: usize = 256;
/// A connection attempt that hangs (API server overloaded) is abandoned and retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A refusal body is a `Status`; anything longer is not read.
const REFUSAL_BODY_LIMIT: usize = 16 << 10;

/// Starts the bridge; it runs until `input` is dropped (detach) or `output` is.
pub(super) fn attach(inner: Arc<Inner>) -> Console {
    let (input, keys) = mpsc::channel(INPUT_QUEUE);
    let (printed, output) = mpsc::channel(OUTPUT_QUEUE);
    tokio::spawn(bridge(inner, keys, printed));
    Console { input, output }
}

fn vmi_uid(inner: &Inner) -> Option<String> {
    inner
        .cache
        .snapshot()
        .vmi
        .as_ref()
        .and_then(|v| v.uid().map(str::to_owned))
}

async fn bridge(
    inner: Arc<Inner>,
    mut keys: mpsc::Receiver<ConsoleInput>,
    printed: mpsc::Sender<Vec<u8>>,
) {
    let label = format!("{}/{}", inner.config.namespace, inner.config.vm_name);
    let mut narrator = Narrator::default();
    let mut backoff = Backoff::default();
    let mut cache = inner.cache.subscribe();
    loop {
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect(&inner, &label)) => {
                attempt.unwrap_or_else(|_| Err(MachineError::Unavailable(
                    "the KubeVirt API did not answer the console request in time".to_owned(),
                )))
            }
            () = printed.closed() => return,
        };
        let ended = match attempt {
            Ok(socket) => {
                let connected_to = vmi_uid(&inner);
                tracing::info!(vm = %label, vmi = ?connected_to, "serial console attached");
                if let Some(line) = narrator.connected(connected_to.as_deref())
                    && printed.send(line).await.is_err()
                {
                    return;
                }
                backoff.reset();
                cache.mark_unchanged();
                match run(socket, &mut keys, &printed, &mut cache, connected_to).await {
                    Some(ended) => ended,
                    None => {
                        tracing::info!(vm = %label, "serial console detached");
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::info!(vm = %label, %error, "serial console not attached");
                if let Some(line) = narrator.failed(&error)
                    && printed.send(line).await.is_err()
                {
                    return;
                }
                if !wait(&mut keys, &printed, &mut cache, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(vm = %label, ?ended, "serial console connection ended; reconnecting");
        if let Some(line) = narrator.ended(&ended)
            && printed.send(line).await.is_err()
        {
            return;
        }
        if !wait(&mut keys, &printed, &mut cache, backoff.next_delay()).await {
            return;
        }
    }
}

/// Waits `delay` before the next attempt, or less when the VMI changes. Keys typed
/// meanwhile are lost, as on an unplugged serial line. False once the front end detached.
async fn wait(
    keys: &mut mpsc::Receiver<ConsoleInput>,
    printed: &mpsc::Sender<Vec<u8>>,
    cache: &mut tokio::sync::watch::Receiver<super::cache::Snapshot>,
    delay: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    let vmi_before = cache
        .borrow_and_update()
        .vmi
        .as_ref()
        .map(|v| v.uid().map(str::to_owned));
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return true,
            key = keys.recv() => if key.is_none() { return false },
            () = printed.closed() => return false,
            changed = cache.changed() => {
                if changed.is_err() {
                    return true;
                }
                let vmi_now = cache
                    .borrow_and_update()
                    .vmi
                    .as_ref()
                    .map(|v| v.uid().map(str::to_owned));
                // A new VMI to attach to: no point sleeping out the backoff.
                if vmi_now.is_some() && vmi_now != vmi_before {
                    return true;
                }
            }
        }
    }
}

/// Relays until the connection ends (`Some`) or the front end detaches (`None`).
async fn run(
    mut socket: Socket,
    keys: &mut mpsc::Receiver<ConsoleInput>,
    printed: &mpsc::Sender<Vec<u8>>,
    cache: &mut tokio::sync::watch::Receiver<super::cache::Snapshot>,
    connected_to: Option<String>,
) -> Option<Ended> {
    loop {
        tokio::select! {
            key = keys.recv() => match key {
                Some(ConsoleInput::Bytes(bytes)) => {
                    if let Err(error) = socket.send(Message::Binary(bytes.into())).await {
                        return Some(Ended::Dropped(format!("send failed: {error}")));
                    }
                }
                Some(ConsoleInput::Break) => {
                    if printed.send(console::BREAK_NOTICE.to_vec()).await.is_err() {
                        return None;
                    }
                }
                None => {
                    let _ = socket.close(None).await;
                    return None;
                }
            },
            message = socket.next() => {
                let bytes = match message {
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map_or_else(
                            || "closed by the server".to_owned(),
                            |f| format!("closed by the server: {} {}", u16::from(f.code), f.reason.as_str()),
                        );
                        return Some(Ended::Dropped(why));
                    }
                    // Pings are answered by tungstenite as it reads.
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Some(Ended::Dropped(error.to_string())),
                    None => return Some(Ended::Dropped("connection lost".to_owned())),
                };
                if printed.send(bytes).await.is_err() {
                    let _ = socket.close(None).await;
                    return None;
                }
            }
            () = printed.closed() => {
                let _ = socket.close(None).await;
                return None;
            }
            changed = cache.changed(), if connected_to.is_some() => {
                if changed.is_err() {
                    continue;
                }
                let now = cache.borrow_and_update().vmi.as_ref().and_then(|v| v.uid().map(str::to_owned));
                // virt-handler closes the socket when the domain goes; the watch may know
                // first, and a socket to a replaced VMI would only ever be silent.
                if now.is_some() && now != connected_to {
                    let _ = socket.close(None).await;
                    return Some(Ended::Replaced);
                }
            }
        }
    }
}

/// One upgrade through the kube client (it adds the token and TLS).
async fn connect(inner: &Inner, label: &str) -> Result<Socket, MachineError> {
    let key = generate_key();
    let path = console::console_path(&inner.config.namespace, &inner.config.vm_name);
    let request = console::upgrade_request(&path, &key)?;
    let response = inner
        .api
        .client()
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(|e| {
            MachineError::Unavailable(format!(
                "KubeVirt API unreachable (serial console of {label}): {}",
                describe_kube(&e)
            ))
        })?;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            response.into_body(),
            REFUSAL_BODY_LIMIT,
        ))
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
        return Err(console::refusal(
            status.as_u16(),
            &console::status_message(&body),
            label,
        ));
    }
    console::check_handshake(
        status,
        response.headers(),
        &derive_accept_key(key.as_bytes()),
    )?;
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| {
        MachineError::Unavailable(format!("the console connection was not upgraded: {e}"))
    })?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
}
