//! The one interface IPMI and Redfish drive, and that every backend implements.
//!
//! Protocol front ends translate their requests into these calls and translate
//! [`MachineError`] into what their clients expect (IPMI completion codes, Redfish status
//! codes and messages). Backends: [`simulated::SimulatedMachine`] (demos, conformance tests,
//! benchmarks) and the KubeVirt backend that drives a real VirtualMachine.

pub mod kubevirt;
pub mod simulated;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Power as a client of a BMC sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerState {
    On,
    Off,
    /// Transitions exist so clients are told "busy, retry" instead of a false answer.
    PoweringOn,
    PoweringOff,
}

impl PowerState {
    /// The state a transition settles in; what IPMI's one-bit power status reports.
    pub fn settled(self) -> PowerState {
        match self {
            PowerState::PoweringOn => PowerState::On,
            PowerState::PoweringOff => PowerState::Off,
            settled => settled,
        }
    }

    pub fn is_transition(self) -> bool {
        matches!(self, PowerState::PoweringOn | PowerState::PoweringOff)
    }
}

/// What a client can ask of the machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PowerAction {
    On,
    /// Hard off: the power button held down.
    ForceOff,
    /// ACPI power button: the guest shuts itself down.
    GracefulShutdown,
    /// ACPI reboot request to the guest.
    GracefulRestart,
    /// Hard reset without removing power.
    ForceRestart,
    /// Power removed, then restored.
    PowerCycle,
    /// Diagnostic interrupt (NMI) to the guest.
    Nmi,
}

impl PowerAction {
    pub const ALL: [PowerAction; 7] = [
        PowerAction::On,
        PowerAction::ForceOff,
        PowerAction::GracefulShutdown,
        PowerAction::GracefulRestart,
        PowerAction::ForceRestart,
        PowerAction::PowerCycle,
        PowerAction::Nmi,
    ];
}

/// What the machine comes back as after losing power it was not asked to lose (IPMI Set Power
/// Restore Policy, Redfish `PowerRestorePolicy`); kept on the VM in the contract's form.
pub use kubevirt_bmc_contract::annotations::RestorePolicy;
/// Boot override values are the contract's: the sidecar keeps them on the VM in its form.
pub use kubevirt_bmc_contract::boot::{BootMode, BootOverride, BootOverrideEnabled, BootTarget};

/// A request to insert a virtual CD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInsert {
    /// The image URL (http or https).
    pub image: String,
    /// Redfish's `Inserted`: false records the image without connecting it.
    pub inserted: bool,
    pub write_protected: bool,
    /// The image's size as its server announced it (a HEAD request's `Content-Length`), when
    /// the front end asked; backends that import images size the import from it.
    pub size_bytes: Option<u64>,
}

/// Where a virtual CD stands. Backends that import images (KubeVirt with CDI) report the
/// import's progress so clients can tell "not yet" from "failed".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaStatus {
    Ejected,
    Importing { progress: Option<String> },
    Ready,
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaState {
    pub image: Option<String>,
    pub inserted: bool,
    pub write_protected: bool,
    pub status: MediaStatus,
}

impl MediaState {
    pub fn ejected() -> Self {
        MediaState {
            image: None,
            inserted: false,
            write_protected: true,
            status: MediaStatus::Ejected,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub name: String,
    /// Lower-case, colon separated, as Ironic compares them.
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    /// Unknown for disks whose size the backend cannot see (e.g. a containerDisk).
    pub capacity_bytes: Option<u64>,
    pub kind: DiskKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskKind {
    Disk,
    Cdrom,
}

/// The two firmware settings a VM has: its boot mode and UEFI Secure Boot. A machine holds
/// the ones its next boot applies, and the running boot may still have older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareSettings {
    pub mode: BootMode,
    pub secure_boot: bool,
}

/// How far the machine's boot has got, as Redfish's `BootProgress.LastState` names it; what
/// a backend can know (KubeVirt: the VMI's phase and its guest agent), nothing finer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootProgress {
    /// Off: not booting, not running.
    None,
    /// Powered on, the guest's OS has not said it runs yet.
    OsBootStarted,
    /// The guest said so (KubeVirt: its agent connected).
    OsRunning,
}

/// Identity and inventory: what Ironic's inspection and `ipmitool fru` read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub name: String,
    /// Lower-case hyphenated UUID (the VM's firmware UUID).
    pub uuid: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub interfaces: Vec<NetworkInterface>,
    pub disks: Vec<Disk>,
    pub secure_boot: bool,
    /// The guest CPU architecture as KubeVirt names it (`amd64`, `arm64`, `s390x`); `None`
    /// when the backend does not say.
    #[serde(default)]
    pub architecture: Option<String>,
}

