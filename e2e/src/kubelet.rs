//! The kubelet's part for one VM's BMC sidecar: it runs the `bmc` container of the VM's
//! current launcher Pod as a process (planned by `launcher`, volumes materialised from the
//! fake API server), kills it when that Pod goes away, restarts it in the same Pod when it
//! dies (a native sidecar has `restartPolicy: Always`), and starts a new one for the next
//! launcher Pod.
//!
//! A Pod that goes away has its container stopped as the kubelet does: SIGTERM, then SIGKILL
//! after the grace period. Differences from a real kubelet, on purpose: a crashed container
//! is restarted at once (no CrashLoopBackOff delay), every Pod gets the same loopback address
//! and the same high ports (standing for the `<vm>-bmc` Service's stable address), so the
//! next Pod's container starts only once the previous one has exited, and Secret volumes are
//! materialised once, at container start (the kubelet re-syncs them periodically).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::fake_apiserver::{FakeApiServer, Gvr};
use crate::launcher::{self, PodRuntime};

/// What the kubelet needs beyond the Pod.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The built executable the container's program maps to.
    pub binary: PathBuf,
    /// The image's entrypoint, for a container that gives only `args`.
    pub default_program: String,
    pub namespace: String,
    pub vm: String,
    pub container: String,
    /// Set after the container's own env (ports, KUBECONFIG).
    pub env_overrides: BTreeMap<String, String>,
    /// Where volumes are materialised, one directory per Pod.
    pub root: PathBuf,
}

/// One start of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub pod: String,
    pub pid: u32,
    /// Restarted in the same Pod after the process died.
    pub restart: bool,
}

/// virt-launcher's terminationGracePeriodSeconds is 30 s; the sidecar needs far less.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    running: Option<(String, Child)>,
    /// The container of a Pod that went away, SIGTERMed at the instant.
    terminating: Option<(Child, Instant)>,
    /// Containers that outlived the grace period and were SIGKILLed.
    killed_after_grace: u32,
    starts: Vec<Start>,
    /// The last Pod whose container could not be started, and why.
    error: Option<String>,
}

pub struct Kubelet {
    state: Arc<Mutex<State>>,
    task: tokio::task::AbortHandle,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Kubelet {
    pub fn start(fake: Arc<FakeApiServer>, config: SidecarConfig) -> Kubelet {
        let state = Arc::new(Mutex::new(State::default()));
        let task_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                sync(&fake, &config, &task_state);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .abort_handle();
        Kubelet { state, task }
    }

    pub fn starts(&self) -> Vec<Start> {
        lock(&self.state).starts.clone()
    }

    /// How many stopped containers ignored SIGTERM for the whole grace period.
    pub fn killed_after_grace(&self) -> u32 {
        lock(&self.state).killed_after_grace
    }

    /// Why the last container could not start, if it could not.
    pub fn error(&self) -> Option<String> {
        lock(&self.state).error.clone()
    }

    /// SIGKILLs the running container, as an OOM kill or a node hiccup would; the kubelet
    /// restarts it in the same Pod. The killed process id.
    pub fn crash(&self) -> Option<u32> {
        let mut state = lock(&self.state);
        let (_, child) = state.running.as_mut()?;
        let _ = child.kill();
        Some(child.id())
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        let mut state = lock(&self.state);
        let children = state
            .running
            .take()
            .map(|(_, c)| c)
            .into_iter()
            .chain(state.terminating.take().map(|(c, _)| c));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The launcher Pod of the VM's current VMI, if it carries the container.
fn current_pod(fake: &FakeApiServer, config: &SidecarConfig) -> Option<Value> {
    let vmi_uid = fake.vmi(&config.namespace, &config.vm)?["metadata"]["uid"].clone();
    fake.list(Gvr::new("", "v1", "pods"), &config.namespace)
        .into_iter()
        .find(|pod| {
            pod["metadata"]["labels"]["kubevirt.io/created-by"] == vmi_uid
                && pod["metadata"].get("deletionTimestamp").is_none()
                && ["initContainers", "containers"].iter().any(|list| {
                    pod["spec"][list]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["name"] == config.container))
                })
        })
}

fn sync(fake: &FakeApiServer, config: &SidecarConfig, state: &Mutex<State>) {
    let pod = current_pod(fake, config);
    let pod_name = pod
        .as_ref()
        .and_then(|p| p["metadata"]["name"].as_str())
        .map(str::to_owned);
    let mut guard = lock(state);
    // Field by field from here: the guard itself would lend the whole State at once.
    let state = &mut *guard;
    if let Some((child, since)) = state.terminating.as_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            if since.elapsed() < GRACE {
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            state.killed_after_grace += 1;
        }
        state.terminating = None;
    }
    let mut restart = false;
    if let Some((running_pod, child)) = state.running.as_mut() {
        if pod_name.as_deref() != Some(running_pod.as_str()) {
            // The Pod is gone: its containers are stopped, gracefully first.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            if let Some((_, child)) = state.running.take() {
                state.terminating = Some((child, Instant::now()));
            }
            return;
        } else if matches!(child.try_wait(), Ok(Some(_))) {
            state.running = None;
            restart = true;
        } else {
            return;
        }
    }
    let (Some(pod), Some(name)) = (pod, pod_name) else {
        return;
    };
    match spawn(fake, config, &pod, &name) {
        Ok(child) => {
            state.starts.push(Start {
                pod: name.clone(),
                pid: child.id(),
                restart,
            });
            state.running = Some((name, child));
            state.error = None;
        }
        Err(error) => state.error = Some(format!("{name}: {error}")),
    }
}

fn spawn(
    fake: &FakeApiServer,
    config: &SidecarConfig,
    pod: &Value,
    name: &str,
) -> Result<Child, String> {
    let runtime = PodRuntime {
        name: name.to_owned(),
        uid: pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        ip: "127.0.0.1".to_owned(),
        node_name: "node01".to_owned(),
    };
    let plan = launcher::plan_container(pod, &config.container, &runtime, &config.default_program)
        .map_err(|e| e.to_string())?;
    let mut env = plan.env.clone();
    let pod_root = config.root.join(name);
    for mount in &plan.mounts {
        let host = launcher::host_path(&pod_root, &mount.mount_path);
        std::fs::create_dir_all(&host).map_err(|e| format!("{}: {e}", host.display()))?;
        if let Some(secret) = mount.volume["secret"]["secretName"].as_str() {
            // An optional Secret that is missing leaves the directory empty and the container
            // starts (kubernetes pkg/volume/secret/secret.go `SetUpAt`: `optional` and NotFound).
            let object = match fake.get(Gvr::new("", "v1", "secrets"), &config.namespace, secret) {
                Some(object) => object,
                None if mount.volume["secret"]["optional"] == true => Value::Null,
                None => {
                    return Err(format!(
                        "Secret {secret} not found (the Pod would not start)"
                    ));
                }
            };
            for (key, value) in object["data"].as_object().into_iter().flatten() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().unwrap_or_default())
                    .map_err(|e| format!("Secret {secret} key {key}: {e}"))?;
                std::fs::write(host.join(key), bytes).map_err(|e| e.to_string())?;
            }
        }
        // The container sees the mount path; this process sees the directory.
        for value in env.values_mut() {
            if *value == mount.mount_path {
                *value = host.display().to_string();
            }
        }
    }
    env.extend(config.env_overrides.clone());
    Command::new(&config.binary)
        .args(&plan.args)
        .env_clear()
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", config.binary.display()))
}
