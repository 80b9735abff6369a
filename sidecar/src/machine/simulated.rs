//! An in-memory virtual machine that behaves like the real one: power transitions take time,
//! a one-time boot override is consumed by the boot it applied to, media shows up when
//! inserted, and (with a state file) a restarted simulator continues where it stopped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use super::{
    BootOverride, BootOverrideEnabled, BootTarget, Console, ConsoleInput, Disk, DiskKind,
    Inventory, Machine, MachineError, MachineEvent, MediaInsert, MediaState, MediaStatus,
    NetworkInterface, PowerAction, PowerState, Record, RestorePolicy, Result, validate_image_url,
};

const STATE_FILE_VERSION: u32 = 1;
const EVENT_BUFFER: usize = 256;

/// Failures of setting the simulator up; operations report [`MachineError`].
#[derive(Debug, thiserror::Error)]
pub enum SimulatedError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state file {path} is not a valid simulator state ({reason}); it was left untouched: \
         fix or remove it to start fresh"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct SimulatedConfig {
    pub name: String,
    /// Fixed UUID; random (and kept in the state file) when absent.
    pub uuid: Option<String>,
    /// How long power on, graceful shutdown, restarts and cycles take. Hard off is instant,
    /// as pausing a KubeVirt VMI is.
    pub transition: Duration,
    pub state_file: Option<PathBuf>,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        SimulatedConfig {
            name: "sim-vm".to_owned(),
            uuid: None,
            transition: Duration::from_millis(300),
            state_file: None,
        }
    }
}

/// The simulated machine's CPU architecture, in KubeVirt's naming.
const SIMULATED_ARCHITECTURE: &str = "amd64";

/// Everything that must survive a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    name: String,
    uuid: String,
    /// The settled power state, or the one a transition under way is heading for.
    power: PowerState,
    /// A boot was under way when this was written: the next start completes it.
    boot_pending: bool,
    boot_override: BootOverride,
    /// What the last boot started from; lets demos and tests see an override take effect.
    last_boot: Option<BootTarget>,
    media: MediaState,
    records: BTreeMap<Record, String>,
    nmi_count: u64,
    /// Absent in state files written before it existed: `Previous`, what they behaved as.
    #[serde(default)]
    restore_policy: RestorePolicy,
    /// The firmware's Secure Boot setting (state files from before it read as off).
    #[serde(default)]
    secure_boot: bool,
    /// The firmware settings the last boot started with: changes made since apply at the
    /// next boot, as a BIOS setting does.
    #[serde(default)]
    running_firmware: Option<super::FirmwareSettings>,
}

impl Persisted {
    fn fresh(config: &SimulatedConfig) -> Self {
        Persisted {
            version: STATE_FILE_VERSION,
            name: config.name.clone(),
            uuid: config
                .uuid
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            power: PowerState::Off,
            boot_pending: false,
            boot_override: BootOverride::default(),
            last_boot: None,
            media: MediaState::ejected(),
            records: BTreeMap::new(),
            nmi_count: 0,
            restore_policy: RestorePolicy::Previous,
            secure_boot: false,
            running_firmware: None,
        }
    }

    /// A simulator that starts again from its state file has lost power it was not asked to
    /// lose: the restore policy decides what it comes back as.
    fn restore_power(&mut self) {
        match self.restore_policy {
            RestorePolicy::Previous => {}
            RestorePolicy::AlwaysOff => {
                self.power = PowerState::Off;
                self.boot_pending = false;
            }
            RestorePolicy::AlwaysOn if self.power == PowerState::Off => {
                self.power = PowerState::On;
                self.boot_pending = true;
            }
            RestorePolicy::AlwaysOn => {}
        }
    }

    /// A boot starts from the override when one is active, else from the disk; a `Once`
    /// override is used up by it.
    fn boot(&mut self) {
        let from = match self.boot_override.enabled {
            BootOverrideEnabled::Disabled => BootTarget::Hdd,
            _ if self.boot_override.target == BootTarget::None => BootTarget::Hdd,
            _ => self.boot_override.target,
        };
        self.last_boot = Some(from);
        self.running_firmware = Some(super::FirmwareSettings {
            mode: self.boot_override.mode,
            secure_boot: self.secure_boot,
        });
        if self.boot_override.enabled == BootOverrideEnabled::Once {
            self.boot_override.enabled = BootOverrideEnabled::Disabled;
            self.boot_override.target = BootTarget::None;
        }
        self.boot_pending = false;
    }
}

