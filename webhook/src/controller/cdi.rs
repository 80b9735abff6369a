//! Is CDI installed? API discovery (`GET /apis/cdi.kubevirt.io/v1beta1`), the way kubectl and
//! client-go's discovery client find out what a cluster serves. Without CDI the controller
//! does not watch DataVolumes (a watch of an unserved resource fails at once, forever) and
//! records on the VM that media cannot be imported; the check is repeated every
//! [`RECHECK`], so installing CDI later needs no restart of the controller.
//!
//! Discovery is readable by every authenticated client (the `system:discovery` ClusterRole,
//! kubernetes plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go): no RBAC rule to add.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::Client;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};

use super::apply;
use super::run::TriggerBackoff;

pub const GROUP_VERSION: &str = "cdi.kubevirt.io/v1beta1";
pub const RESOURCE: &str = "datavolumes";
/// How often a cluster without CDI is asked again (`--cdi-recheck-seconds`).
pub const RECHECK: Duration = Duration::from_secs(120);

/// Whether a discovery answer lists DataVolumes (pure).
pub fn serves_data_volumes(list: &APIResourceList) -> bool {
    list.group_version == GROUP_VERSION && list.resources.iter().any(|r| r.name == RESOURCE)
}

/// `Ok(false)` when the group/version is not served (404, what kube-apiserver answers for an
/// unknown group); other failures are errors (the answer is unknown).
pub async fn served(client: &Client) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(GROUP_VERSION).await {
        Ok(list) => Ok(serves_data_volumes(&list)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// What the reconciles read: `true` while discovery last said CDI is missing. A change wakes
/// [`CdiState::changes`], so every VM is reconciled at once (a medium inserted before CDI
/// was installed gets its DataVolume without waiting for the resync).
#[derive(Debug, Clone)]
pub struct CdiState {
    missing: Arc<AtomicBool>,
    changed: Arc<tokio::sync::watch::Sender<()>>,
}

impl Default for CdiState {
    fn default() -> Self {
        CdiState {
            missing: Arc::default(),
            changed: Arc::new(tokio::sync::watch::channel(()).0),
        }
    }
}

impl CdiState {
    pub fn missing(&self) -> bool {
        self.missing.load(Ordering::Relaxed)
    }

    /// One item per change of [`CdiState::missing`].
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        let rx = self.changed.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    pub(super) fn set_missing(&self, missing: bool) {
        if self.missing.swap(missing, Ordering::Relaxed) != missing {
            self.changed.send_replace(());
            if missing {
                tracing::warn!(
                    "CDI is not installed (no {GROUP_VERSION} {RESOURCE}): virtual media \
                     cannot be imported; asking API discovery again periodically"
                );
            } else {
                tracing::info!("CDI is installed: watching DataVolumes");
            }
        }
    }
}

/// The media DataVolumes the controller made, as the DataVolume watch last saw them, so a
/// reconcile of a VM with media reads its import's progress without a GET. Kept across the
/// watch's restarts (CDI uninstalled and installed again): each new watch's initial list
/// replaces the content (`Writer::apply_watcher_event` on `InitDone`).
#[derive(Clone)]
pub struct DataVolumeCache {
    writer: Arc<std::sync::Mutex<Writer<DynamicObject>>>,
    reader: Store<DynamicObject>,
}

impl Default for DataVolumeCache {
    fn default() -> Self {
        let writer = Writer::new(apply::data_volume_resource());
        let reader = writer.as_reader();
        DataVolumeCache {
            writer: Arc::new(std::sync::Mutex::new(writer)),
            reader,
        }
    }
}

impl DataVolumeCache {
    /// The DataVolume if the watch has it; None means "ask the API server" (not watched yet,
    /// or not one of ours: the watch sees only what carries our label).
    pub fn get(&self, namespace: &str, name: &str) -> Option<DynamicObject> {
        let key = ObjectRef::new_with(name, apply::data_volume_resource()).within(namespace);
        self.reader.get(&key).map(|dv| dv.as_ref().clone())
    }

    fn apply(&self, event: &watcher::Event<DynamicObject>) {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply_watcher_event(event);
    }
}

type Triggers = Pin<Box<dyn Stream<Item = Result<DynamicObject, watcher::Error>> + Send>>;

enum Step {
    Probe { wait: Duration },
    Watching(Triggers),
}

/// The DataVolume triggers of the controller: a watch of our DataVolumes (filling `cache`)
/// while CDI is served, nothing (and one discovery request per [`RECHECK`]) while it is not.
/// A watch error asks discovery again, so uninstalling CDI stops the watch instead of
/// retrying it every second or two.
pub fn triggers(
    client: Client,
    config: watcher::Config,
    state: CdiState,
    recheck: Duration,
    cache: DataVolumeCache,
) -> impl Stream<Item = Result<DynamicObject, watcher::Error>> + Send {
    let resource = apply::data_volume_resource();
    let watch = move |client: &Client| -> Triggers {
        let cache = cache.clone();
        watcher(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            config.clone(),
        )
        .backoff(TriggerBackoff::default())
        .modify(|dv: &mut DynamicObject| super::cache::prune_meta(&mut dv.metadata))
        .inspect(move |event| {
            if let Ok(event) = event {
                cache.apply(event);
            }
        })
        .touched_objects()
        .boxed()
    };
    futures::stream::unfold(
        Step::Probe {
            wait: Duration::ZERO,
        },
        move |mut step| {
            let client = client.clone();
            let state = state.clone();
            let watch = watch.clone();
            async move {
                loop {
                    step = match step {
                        Step::Probe { wait } => {
                            tokio::time::sleep(wait).await;
                            match served(&client).await {
                                Ok(true) => {
                                    state.set_missing(false);
                                    Step::Watching(watch(&client))
                                }
                                Ok(false) => {
                                    state.set_missing(true);
                                    Step::Probe { wait: recheck }
                                }
                                // The API server is unreachable: the other watches report it;
                                // ask again soon, keep what we knew.
                                Err(error) => {
                                    tracing::debug!(%error, "CDI discovery failed");
                                    Step::Probe {
                                        wait: Duration::from_secs(10),
                                    }
                                }
                            }
                        }
                        Step::Watching(mut stream) => match stream.next().await {
                            Some(Ok(dv)) => return Some((Ok(dv), Step::Watching(stream))),
                            Some(Err(error)) => match served(&client).await {
                                Ok(false) => {
                                    state.set_missing(true);
                                    Step::Probe { wait: recheck }
                                }
                                _ => return Some((Err(error), Step::Watching(stream))),
                            },
                            None => Step::Probe {
                                wait: Duration::ZERO,
                            },
                        },
                    };
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    fn list(group_version: &str, names: &[&str]) -> APIResourceList {
        APIResourceList {
            group_version: group_version.to_owned(),
            resources: names
                .iter()
                .map(|n| APIResource {
                    name: (*n).to_owned(),
                    kind: "X".to_owned(),
                    namespaced: true,
                    singular_name: String::new(),
                    verbs: vec!["list".to_owned(), "watch".to_owned()],
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn only_datavolumes_of_v1beta1_count_as_cdi() {
        assert!(serves_data_volumes(&list(
            GROUP_VERSION,
            &["datavolumes", "datavolumes/status", "cdis"]
        )));
        // An older or partial CDI without the resource we create.
        assert!(!serves_data_volumes(&list(GROUP_VERSION, &["cdis"])));
        assert!(!serves_data_volumes(&list(
            "cdi.kubevirt.io/v1alpha1",
            &["datavolumes"]
        )));
    }
}
