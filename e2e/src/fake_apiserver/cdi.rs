//! CDI's HTTP importer, simulated: every new DataVolume with an `http` source is fetched for
//! real (plain HTTP on the test's own image server) and its status moves through the phases
//! CDI reports, with the status shapes of CDI v1.6x: `ImportScheduled` → `ImportInProgress`
//! (progress "NN.NN%") → `Succeeded` ("100.0%", Ready), or, when the source does not answer
//! 200, the importer's error on the Running condition → `Failed`.
//!
//! Not simulated: the PVC CDI binds (only `claimName` names it), scratch space, retries with
//! backoff (real CDI restarts the importer Pod and counts `restartCount`; one restart is shown
//! before `Failed`), and https sources (answered as a failed import naming the limitation).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Shared;
use super::store::{self, EventType, Gvr, Key};

pub fn gvr() -> Gvr {
    Gvr::new("cdi.kubevirt.io", "v1beta1", "datavolumes")
}

/// What the importer found at the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    Ok { bytes: usize },
    Failed(String),
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-21T18:30:00Z",
        "lastHeartbeatTime": "2026-11-21T18:30:00Z",
    })
}

/// The statuses CDI writes for one import, in order (pure).
pub fn phases(claim: &str, fetch: &Fetch) -> Vec<Value> {
    let bound = condition("Bound", true, "Bound", &format!("PVC {claim} Bound"));
    let mut out = vec![json!({
        "claimName": claim,
        "phase": "ImportScheduled",
        "progress": "N/A",
        "conditions": [
            bound,
            condition("Ready", false, "TransferScheduled", ""),
            condition("Running", false, "Pending", "Import pod pending"),
        ],
    })];
    match fetch {
        Fetch::Ok { .. } => {
            for progress in ["12.50%", "47.30%", "88.10%"] {
                out.push(json!({
                    "claimName": claim,
                    "phase": "ImportInProgress",
                    "progress": progress,
                    "conditions": [
                        bound,
                        condition("Ready", false, "TransferRunning", ""),
                        condition("Running", true, "Pod is running", ""),
                    ],
                }));
            }
            out.push(json!({
                "claimName": claim,
                "phase": "Succeeded",
                "progress": "100.0%",
                "conditions": [
                    bound,
                    condition("Ready", true, "", ""),
                    condition("Running", false, "Completed", "Import Complete"),
                ],
            }));
        }
        Fetch::Failed(message) => {
            let error = condition("Running", false, "Error", message);
            out.push(json!({
                "claimName": claim,
                "phase": "ImportInProgress",
                "progress": "N/A",
                "restartCount": 1,
                "conditions": [bound, condition("Ready", false, "TransferRunning", ""), error],
            }));
            out.push(json!({
                "claimName": claim,
                "phase": "Failed",
                "progress": "N/A",
                "restartCount": 1,
                "conditions": [bound, condition("Ready", false, "TransferFailed", ""), error],
            }));
        }
    }
    out
}

/// GET `url` as CDI's importer would (status line checked, body read to the end).
pub async fn fetch(url: &str) -> Fetch {
    let Some(rest) = url.strip_prefix("http://") else {
        return Fetch::Failed(format!(
            "the simulated CDI importer fetches http:// sources only, not {url}"
        ));
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let connect =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(host)).await;
    let mut stream = match connect {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Fetch::Failed(format!(
                "Unable to connect to http data source: Get \"{url}\": dial tcp {host}: {e}"
            ));
        }
        Err(_) => {
            return Fetch::Failed(format!(
                "Unable to connect to http data source: Get \"{url}\": dial tcp {host}: i/o timeout"
            ));
        }
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    let read = async {
        stream.write_all(request.as_bytes()).await?;
        stream.read_to_end(&mut response).await
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        return Fetch::Failed(format!("Unable to connect to http data source: {e}"));
    }
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let code = words
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(0);
    let reason = words.next().unwrap_or_default();
    if code != 200 {
        return Fetch::Failed(format!(
            "Unable to connect to http data source: expected status code 200, got {code}. Status: {code} {reason}"
        ));
    }
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    Fetch::Ok { bytes: body }
}

/// Watches for new DataVolumes and imports each; a DataVolume deleted (or replaced) during its
/// import is left alone from then on, as CDI's importer Pod goes with it.
pub(super) fn run(shared: Arc<Shared>, step: Duration) {
    let mut events = shared.store().subscribe();
    tokio::spawn(async move {
        while let Some(event) = store::next_event(&mut events, "simulated CDI").await {
            if event.key.gvr != gvr() || event.kind != EventType::Added {
                continue;
            }
            tokio::spawn(import(shared.clone(), event.key, event.object, step));
        }
    });
}

async fn import(shared: Arc<Shared>, key: Key, dv: Value, step: Duration) {
    let uid = dv["metadata"]["uid"].clone();
    let outcome = match dv["spec"]["source"]["http"]["url"].as_str() {
        Some(url) => fetch(url).await,
        None => Fetch::Failed("the simulated CDI imports http sources only".to_owned()),
    };
    for status in phases(&key.name, &outcome) {
        tokio::time::sleep(step).await;
        let mut store = shared.store();
        let Some(mut current) = store.get(&key).cloned() else {
            return;
        };
        if current["metadata"]["uid"] != uid
            || current["metadata"].get("deletionTimestamp").is_some()
        {
            return;
        }
        current["status"] = status;
        store.put(&key, current);
        shared.settle(&mut store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_import_ends_succeeded_and_ready_a_bad_one_failed_with_the_importers_message() {
        let good = phases("vm1-bmc-media", &Fetch::Ok { bytes: 10 });
        let names: Vec<&str> = good.iter().map(|s| s["phase"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "ImportScheduled",
                "ImportInProgress",
                "ImportInProgress",
                "ImportInProgress",
                "Succeeded"
            ]
        );
        let last = good.last().unwrap();
        assert_eq!(last["progress"], "100.0%");
        assert!(
            last["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        );
        let bad = phases(
            "d",
            &Fetch::Failed("expected status code 200, got 404".into()),
        );
        let last = bad.last().unwrap();
        assert_eq!(last["phase"], "Failed");
        let running = last["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Running")
            .unwrap();
        assert_eq!(running["reason"], "Error");
        assert!(running["message"].as_str().unwrap().contains("got 404"));
    }

    #[tokio::test]
    async fn fetch_reports_the_status_line_and_unreachable_hosts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nISO!",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        assert_eq!(
            fetch(&format!("http://{addr}/a.iso")).await,
            Fetch::Ok { bytes: 4 }
        );
        let Fetch::Failed(message) = fetch(&format!("http://{addr}/b.iso")).await else {
            panic!("404 is a failure")
        };
        assert!(
            message.ends_with("expected status code 200, got 404. Status: 404 Not Found"),
            "{message}"
        );
        assert!(matches!(
            fetch("https://example.invalid/x.iso").await,
            Fetch::Failed(_)
        ));
    }
}