struct Transition {
    generation: u64,
    showing: PowerState,
}

struct Inner {
    persisted: Persisted,
    transition: Option<Transition>,
    generation: u64,
}

/// The simulated VM. Cheap to clone: clones share one machine.
#[derive(Clone)]
pub struct SimulatedMachine {
    inner: Arc<Mutex<Inner>>,
    transition: Duration,
    state_file: Option<PathBuf>,
    events: broadcast::Sender<MachineEvent>,
    /// What the simulated serial port prints, to every attached console.
    serial: broadcast::Sender<Vec<u8>>,
}

impl SimulatedMachine {
    /// Starts from the state file when it exists (finishing a boot that was under way), or
    /// from a fresh powered-off machine.
    pub fn new(config: SimulatedConfig) -> Result<Self, SimulatedError> {
        let mut persisted = match &config.state_file {
            Some(path) => match load_state(path)? {
                Some(mut persisted) => {
                    persisted.restore_power();
                    persisted
                }
                None => Persisted::fresh(&config),
            },
            None => Persisted::fresh(&config),
        };
        if persisted.boot_pending {
            persisted.boot();
        }
        let machine = SimulatedMachine {
            inner: Arc::new(Mutex::new(Inner {
                persisted,
                transition: None,
                generation: 0,
            })),
            transition: config.transition,
            state_file: config.state_file,
            events: broadcast::channel(EVENT_BUFFER).0,
            serial: broadcast::channel(SERIAL_BUFFER).0,
        };
        if let Some(path) = &machine.state_file {
            let inner = machine.lock();
            write_state(path, &inner.persisted)?;
        }
        Ok(machine)
    }

    /// What the last boot started from.
    pub fn last_boot(&self) -> Option<BootTarget> {
        self.lock().persisted.last_boot
    }

    pub fn nmi_count(&self) -> u64 {
        self.lock().persisted.nmi_count
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave Persisted half-written in a way that
        // matters more than stopping the BMC would, so poisoning is ignored.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn current_power(inner: &Inner) -> PowerState {
        inner
            .transition
            .as_ref()
            .map_or(inner.persisted.power, |t| t.showing)
    }

    fn save(&self, persisted: &Persisted) -> Result<()> {
        match &self.state_file {
            Some(path) => write_state(path, persisted).map_err(|error| {
                tracing::error!(%error, "simulator state not saved");
                MachineError::Unavailable("the simulator could not save its state".to_owned())
            }),
            None => Ok(()),
        }
    }

    fn emit(&self, event: MachineEvent) {
        // No receivers is normal (nobody subscribed yet).
        let _ = self.events.send(event);
    }

