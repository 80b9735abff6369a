//! kubevirt-bmc-contract: what the controller, the webhook and the sidecar say to each other
//! through the VM and the launcher Pod.
//!
//! Two binaries speak it: the controller (in `kubevirt-bmc-webhook`) prepares a VM and reports
//! on it, the sidecar (`kubevirt-bmc`) keeps a BMC's desired state on it. Each key and each
//! value's JSON is written here once, so a change that one side makes and the other does not
//! follow fails to compile instead of silently disagreeing at run time.
//!
//! * [`names`]: the per-VM object names, the sidecar container's ports and mounts, the labels
//!   KubeVirt sets that we key on.
//! * [`annotations`]: every `bmc.kubevirt.io/*` annotation key, and the typed value of each
//!   with its parser; parse errors name the annotation, the value and what is allowed.
//! * [`boot`]: the boot override as a client set it, stored on the VM as text.
//! * [`certificate`]: the sidecar's serving certificate: its names, where it asks for it, the
//!   request and answer, the CA's Secret and ConfigMap.
//! * [`egress`]: where the BMC may send requests on a user's behalf (event destinations,
//!   media images), the ranges the controller passes to the sidecar, URLs fit for logs.
//! * [`nic`]: the VM's boot NIC and whether its MAC is pinned (controller and kubectl-bmc).

pub mod annotations;
pub mod boot;
pub mod certificate;
pub mod egress;
pub mod names;
pub mod nic;
