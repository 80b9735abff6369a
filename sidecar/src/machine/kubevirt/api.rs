//! The writes the BMC makes to the KubeVirt API, with retries on conflicts and counters.
//! Only merge patches of annotations, JSON patches guarded by `test` ops, and KubeVirt's
//! subresources: nothing ever replaces a whole object.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};

use super::errors::{Failure, classify};
use super::power::Call;
use super::types::VirtualMachine;
use crate::machine::MachineError;

const CONFLICT_RETRIES: u32 = 6;
const CONFLICT_BACKOFF: Duration = Duration::from_millis(20);

/// Hand-written counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub calls_ok: AtomicU64,
    pub calls_failed: AtomicU64,
    pub conflicts: AtomicU64,
    pub call_micros_total: AtomicU64,
}

impl Metrics {
    fn record(&self, started: Instant, ok: bool) {
        let counter = if ok {
            &self.calls_ok
        } else {
            &self.calls_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.call_micros_total
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct KubevirtApi {
    client: kube::Client,
    vms: kube::Api<VirtualMachine>,
    pub namespace: String,
    pub name: String,
    pub metrics: Arc<Metrics>,
}

impl Call {
    fn path(self) -> (&'static str, &'static str) {
        match self {
            Call::Pause => ("virtualmachineinstances", "pause"),
            Call::Unpause => ("virtualmachineinstances", "unpause"),
            Call::Reset => ("virtualmachineinstances", "reset"),
            Call::SoftReboot => ("virtualmachineinstances", "softreboot"),
            Call::Restart => ("virtualmachines", "restart"),
            Call::Start => ("virtualmachines", "start"),
        }
    }
}

impl KubevirtApi {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        KubevirtApi {
            vms: kube::Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            metrics: Arc::default(),
        }
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    fn vm_label(&self) -> String {
        format!("VirtualMachine {}/{}", self.namespace, self.name)
    }

    /// Sets (`Some`) or removes (`None`) the BMC's annotations. Merge patches touch only the
    /// keys named, so they need no resourceVersion and cannot conflict with other writers.
    pub async fn patch_annotations(
        &self,
        changes: &std::collections::BTreeMap<&str, Option<String>>,
    ) -> Result<VirtualMachine, MachineError> {
        let patch = super::annotations::merge_patch(changes);
        let what = format!("patch {}", self.vm_label());
        self.retrying(&what, || async {
            self.vms
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        })
        .await
    }

    /// A JSON patch; the caller's ops start with a `test` of the resourceVersion it read.
    /// A conflict is returned (not retried) so the caller can rebuild from a fresh read.
    pub async fn json_patch(
        &self,
        ops: json_patch::Patch,
    ) -> Result<Result<VirtualMachine, ()>, MachineError> {
        let what = format!("patch {}", self.vm_label());
        let started = Instant::now();
        let result = self
            .vms
            .patch(&self.name, &PatchParams::default(), &Patch::<()>::Json(ops))
            .await;
        self.metrics.record(started, result.is_ok());
        match result {
            Ok(vm) => Ok(Ok(vm)),
            Err(error) => match classify(&error, &what) {
                Failure::Conflict => {
                    self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                    Ok(Err(()))
                }
                Failure::Fatal(e) => Err(e),
            },
        }
    }

    /// Whether the API server serves CDI's DataVolumes (API discovery,
    /// `GET /apis/cdi.kubevirt.io/v1beta1`), as the controller asks before watching them.
    /// Discovery is open to every authenticated client (the `system:discovery` ClusterRole),
    /// so the sidecar's Role needs no rule for it. 404 means the group is not served.
    pub async fn cdi_served(&self) -> Result<bool, MachineError> {
        let what = "discover cdi.kubevirt.io/v1beta1";
        match self
            .client
            .list_api_group_resources("cdi.kubevirt.io/v1beta1")
            .await
        {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == "datavolumes")),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(error) => Err(match classify(&error, what) {
                Failure::Conflict => MachineError::Busy(what.to_owned()),
                Failure::Fatal(e) => e,
            }),
        }
    }

    pub async fn get_vm(&self) -> Result<VirtualMachine, MachineError> {
        let what = format!("get {}", self.vm_label());
        let started = Instant::now();
        let result = self.vms.get(&self.name).await;
        self.metrics.record(started, result.is_ok());
        result.map_err(|error| match classify(&error, &what) {
            Failure::Conflict => MachineError::Busy(what),
            Failure::Fatal(e) => e,
        })
    }

    /// PUT on a KubeVirt subresource of the VM or its VMI.
    pub async fn call(&self, call: Call) -> Result<(), MachineError> {
        let (resource, verb) = call.path();
        let url = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{}/{resource}/{}/{verb}",
            self.namespace, self.name
        );
        let kind = if resource == "virtualmachines" {
            "VirtualMachine"
        } else {
            "VirtualMachineInstance"
        };
        let what = format!("{verb} {kind} {}/{}", self.namespace, self.name);
        self.retrying(&what, || async {
            let request = http::Request::put(&url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(b"{}".to_vec())
                .map_err(kube::Error::HttpError)?;
            self.client.request_text(request).await.map(|_| ())
        })
        .await
    }

    async fn retrying<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, MachineError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut delay = CONFLICT_BACKOFF;
        for _ in 0..CONFLICT_RETRIES {
            let started = Instant::now();
            let result = attempt().await;
            self.metrics.record(started, result.is_ok());
            match result {
                Ok(value) => return Ok(value),
                Err(error) => match classify(&error, what) {
                    Failure::Conflict => {
                        self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(what, "conflict; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Failure::Fatal(e) => {
                        tracing::warn!(what, error = %e, "KubeVirt API call failed");
                        return Err(e);
                    }
                },
            }
        }
        Err(MachineError::Busy(format!(
            "{what}: other writers kept changing the VM; retry"
        )))
    }
}
