//! Admission throughput and latency over HTTPS with the captured opted-in review
//! (`cargo bench -p kubevirt-bmc-webhook --bench admission`). Not a test: `cargo test` builds it
//! and it returns at once without `--bench`.
//!
//! Prints a table: in-process decision time, then end-to-end over TLS with keep-alive
//! connections at several concurrencies (reviews/s, p50, p99).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use hyper::body::Bytes;
use kubevirt_bmc_webhook::admission;
use kubevirt_bmc_webhook::inject::InjectionConfig;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn row(name: &str, total: Duration, mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "| {name:<34} | {:>9} | {:>12.0} | {:>8.1} | {:>8.1} |",
        samples.len(),
        samples.len() as f64 / total.as_secs_f64(),
        percentile(&samples, 0.50).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
    )
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "admission bench: run with `cargo bench -p kubevirt-bmc-webhook --bench admission`"
        );
        return;
    }
    let opted_in = std::fs::read(common::fixture_path("admissionreview-a-vm1-optin.json")).unwrap();
    let not_opted =
        std::fs::read(common::fixture_path("admissionreview-b-vm2-no-optin.json")).unwrap();
    let mut lines = vec![
        "| scenario                           | reviews   | reviews/s    | p50 µs   | p99 µs   |"
            .to_owned(),
        "|------------------------------------|-----------|--------------|----------|----------|"
            .to_owned(),
    ];

    // The decision alone: decode, decide, encode.
    let config = InjectionConfig::test();
    for (name, body) in [
        ("in-process, opted-in (patch)", &opted_in),
        ("in-process, not opted in", &not_opted),
    ] {
        let mut samples = Vec::with_capacity(20_000);
        let start = Instant::now();
        for _ in 0..20_000 {
            let t = Instant::now();
            let (review, _) = admission::mutate_pods(body, &config);
            std::hint::black_box(admission::encode(&review).unwrap());
            samples.push(t.elapsed());
        }
        lines.push(row(name, start.elapsed(), samples));
    }

    // Over HTTPS: keep-alive connections like the API server's.
    let ca = common::tls::Ca::new();
    let (cert, key, _) = ca.serving("bench");
    let dir = common::tls::SecretDir::new(&cert, &key);
    let server = common::tls::start(&dir.cert(), &dir.key(), Duration::from_secs(60)).await;
    let body = Bytes::from(opted_in.clone());
    for connections in [1usize, 4, 16] {
        let per_connection = 20_000 / connections;
        let mut clients = Vec::new();
        for _ in 0..connections {
            let mut c = common::tls::Client::connect(server.addr, &ca.der).await;
            for _ in 0..100 {
                c.request("POST", "/mutate-pods?timeout=5s", body.clone())
                    .await; // warm-up
            }
            clients.push(c);
        }
        let start = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(per_connection);
                    for _ in 0..per_connection {
                        let t = Instant::now();
                        let (status, _) = c
                            .request("POST", "/mutate-pods?timeout=5s", body.clone())
                            .await;
                        assert_eq!(status, 200);
                        samples.push(t.elapsed());
                    }
                    samples
                })
            })
            .collect();
        let mut samples = Vec::new();
        for t in tasks {
            samples.extend(t.await.unwrap());
        }
        lines.push(row(
            &format!("HTTPS, opted-in, {connections} connection(s)"),
            start.elapsed(),
            samples,
        ));
    }
    let table = lines.join("\n");
    println!("{table}");
    let out =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-admission.md");
    if std::fs::write(&out, format!("{table}\n")).is_ok() {
        println!("written to {}", out.display());
    }
}