/// State the BMC keeps on behalf of its protocol front ends, stored by the backend so it
/// survives a restart of the BMC (on the VM in KubeVirt, in the state file when simulated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Record {
    /// Redfish event subscriptions, a JSON document owned by the Redfish front end.
    EventSubscriptions,
    /// The secret Redfish session tokens are signed with (in the cluster it comes from the
    /// VM's credentials Secret and is read-only to the BMC).
    SessionKey,
    /// Redfish session settings (timeout, sessions logged out early), a JSON document owned
    /// by the Redfish front end.
    SessionSettings,
    /// Which IPMI logins the VM's owner allows (`strict` / `compatible`); the user's, read
    /// once when the BMC starts, never written by it.
    IpmiAuth,
    /// The virtual indicator (identify) LEDs of the System and the Chassis, a JSON document
    /// owned by the Redfish front end: a VM has no LED, but Ironic's indicator management
    /// sets one and reads it back, as sushy-tools' emulator lets it.
    Indicators,
}

/// Something a subscriber (Redfish events, SSE, metrics) may want to hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineEvent {
    PowerChanged { from: PowerState, to: PowerState },
    BootOverrideChanged(BootOverride),
    MediaChanged(MediaState),
}

/// What a client must be told when an operation cannot be done. Messages are safe to show
/// to a client: they carry no credentials and no internal detail beyond the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    /// A transition is under way; the client should retry (IPMI 0xC0, Redfish 409/503).
    #[error("machine is busy: {0}")]
    Busy(String),
    /// The request is valid but not in the current state (IPMI 0xD5, Redfish 409).
    #[error("not allowed in the current state: {0}")]
    NotAllowed(String),
    /// The backend cannot do this at all (IPMI 0xC1/0xCC, Redfish 400 ActionNotSupported).
    #[error("not supported: {0}")]
    NotSupported(String),
    /// The request itself is wrong (IPMI 0xCC, Redfish 400).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend (the KubeVirt API) cannot be reached (IPMI 0xFF, Redfish 503).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the BMC's own identity (IPMI 0xD4, Redfish 403).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

pub type Result<T, E = MachineError> = std::result::Result<T, E>;

