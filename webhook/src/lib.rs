//! kubevirt-bmc-webhook: the mutating admission webhook that injects the BMC sidecar into
//! virt-launcher Pods, and the controller that prepares opted-in VMs.

pub mod admission;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod field_manager;
pub mod inject;
pub mod launcher_pod;
pub mod metrics;
pub mod names;
pub mod network;
pub mod server;
pub mod sidecar;

/// The VM annotations the controller and the sidecar share (crate `kubevirt-bmc-contract`).
pub use kubevirt_bmc_contract::annotations;
