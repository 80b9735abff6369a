//! Virtual media: the sidecar writes the desired image on the VM; we import it with a CDI
//! DataVolume and, once imported, attach it as the `bmc-media` CD-ROM (declarative hotplug).
//! Pure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::children::VmRef;
use crate::annotations::{self, MediaPhase, MediaStatus};
use crate::names;

/// Requested size of an import whose image size was not recorded (a `media` annotation written
/// by hand or by an older sidecar; today's sidecar refuses an InsertMedia whose size its HEAD
/// request cannot learn): CDI needs one. Documented in the README.
pub const MEDIA_SIZE_UNKNOWN: &str = "4Gi";
/// CDI's `util.DefaultAlignBlockSize` (containerized-data-importer pkg/util/util.go): the
/// importer aligns the image to 1 MiB and `GetRequiredSpace` inflates the aligned size.
const ALIGN: u64 = 1 << 20;
/// Why a medium cannot be imported without CDI: the VM says so in `media-status`.
pub const CDI_MISSING: &str = "CDI (containerized-data-importer) is not installed in the cluster: the API server does not serve cdi.kubevirt.io/v1beta1 datavolumes, and virtual media are imported with a CDI DataVolume";

/// What the installation and the cluster decide for media imports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaEnv {
    /// The StorageClass of the import (`--media-storage-class`); the cluster's default one
    /// (CDI's choice) when `None`.
    pub storage_class: Option<String>,
    /// API discovery found no `cdi.kubevirt.io/v1beta1` `datavolumes`.
    pub cdi_missing: bool,
}
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

/// The storage to request for an image of `size_bytes`: the image aligned up to CDI's 1 MiB
/// block ([`ALIGN`]), nothing more. With the `storage` API (what we use, not `pvc`) CDI's
/// `renderPvcSpec` passes the request through `InflateSizeWithOverhead` (containerized-data-
/// importer pkg/controller/common/util.go): on a Filesystem volume the PVC becomes
/// `GetRequiredSpace(overhead, size)` = aligned size / (1 - filesystemOverhead) (CDIConfig's
/// `filesystemOverhead`, default 0.055 per StorageClass), on a Block volume the size itself.
/// Adding the overhead here too would count it twice. An ISO imports as raw, so its virtual
/// size is its file size; the importer's check (pkg/image/qemu.go, `Validate`: "virtual image
/// size .. is larger than the reported available storage .. A larger PVC is required") then
/// passes. Scratch space is
/// not needed: a raw image over http from a server that answers HEAD is streamed by nbdkit
/// straight to the target (doc/scratch-space.md: only servers without HEAD, custom CAs,
/// registry and upload imports need scratch), and a server without HEAD is refused at insert.
pub fn storage_request(size_bytes: Option<u64>) -> String {
    match size_bytes {
        Some(bytes) => format!("{}Mi", (bytes.div_ceil(ALIGN) * ALIGN / MIB).max(1)),
        None => MEDIA_SIZE_UNKNOWN.to_owned(),
    }
}

pub fn data_volume(vm: &VmRef, media: &annotations::Media, env: &MediaEnv) -> Value {
    let mut metadata =
        serde_json::to_value(vm.meta(names::media_data_volume(&vm.name))).expect("meta");
    metadata["annotations"][IMMEDIATE_BINDING] = json!("true");
    let mut storage =
        json!({"resources": {"requests": {"storage": storage_request(media.size_bytes)}}});
    // Absent: CDI takes the cluster's default StorageClass (or the virt default one).
    if let Some(class) = &env.storage_class {
        storage["storageClassName"] = json!(class);
    }
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": metadata,
        "spec": {
            "source": {"http": {"url": media.image}},
            "storage": storage
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
    env: &MediaEnv,
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
        // Nothing to import with: said on the VM (the sidecar refuses new inserts itself).
        _ if env.cdi_missing => (
            DvAction::None,
            MediaStatus {
                phase: MediaPhase::Failed,
                progress: None,
                reason: Some(CDI_MISSING.to_owned()),
            },
        ),
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
            DvAction::Apply(data_volume(vm_ref, &media, env)),
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
    let imported =
        status.phase == MediaPhase::Ready && data_volume == DvAction::None && !env.cdi_missing;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_ref() -> VmRef {
        VmRef {
            name: "vm1".into(),
            namespace: "vms".into(),
            uid: "uid-1".into(),
        }
    }

    fn inserted(size: Option<u64>) -> BTreeMap<String, String> {
        let media = annotations::Media {
            image: "http://images.example/rhel-dvd.iso".into(),
            inserted: true,
            write_protected: true,
            size_bytes: size,
        };
        BTreeMap::from([(annotations::MEDIA.to_owned(), media.to_annotation())])
    }

    fn vm() -> Value {
        json!({"spec": {"template": {"spec": {"domain": {"devices": {"disks": []}}, "volumes": []}}}})
    }

    #[test]
    fn a_dvd_sized_image_gets_its_own_size_aligned_to_cdis_block() {
        // RHEL 9 DVD: 10.9 GB; the old fixed 4Gi made CDI fail ("A larger PVC is required").
        assert_eq!(storage_request(Some(11_659_116_544)), "11119Mi");
        assert_eq!(storage_request(Some(1 << 20)), "1Mi");
        assert_eq!(storage_request(Some((1 << 20) + 1)), "2Mi");
        assert_eq!(storage_request(None), MEDIA_SIZE_UNKNOWN);
    }

    #[test]
    fn the_installation_chooses_the_storage_class_and_binding_is_immediate() {
        let media = annotations::media(&inserted(Some(3 << 30)))
            .unwrap()
            .unwrap();
        let env = MediaEnv {
            storage_class: Some("local-path".into()),
            cdi_missing: false,
        };
        let dv = data_volume(&vm_ref(), &media, &env);
        assert_eq!(dv["spec"]["storage"]["storageClassName"], "local-path");
        assert_eq!(
            dv["spec"]["storage"]["resources"]["requests"]["storage"],
            "3072Mi"
        );
        assert_eq!(dv["metadata"]["annotations"][IMMEDIATE_BINDING], "true");
        let default_class = data_volume(&vm_ref(), &media, &MediaEnv::default());
        assert!(
            default_class["spec"]["storage"]
                .get("storageClassName")
                .is_none()
        );
    }

    #[test]
    fn without_cdi_nothing_is_created_and_the_vm_says_why() {
        let env = MediaEnv {
            storage_class: None,
            cdi_missing: true,
        };
        let plan = plan(&vm(), &vm_ref(), &inserted(Some(1 << 30)), None, &env);
        assert_eq!(plan.data_volume, DvAction::None);
        assert_eq!(plan.vm_spec, None, "no CD-ROM attached");
        let (key, value) = plan.status_annotation.expect("the VM records the refusal");
        assert_eq!(key, annotations::MEDIA_STATUS);
        let status = MediaStatus::parse_or_default(value.as_str());
        assert_eq!(status.phase, MediaPhase::Failed);
        assert!(status.reason.unwrap().contains("CDI"));
        // With CDI the same VM gets its DataVolume.
        let plan = plan_with_cdi();
        assert!(matches!(plan.data_volume, DvAction::Apply(_)));
    }

    fn plan_with_cdi() -> MediaPlan {
        plan(
            &vm(),
            &vm_ref(),
            &inserted(Some(1 << 30)),
            None,
            &MediaEnv::default(),
        )
    }
}
