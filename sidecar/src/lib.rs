//! kubevirt-bmc: a BMC (IPMI and Redfish) for one KubeVirt virtual machine.
//!
//! The protocol front ends call only the [`machine::Machine`] interface; the backends behind
//! it are the simulated machine and the KubeVirt machine.

pub mod bmc;
pub mod certificate;
pub mod cli;
pub mod credentials;
pub mod health;
pub mod ipmi;
pub mod machine;

pub mod redfish;
pub mod serve;
