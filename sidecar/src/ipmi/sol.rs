//! The SOL bridge: serial-console output into the session layer's SOL state machine,
//! SOL input from the UDP loop to the console. Decisions stay in the pure crate.

use std::sync::Arc;
use std::time::Duration;

use kubevirt_bmc_ipmi::session::ConsoleInput as SolInput;
use tokio::sync::mpsc;

use super::{Context, fill_random, lock, log_event, send};
use crate::machine::ConsoleInput;

/// How often retransmission and accumulation deadlines are checked while output is
/// pending; the accumulate interval (5 ms) is the finest deadline.
const TICK: Duration = Duration::from_millis(5);

/// Forwards console output to the SOL owner until the console ends.
pub(super) async fn pump(ctx: Arc<Context>, mut output: mpsc::Receiver<Vec<u8>>) {
    loop {
        let busy = lock(&ctx.sessions).sol_busy();
        let bytes = if busy {
            tokio::select! {
                bytes = output.recv() => Some(bytes),
                _ = tokio::time::sleep(TICK) => None,
            }
        } else {
            Some(output.recv().await)
        };
        let now = ctx.started.elapsed();
        let sends = {
            let mut sessions = lock(&ctx.sessions);
            let sends = match &bytes {
                Some(Some(bytes)) => sessions.sol_output(bytes, now, &mut fill_random),
                Some(None) => {
                    tracing::warn!("serial console ended; SOL carries nothing more");
                    return;
                }
                None => sessions.sol_tick(now, &mut fill_random),
            };
            for event in sessions.take_sol_events() {
                log_event(
                    &event,
                    ctx.socket
                        .local_addr()
                        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()),
                );
            }
            sends
        };
        if let Some(s) = sends {
            for d in &s.datagrams {
                send(&ctx, d, s.peer).await;
            }
        }
    }
}

/// A SOL packet's characters to the console, its ACK back to the console.
pub(super) async fn deliver(ctx: &Context, input: SolInput) {
    for d in &input.datagrams {
        send(ctx, d, input.peer).await;
    }
    let Some(console) = &ctx.console else {
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
        // Never stall the UDP loop on a slow console; the ACK already went out, so a full
        // queue loses keystrokes as an overrun serial line would, and says so.
        if let Err(error) = console.try_send(item) {
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