    /// Moves to `target`: at once when transitions are instant, else shows `showing` until a
    /// timer settles it. `boots` marks a transition that ends in a boot.
    fn change_power(
        &self,
        inner: &mut Inner,
        showing: PowerState,
        target: PowerState,
        boots: bool,
    ) -> Result<()> {
        let from = Self::current_power(inner);
        let mut next = inner.persisted.clone();
        next.power = target;
        if self.transition.is_zero() {
            if boots {
                next.boot();
            }
            self.save(&next)?;
            let override_consumed = next.boot_override != inner.persisted.boot_override;
            inner.persisted = next;
            if boots {
                self.print_banner(&inner.persisted);
            }
            self.emit_power(from, target);
            if override_consumed {
                self.emit(MachineEvent::BootOverrideChanged(
                    inner.persisted.boot_override,
                ));
            }
            return Ok(());
        }
        next.boot_pending = boots;
        self.save(&next)?;
        inner.persisted = next;
        inner.generation += 1;
        let generation = inner.generation;
        inner.transition = Some(Transition {
            generation,
            showing,
        });
        self.emit_power(from, showing);
        let machine = self.clone();
        let delay = self.transition;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            machine.settle(generation);
        });
        Ok(())
    }

    /// Off at once, abandoning any transition (its timer finds no transition and does nothing).
    fn hard_off(&self, inner: &mut Inner, from: PowerState) -> Result<()> {
        let mut next = inner.persisted.clone();
        next.power = PowerState::Off;
        next.boot_pending = false;
        self.save(&next)?;
        inner.persisted = next;
        inner.transition = None;
        self.emit_power(from, PowerState::Off);
        Ok(())
    }

    fn settle(&self, generation: u64) {
        let mut inner = self.lock();
        let Some(transition) = &inner.transition else {
            return;
        };
        if transition.generation != generation {
            return;
        }
        let showing = transition.showing;
        let mut next = inner.persisted.clone();
        let booted = next.boot_pending;
        if booted {
            next.boot();
        }
        if self.save(&next).is_err() {
            // Keep showing the transition: the state on disk still says a boot is pending,
            // and a restart completes it, so memory must not claim more than disk.
            return;
        }
        let override_consumed = next.boot_override != inner.persisted.boot_override;
        inner.persisted = next;
        inner.transition = None;
        if booted {
            self.print_banner(&inner.persisted);
        }
        let target = inner.persisted.power;
        drop(inner);
        self.emit_power(showing, target);
        if override_consumed {
            self.emit(MachineEvent::BootOverrideChanged(
                self.lock().persisted.boot_override,
            ));
        }
    }

    /// What firmware and a boot loader would print: the test and the operator can see a
    /// boot happened and from where.
    fn print_banner(&self, persisted: &Persisted) {
        let from = persisted
            .last_boot
            .map_or("unknown".to_owned(), |t| format!("{t:?}"));
        let banner = format!(
            "\r\nkubevirt-bmc simulated machine {}: booting from {from}\r\n{} login: ",
            persisted.name, persisted.name
        );
        // No attached console is normal: nobody watches the serial port.
        let _ = self.serial.send(banner.into_bytes());
    }

    fn emit_power(&self, from: PowerState, to: PowerState) {
        if from != to {
            self.emit(MachineEvent::PowerChanged { from, to });
        }
    }

    fn update(&self, change: impl FnOnce(&mut Persisted)) -> Result<Persisted> {
        let mut inner = self.lock();
        let mut next = inner.persisted.clone();
        change(&mut next);
        self.save(&next)?;
        inner.persisted = next.clone();
        Ok(next)
    }
}

const SUPPORTED_ACTIONS: &[PowerAction] = &PowerAction::ALL;
/// Every target but UEFI HTTP boot: a KubeVirt VM cannot boot from a URL, and sushy always
/// sends `Boot.HttpBootUri` with `UefiHttp` (`sushy/resources/system/system.py`
/// `set_system_boot_options`), which a simulator that only pretended would accept falsely.
const SUPPORTED_BOOT_TARGETS: &[BootTarget] = &[
    BootTarget::None,
    BootTarget::Pxe,
    BootTarget::Hdd,
    BootTarget::Cd,
    BootTarget::BiosSetup,
];

#[async_trait]
impl Machine for SimulatedMachine {
    async fn power_state(&self) -> Result<PowerState> {
        Ok(Self::current_power(&self.lock()))
    }

    fn supported_actions(&self) -> &[PowerAction] {
        SUPPORTED_ACTIONS
    }

