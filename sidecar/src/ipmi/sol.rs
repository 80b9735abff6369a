//! The SOL bridge: while a session holds the SOL payload the machine's serial console is
//! attached (Activate Payload attaches, Deactivate or the owner's session ending detaches),
//! its output goes into the session layer's SOL state machine and SOL input goes to it.
//! Decisions stay in the pure crate.
//!
//! Attaching only while someone watches matters for KubeVirt: its console takes one client
//! at a time, so a BMC holding it permanently would fight `virtctl console` users.

use std::sync::Arc;
use std::time::Duration;

use kubevirt_bmc_ipmi::session::{ConsoleInput as SolInput, Event};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::{Context, fill_random, lock, log_event, send};
use crate::machine::ConsoleInput;

/// How often retransmission and accumulation deadlines are checked while output is
/// pending; the accumulate interval (5 ms) is the finest deadline.
const TICK: Duration = Duration::from_millis(5);
const INPUT_QUEUE: usize = 64;

/// The console attachment of the session that holds SOL.
pub(super) struct Attached {
    session: u32,
    keys: mpsc::Sender<ConsoleInput>,
    relay: AbortHandle,
}

/// Attaches on activation and detaches on deactivation, whoever noticed it.
pub(super) fn on_events(ctx: &Arc<Context>, events: &[Event]) {
    for event in events {
        match *event {
            Event::SolActivated { id } => attach(ctx, id),
            Event::SolDeactivated { id } => detach(ctx, id),
            _ => {}
        }
    }
}

fn attach(ctx: &Arc<Context>, session: u32) {
    let mut attached = lock(&ctx.attached);
    // The owner retransmitting its Activate keeps its attachment.
    if attached.as_ref().is_some_and(|a| a.session == session) {
        return;
    }
    if let Some(old) = attached.take() {
        old.relay.abort();
    }
    let (keys, typed) = mpsc::channel(INPUT_QUEUE);
    let relay = tokio::spawn(relay(ctx.clone(), typed)).abort_handle();
    *attached = Some(Attached {
        session,
        keys,
        relay,
    });
}

fn detach(ctx: &Context, session: u32) {
    let mut attached = lock(&ctx.attached);
    if attached.as_ref().is_some_and(|a| a.session == session)
        && let Some(a) = attached.take()
    {
        // Dropping the relay drops the machine's Console: the machine detaches.
        a.relay.abort();
    }
}

async fn recv(printed: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match printed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs while attached: console output to the SOL owner, SOL input to the console, and the
/// retransmission and accumulation ticks in between.
async fn relay(ctx: Arc<Context>, mut typed: mpsc::Receiver<ConsoleInput>) {
    let (mut input, mut printed) = match ctx.machine.console().await {
        Ok(console) => (Some(console.input), Some(console.output)),
        Err(error) => {
            tracing::warn!(%error, "SOL active but the serial console cannot be attached");
            let notice = format!("\r\n[kubevirt-bmc: no serial console: {error}]\r\n");
            push(&ctx, Some(notice.as_bytes())).await;
            (None, None)
        }
    };
    loop {
        let busy = lock(&ctx.sessions).sol_busy();
        tokio::select! {
            bytes = recv(&mut printed) => match bytes {
                Some(bytes) => push(&ctx, Some(&bytes)).await,
                None => {
                    tracing::warn!("serial console ended; SOL carries nothing more");
                    (input, printed) = (None, None);
                    push(&ctx, Some(b"\r\n[kubevirt-bmc: the serial console ended]\r\n")).await;
                }
            },
            key = typed.recv() => match (key, &input) {
                (Some(key), Some(console)) => {
                    // Never stall SOL on a slow console; the ACK already went out, so a
                    // full queue loses keystrokes as an overrun serial line would.
                    if let Err(error) = console.try_send(key) {
                        tracing::warn!(%error, "SOL input not delivered to the console");
                    }
                }
                (Some(_), None) => {}
                (None, _) => return,
            },
            () = tokio::time::sleep(TICK), if busy => push(&ctx, None).await,
        }
    }
}

/// Output (or, with None, a tick) through the session layer to the SOL owner.
async fn push(ctx: &Arc<Context>, bytes: Option<&[u8]>) {
    let now = ctx.started.elapsed();
    let (sends, events) = {
        let mut sessions = lock(&ctx.sessions);
        let sends = match bytes {
            Some(bytes) => sessions.sol_output(bytes, now, &mut fill_random),
            None => sessions.sol_tick(now, &mut fill_random),
        };
        (sends, sessions.take_sol_events())
    };
    if let Some(s) = sends {
        for d in &s.datagrams {
            send(ctx, d, s.peer).await;
        }
    }
    handle_events(ctx, &events);
}

/// Logs events the session layer produced outside a reply and acts on SOL ones.
pub(super) fn handle_events(ctx: &Arc<Context>, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let local = ctx
        .socket
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    for event in events {
        log_event(event, local);
    }
    on_events(ctx, events);
}

/// A SOL packet's characters to the console, its ACK back to the console.
pub(super) async fn deliver(ctx: &Context, input: SolInput) {
    for d in &input.datagrams {
        send(ctx, d, input.peer).await;
    }
    let Some(keys) = lock(&ctx.attached).as_ref().map(|a| a.keys.clone()) else {
        return;
    };
    let mut items = Vec::new();
    if !input.bytes.is_empty() {
        items.push(ConsoleInput::Bytes(input.bytes));
    }
    if input.send_break {
        items.push(ConsoleInput::Break);
    }
    for item in items {
        // Never stall the UDP loop on a slow console (see `relay`).
        if let Err(error) = keys.try_send(item) {
            tracing::warn!(%error, "SOL input not delivered to the console");
        }
    }
}

/// Datagrams the session layer produced for other peers (a deactivation notice).
pub(super) async fn send_elsewhere(ctx: &Context) {
    let elsewhere = lock(&ctx.sessions).take_elsewhere();
    for (d, peer) in elsewhere {
        send(ctx, &d, peer).await;
    }
}