/// The machine a BMC manages. Reads are answered from local state; writes return only once
/// the backend has accepted the change.
#[async_trait]
pub trait Machine: Send + Sync + 'static {
    async fn power_state(&self) -> Result<PowerState>;

    /// Power actions this machine really supports, so front ends advertise no more. Fixed
    /// for the machine's life (front ends cache documents that list them).
    fn supported_actions(&self) -> &[PowerAction];

    async fn power(&self, action: PowerAction) -> Result<()>;

    /// The power restore policy, exactly as last set (`Previous` until then).
    async fn restore_policy(&self) -> Result<RestorePolicy>;

    async fn set_restore_policy(&self, policy: RestorePolicy) -> Result<()>;

    async fn boot_override(&self) -> Result<BootOverride>;

    async fn set_boot_override(&self, boot: BootOverride) -> Result<()>;

    /// Targets this machine can boot from; others are refused with `NotSupported`. Fixed for
    /// the machine's life, as [`Machine::supported_actions`].
    fn supported_boot_targets(&self) -> &[BootTarget];

    async fn media(&self) -> Result<MediaState>;

    async fn insert_media(&self, media: MediaInsert) -> Result<()>;

    /// Whether [`Machine::insert_media`] needs [`MediaInsert::size_bytes`] (a backend that
    /// imports the image into storage of that size), so front ends learn it first.
    fn media_needs_size(&self) -> bool {
        false
    }

    async fn eject_media(&self) -> Result<()>;

    async fn inventory(&self) -> Result<Inventory>;

    /// Turns UEFI Secure Boot on or off: a firmware setting (what [`Inventory::secure_boot`]
    /// reads back) that the next boot applies, as a BIOS setting would. Machines whose
    /// firmware cannot change say so.
    async fn set_secure_boot(&self, enabled: bool) -> Result<()> {
        let _ = enabled;
        Err(MachineError::NotSupported(
            "this machine's Secure Boot setting cannot be changed".to_owned(),
        ))
    }

    /// The firmware settings the running boot started with, when they may differ from the
    /// ones the next boot applies; `None`: off, or no difference is possible.
    async fn running_firmware(&self) -> Result<Option<FirmwareSettings>> {
        Ok(None)
    }

    /// How far the boot has got; machines that cannot tell say `None` while off and
    /// `OsBootStarted` while on.
    async fn boot_progress(&self) -> Result<BootProgress> {
        Ok(match self.power_state().await?.settled() {
            PowerState::Off => BootProgress::None,
            _ => BootProgress::OsBootStarted,
        })
    }

    async fn record(&self, record: Record) -> Result<Option<String>>;

    async fn store_record(&self, record: Record, value: Option<String>) -> Result<()>;

    /// State changes from now on. A lagging receiver loses the oldest events, never blocks
    /// the machine.
    fn events(&self) -> broadcast::Receiver<MachineEvent>;

    /// Whether [`Machine::console`] can work, for front ends that advertise it without
    /// attaching (Redfish `SerialConsole`).
    fn has_console(&self) -> bool {
        false
    }

    /// Attaches to the serial console: bytes typed go in, what the machine prints comes
    /// out. Machines without a reachable console say so.
    async fn console(&self) -> Result<Console> {
        Err(MachineError::NotSupported(
            "this machine has no serial console".to_owned(),
        ))
    }
}

/// A serial console attachment. Dropping `input` detaches; `output` ends when the machine
/// side goes away.
pub struct Console {
    pub input: tokio::sync::mpsc::Sender<ConsoleInput>,
    pub output: tokio::sync::mpsc::Receiver<Vec<u8>>,
}

/// Something for the serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleInput {
    Bytes(Vec<u8>),
    /// A serial break (SysRq on Linux consoles).
    Break,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            PowerState::On => "On",
            PowerState::Off => "Off",
            PowerState::PoweringOn => "PoweringOn",
            PowerState::PoweringOff => "PoweringOff",
        };
        f.write_str(text)
    }
}

/// Accepts the image URLs a BMC can fetch: absolute http(s) URLs with a host.
pub fn validate_image_url(image: &str) -> Result<()> {
    use kubevirt_bmc_contract::egress::{EgressError, Target, redact};
    // The URL is stored on the VM and in a DataVolume: credentials in it are refused, and
    // error messages show it without userinfo or query.
    match Target::parse(image) {
        Ok(_) => Ok(()),
        Err(EgressError::Credentials(_)) => Err(MachineError::Invalid(format!(
            "image URL {} carries credentials (user:password@); use a URL without them",
            redact(image)
        ))),
        Err(_) => Err(MachineError::Invalid(format!(
            "image must be an http or https URL with a host: {:?}",
            redact(image)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_urls_must_be_http_with_a_host() {
        assert!(validate_image_url("http://10.0.0.1/boot.iso").is_ok());
        assert!(validate_image_url("https://images.example/x.iso?sig=1").is_ok());
        for bad in [
            "ftp://x/y.iso",
            "http://",
            "https:///x.iso",
            "http://a b/x.iso",
            "boot.iso",
            "",
            "http://user:pw@images.example/x.iso",
        ] {
            assert!(
                matches!(validate_image_url(bad), Err(MachineError::Invalid(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn transitions_settle_to_their_target() {
        assert_eq!(PowerState::PoweringOn.settled(), PowerState::On);
        assert_eq!(PowerState::PoweringOff.settled(), PowerState::Off);
        assert!(PowerState::PoweringOff.is_transition());
        assert!(!PowerState::On.is_transition());
    }
}