    /// Hard actions win over a transition under way, as on a server: ForceOff abandons a
    /// boot or a shutdown, a reset or cycle starts the boot again. Asking for where the
    /// machine is already heading succeeds at once.
    async fn power(&self, action: PowerAction) -> Result<()> {
        use PowerAction as A;
        use PowerState as P;
        let mut inner = self.lock();
        let state = Self::current_power(&inner);
        match (action, state) {
            (A::On, P::On | P::PoweringOn)
            | (A::ForceOff | A::GracefulShutdown, P::Off)
            | (A::GracefulShutdown, P::PoweringOff)
            // The boot under way is the restart asked for.
            | (A::GracefulRestart, P::PoweringOn) => Ok(()),
            (A::On | A::PowerCycle, P::Off) => {
                self.change_power(&mut inner, P::PoweringOn, P::On, true)
            }
            // The power button during POST powers off: no OS is there to shut down.
            (A::ForceOff, P::On | P::PoweringOn | P::PoweringOff)
            | (A::GracefulShutdown, P::PoweringOn) => self.hard_off(&mut inner, state),
            // A shutdown the machine is already in: On brings it back once it is down.
            (A::On, P::PoweringOff) => self.change_power(&mut inner, P::PoweringOn, P::On, true),
            (A::GracefulShutdown, P::On) => {
                self.change_power(&mut inner, P::PoweringOff, P::Off, false)
            }
            (A::GracefulRestart | A::ForceRestart | A::PowerCycle, P::On)
            | (A::ForceRestart | A::PowerCycle, P::PoweringOn | P::PoweringOff) => {
                self.change_power(&mut inner, P::PoweringOn, P::On, true)
            }
            (A::Nmi, P::On) => {
                let mut next = inner.persisted.clone();
                next.nmi_count += 1;
                self.save(&next)?;
                inner.persisted = next;
                Ok(())
            }
            // No OS that could take the request yet (or still): a soft request, not a hard one.
            (A::GracefulRestart | A::Nmi, P::PoweringOff) | (A::Nmi, P::PoweringOn) => {
                Err(MachineError::Busy(format!(
                    "power is {state}: {action:?} needs a running OS; retry when it settles"
                )))
            }
            // A physical BMC accepts a diagnostic interrupt for a machine that is off and
            // nothing happens (there is no CPU to interrupt); refusing it made Ironic's
            // `inject_nmi` retry `ipmitool power diag` for a minute.
            (A::Nmi, P::Off) => Ok(()),
            (A::GracefulRestart | A::ForceRestart, P::Off) => Err(MachineError::NotAllowed(
                format!("{action:?} needs the machine on; it is off"),
            )),
        }
    }

    async fn restore_policy(&self) -> Result<RestorePolicy> {
        Ok(self.lock().persisted.restore_policy)
    }

    async fn set_restore_policy(&self, policy: RestorePolicy) -> Result<()> {
        self.update(|state| state.restore_policy = policy)?;
        Ok(())
    }

    async fn boot_override(&self) -> Result<BootOverride> {
        Ok(self.lock().persisted.boot_override)
    }

    async fn set_boot_override(&self, boot: BootOverride) -> Result<()> {
        let next = self.update(|state| state.boot_override = boot)?;
        self.emit(MachineEvent::BootOverrideChanged(next.boot_override));
        Ok(())
    }

    fn supported_boot_targets(&self) -> &[BootTarget] {
        SUPPORTED_BOOT_TARGETS
    }

    async fn media(&self) -> Result<MediaState> {
        Ok(self.lock().persisted.media.clone())
    }

    async fn insert_media(&self, media: MediaInsert) -> Result<()> {
        validate_image_url(&media.image)?;
        if self.lock().persisted.media.image.is_some() {
            return Err(MachineError::NotAllowed(
                "a medium is already inserted; eject it first".to_owned(),
            ));
        }
        let next = self.update(|state| {
            state.media = MediaState {
                image: Some(media.image),
                inserted: media.inserted,
                write_protected: media.write_protected,
                status: MediaStatus::Ready,
            };
        })?;
        self.emit(MachineEvent::MediaChanged(next.media));
        Ok(())
    }

    async fn eject_media(&self) -> Result<()> {
        let next = self.update(|state| state.media = MediaState::ejected())?;
        self.emit(MachineEvent::MediaChanged(next.media));
        Ok(())
    }

    async fn inventory(&self) -> Result<Inventory> {
        let inner = self.lock();
        let state = &inner.persisted;
        Ok(Inventory {
            name: state.name.clone(),
            uuid: state.uuid.clone(),
            vcpus: 2,
            memory_mib: 4096,
            interfaces: vec![NetworkInterface {
                name: "default".to_owned(),
                mac: mac_from_uuid(&state.uuid),
            }],
            disks: vec![
                Disk {
                    name: "rootdisk".to_owned(),
                    capacity_bytes: Some(20 * 1024 * 1024 * 1024),
                    kind: DiskKind::Disk,
                },
                Disk {
                    name: "cdrom".to_owned(),
                    capacity_bytes: None,
                    kind: DiskKind::Cdrom,
                },
            ],
            secure_boot: state.secure_boot,
            architecture: Some(SIMULATED_ARCHITECTURE.to_owned()),
        })
    }

    async fn running_firmware(&self) -> Result<Option<super::FirmwareSettings>> {
        if self.power_state().await?.settled() == PowerState::Off {
            return Ok(None);
        }
        Ok(self.lock().persisted.running_firmware)
    }

