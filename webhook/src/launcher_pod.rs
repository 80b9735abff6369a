//! The few fields of a launcher Pod the injection decision reads. Deserialising only these
//! (serde skips the rest, `managedFields` included, without allocating) keeps admission fast;
//! a full k8s-openapi `Pod` converts into it for callers that have one.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{NamespaceResourceScope, Resource};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LauncherPod {
    #[serde(default, deserialize_with = "light_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<SpecView>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView {
    #[serde(default)]
    pub init_containers: Option<Vec<Named>>,
    #[serde(default)]
    pub containers: Vec<Named>,
    #[serde(default)]
    pub volumes: Option<Vec<Named>>,
    #[serde(default)]
    pub security_context: Option<SecurityView>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Named {
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityView {
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub fs_group: Option<i64>,
    #[serde(default)]
    pub sysctls: Option<Vec<SysctlView>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SysctlView {
    pub name: String,
    pub value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaView {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

fn light_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = MetaView::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        generate_name: m.generate_name,
        labels: m.labels,
        annotations: m.annotations,
        ..Default::default()
    })
}

impl Resource for LauncherPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

// Never sent back (responses carry only a patch), but kube's AdmissionReview derives
// Serialize with a bound on the object type.
impl serde::Serialize for LauncherPod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_none()
    }
}

fn named<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<Named> {
    items
        .iter()
        .map(|i| Named {
            name: name(i).to_owned(),
        })
        .collect()
}

impl From<&Pod> for LauncherPod {
    fn from(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref().map(|s| SpecView {
            init_containers: s.init_containers.as_deref().map(|c| named(c, |c| &c.name)),
            containers: named(&s.containers, |c| &c.name),
            volumes: s.volumes.as_deref().map(|v| named(v, |v| &v.name)),
            security_context: s.security_context.as_ref().map(|sc| SecurityView {
                run_as_user: sc.run_as_user,
                fs_group: sc.fs_group,
                sysctls: sc.sysctls.as_ref().map(|v| {
                    v.iter()
                        .map(|s| SysctlView {
                            name: s.name.clone(),
                            value: s.value.clone(),
                        })
                        .collect()
                }),
            }),
        });
        LauncherPod {
            metadata: ObjectMeta {
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                generate_name: pod.metadata.generate_name.clone(),
                labels: pod.metadata.labels.clone(),
                annotations: pod.metadata.annotations.clone(),
                ..Default::default()
            },
            spec,
        }
    }
}
