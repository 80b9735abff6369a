//! Virtual media: the sidecar writes the desired image on the VM; we import it with a CDI
//! DataVolume and, once imported, attach it as the `bmc-media` CD-ROM (declarative hotplug).
//! Pure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::children::VmRef;
use crate::annotations::{self, MediaPhase, MediaStatus};
use crate::names;

/// Requested size of an import whose image size was not recorded (a `media` annotation written
/// by hand or by an older sidecar): CDI needs one.
pub const MEDIA_SIZE_UNKNOWN: &str = "4Gi";
/// CDI's `AnnImmediateBinding` (containerized-data-importer pkg/controller/common/util.go):
/// bind and import at once even when the StorageClass is `WaitForFirstConsumer`. Without it
/// such storage waits for a consumer, and the CD-ROM is attached (consumed) only once the
/// import is done: neither would ever happen.
pub const IMMEDIATE_BINDING: &str = "cdi.kubevirt.io/storage.bind.immediate.requested";
const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum DvAction {
    None,
    Apply(Value),
    /// Gone, or to be recreated (a DataVolume's source is immutable): deleted now, created on
    /// the next reconcile.
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlan {
    pub data_volume: DvAction,
    /// Merge-patch fragment of the VM's `spec` (whole disks/volumes arrays).
    pub vm_spec: Option<Value>,
    pub status_annotation: Option<(String, Value)>,
}

/// The storage to request for an image of `size_bytes`. With the `storage` API CDI itself adds
/// the filesystem overhead and aligns (`InflateSizeWithOverhead`/`GetRequiredSpace`, CDI
/// pkg/controller/common/util.go); an ISO imports as raw, so its virtual size is its size. We
/// round up to whole MiB so the request reads well in `kubectl get pvc`.
pub fn storage_request(size_bytes: Option<u64>) -> String {
    match size_bytes {
        Some(bytes) => format!("{}Mi", bytes.div_ceil(MIB).max(1)),
        None => MEDIA_SIZE_UNKNOWN.to_owned(),
    }
}

pub fn data_volume(vm: &VmRef, media: &annotations::Media) -> Value {
    let mut metadata =
        serde_json::to_value(vm.meta(names::media_data_volume(&vm.name))).expect("meta");
    metadata["annotations"][IMMEDIATE_BINDING] = json!("true");
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": metadata,
        "spec": {
            "source": {"http": {"url": media.image}},
            "storage": {"resources": {"requests": {"storage": storage_request(media.size_bytes)}}}
        }
    })
}

fn status_of(dv: &Value) -> MediaStatus {
    let phase = dv["status"]["phase"].as_str().unwrap_or("Pending");
    let failure = dv["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Running" && c["status"] == "False" && c["reason"] != "Completed")
        .and_then(|c| c["message"].as_str().map(str::to_owned));
    match phase {
        "Succeeded" => MediaStatus {
            phase: MediaPhase::Ready,
            progress: Some("100.0%".to_owned()),
            reason: None,
        },
        "Failed" => MediaStatus {
            phase: MediaPhase::Failed,
            progress: None,
            reason: Some(failure.unwrap_or_else(|| "import failed".to_owned())),
        },
        _ => MediaStatus {
            phase: MediaPhase::Importing,
            progress: dv["status"]["progress"].as_str().map(str::to_owned),
            reason: failure,
        },
    }
}

fn without_media(list: &Value) -> Vec<Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["name"] != names::MEDIA_DISK)
        .cloned()
        .collect()
}

fn has_media(list: &Value) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .any(|d| d["name"] == names::MEDIA_DISK)
}

/// Spec fragment that removes the media disk and volume, when present.
pub fn detach(vm: &Value) -> Option<Value> {
    let t = &vm["spec"]["template"]["spec"];
    let disks = &t["domain"]["devices"]["disks"];
    let volumes = &t["volumes"];
    (has_media(disks) || has_media(volumes)).then(|| {
        json!({"template": {"spec": {
            "domain": {"devices": {"disks": without_media(disks)}},
            "volumes": without_media(volumes)
        }}})
    })
}

pub fn plan(
    vm: &Value,
    vm_ref: &VmRef,
    annotations: &BTreeMap<String, String>,
    dv: Option<&Value>,
) -> MediaPlan {
    let desired = annotations::media(annotations)
        .ok()
        .flatten()
        .filter(|m| m.inserted);
    let current_status = annotations.get(annotations::MEDIA_STATUS);
    let Some(media) = desired else {
        return MediaPlan {
            data_volume: if dv.is_some() {
                DvAction::Delete
            } else {
                DvAction::None
            },
            vm_spec: detach(vm),
            status_annotation: current_status
                .map(|_| (annotations::MEDIA_STATUS.to_owned(), Value::Null)),
        };
    };
    let (data_volume, status) = match dv {
        Some(dv) if dv["spec"]["source"]["http"]["url"].as_str() != Some(media.image.as_str()) => (
            DvAction::Delete,
            MediaStatus {
                phase: MediaPhase::Importing,
                progress: None,
                reason: Some("replacing the previous image".to_owned()),
            },
        ),
        Some(dv) => (DvAction::None, status_of(dv)),
        None => (
            DvAction::Apply(data_volume(vm_ref, &media)),
            MediaStatus {
                phase: MediaPhase::Importing,
                progress: None,
                reason: None,
            },
        ),
    };
    // Attached only once imported: a VM template naming a DataVolume that is still
    // importing, or failed, may not start, and without a launcher Pod there is no BMC left
    // to eject the medium through.
    let imported = status.phase == MediaPhase::Ready && data_volume == DvAction::None;
    let vm_spec = if imported {
        attach(vm, vm_ref)
    } else {
        detach(vm)
    };
    let text = status.to_annotation();
    MediaPlan {
        data_volume,
        vm_spec,
        status_annotation: (current_status != Some(&text))
            .then(|| (annotations::MEDIA_STATUS.to_owned(), json!(text))),
    }
}

/// Spec fragment that adds the media CD-ROM and its DataVolume volume, unless present.
fn attach(vm: &Value, vm_ref: &VmRef) -> Option<Value> {
    let t = &vm["spec"]["template"]["spec"];
    let disks = &t["domain"]["devices"]["disks"];
    let volumes = &t["volumes"];
    (!has_media(disks) || !has_media(volumes)).then(|| {
        let mut d = without_media(disks);
        d.push(json!({"name": names::MEDIA_DISK, "cdrom": {"bus": "sata", "readonly": true}}));
        let mut v = without_media(volumes);
        v.push(json!({"name": names::MEDIA_DISK, "dataVolume": {
            "name": names::media_data_volume(&vm_ref.name), "hotpluggable": true
        }}));
        json!({"template": {"spec": {"domain": {"devices": {"disks": d}}, "volumes": v}}})
    })
}