    /// The simulated guest prints its login prompt as its boot completes (`print_banner`):
    /// from then on its OS runs.
    async fn boot_progress(&self) -> Result<super::BootProgress> {
        Ok(match self.power_state().await? {
            PowerState::Off | PowerState::PoweringOff => super::BootProgress::None,
            PowerState::PoweringOn => super::BootProgress::OsBootStarted,
            PowerState::On => super::BootProgress::OsRunning,
        })
    }

    async fn set_secure_boot(&self, enabled: bool) -> Result<()> {
        let mut inner = self.lock();
        if enabled && inner.persisted.boot_override.mode == super::BootMode::Legacy {
            return Err(MachineError::NotAllowed(
                "Secure Boot needs UEFI boot mode; the machine boots in Legacy (BIOS) mode"
                    .to_owned(),
            ));
        }
        let mut next = inner.persisted.clone();
        next.secure_boot = enabled;
        self.save(&next)?;
        inner.persisted = next;
        Ok(())
    }

    async fn record(&self, record: Record) -> Result<Option<String>> {
        Ok(self.lock().persisted.records.get(&record).cloned())
    }

    async fn store_record(&self, record: Record, value: Option<String>) -> Result<()> {
        self.update(|state| match value {
            Some(value) => {
                state.records.insert(record, value);
            }
            None => {
                state.records.remove(&record);
            }
        })?;
        Ok(())
    }

    fn events(&self) -> broadcast::Receiver<MachineEvent> {
        self.events.subscribe()
    }

    fn has_console(&self) -> bool {
        true
    }

    async fn console(&self) -> Result<Console> {
        let (input, mut typed) = mpsc::channel::<ConsoleInput>(64);
        let (printed, output) = mpsc::channel::<Vec<u8>>(SERIAL_BUFFER);
        let serial = self.serial.clone();
        let mut port = serial.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    key = typed.recv() => match key {
                        Some(ConsoleInput::Bytes(bytes)) => {
                            let _ = serial.send(echo(&bytes));
                        }
                        Some(ConsoleInput::Break) => {
                            let _ = serial.send(b"\r\n[break]\r\n".to_vec());
                        }
                        None => return,
                    },
                    line = port.recv() => match line {
                        Ok(bytes) => {
                            if printed.send(bytes).await.is_err() {
                                return;
                            }
                        }
                        // A console that fell behind loses output, as a slow serial
                        // reader would.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        Ok(Console { input, output })
    }
}

const SERIAL_BUFFER: usize = 256;

/// A terminal's line discipline echoes Enter as CR LF.
fn echo(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for &b in bytes {
        out.push(b);
        if b == b'\r' {
            out.push(b'\n');
        }
    }
    out
}

/// A stable, locally administered MAC in QEMU's 52:54:00 range, so a restarted simulator
/// keeps its address.
fn mac_from_uuid(uuid: &str) -> String {
    let hex: Vec<u8> = uuid.bytes().filter(u8::is_ascii_hexdigit).collect();
    let tail = |i: usize| -> String {
        hex.get(hex.len().saturating_sub(6) + i * 2..hex.len().saturating_sub(6) + i * 2 + 2)
            .map(|pair| String::from_utf8_lossy(pair).to_ascii_lowercase())
            .unwrap_or_else(|| "00".to_owned())
    };
    format!("52:54:00:{}:{}:{}", tail(0), tail(1), tail(2))
}

fn load_state(path: &Path) -> Result<Option<Persisted>, SimulatedError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SimulatedError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |reason: String| SimulatedError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let state: Persisted = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if state.version != STATE_FILE_VERSION {
        return Err(corrupt(format!(
            "version {} where {STATE_FILE_VERSION} is expected",
            state.version
        )));
    }
    Ok(Some(state))
}

/// Write to a temporary file in the same directory, sync, then rename over the old file: a
/// crash leaves either the old state or the new one, never a torn file.
fn write_state(path: &Path, state: &Persisted) -> Result<(), SimulatedError> {
    let failed = |source| SimulatedError::Write {
        path: path.to_owned(),
        source,
    };
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(directory).map_err(failed)?;
    let json = serde_json::to_vec_pretty(state).expect("simulator state always serializes");
    file.write_all(&json).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    file.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

#[cfg(test)]
#[path = "simulated_tests.rs"]
mod tests;
