//! The image, checked as far as this machine allows (containers cannot run here):
//! * the Dockerfile against the workspace: every binary it copies is built under that name by
//!   `cargo static-bins` and lands where the manifests expect it, the runtime stage is an empty
//!   base with a non-root user and no shell;
//! * the static binaries that command builds, each run in an empty root (a chroot holding the
//!   binary and only the files a Pod gets): `--version`, `simulate` answering ipmitool, and a
//!   Redfish event delivered to host names resolved through the Pod's `/etc/hosts` and its
//!   cluster DNS;
//! * the runtime stage built into an image by podman from those binaries, and its size.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kubevirt_bmc_e2e::pod_dns::{self, ClusterDns};
use kubevirt_bmc_e2e::testkit::{free_tcp_port, free_udp_port};

const BINARIES: [&str; 2] = ["kubevirt-bmc", "kubevirt-bmc-webhook"];
/// The target `cargo static-bins` names explicitly (see .cargo/config.toml).
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The Dockerfile's `USER`.
const IMAGE_UID: u32 = 65532;
/// The size we promise for the image holding both binaries, as pulled (compressed layers):
/// unpacked it is about twice that.
const IMAGE_SIZE_GOAL: u64 = 15_000_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn workspace_file(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace().join(dir),
        None => workspace().join("target"),
    }
}

/// A binary as `cargo static-bins` leaves it.
fn static_binary(name: &str) -> PathBuf {
    let path = target_dir().join(STATIC_TARGET).join("release").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo static-bins` (e2e/test-all.sh does)",
        path.display()
    );
    path
}

fn binary_names(manifest: &str) -> Vec<String> {
    let value: toml_like::Doc = toml_like::parse(manifest);
    value.bin_names
}

/// Just enough TOML reading for `[[bin]] name = "..."`, to avoid a TOML dependency.
mod toml_like {
    pub struct Doc {
        pub bin_names: Vec<String>,
    }
    pub fn parse(text: &str) -> Doc {
        let mut in_bin = false;
        let mut bin_names = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(value) = line.strip_prefix("name = ") {
                bin_names.push(value.trim_matches('"').to_owned());
            }
        }
        Doc { bin_names }
    }
}

/// The last stage of the Dockerfile, from its `FROM` on.
fn runtime_stage(dockerfile: &str) -> &str {
    let at = dockerfile.rfind("\nFROM ").expect("a second stage") + 1;
    &dockerfile[at..]
}

/// The `static-bins` alias of .cargo/config.toml, as one line.
fn static_bins_alias() -> String {
    let config = workspace_file(".cargo/config.toml");
    let start = config
        .find("static-bins = [")
        .expect("alias static-bins in .cargo/config.toml");
    let end = start + config[start..].find("\n]").expect("alias list ends") + 1;
    config[start..=end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn dockerfile_builds_and_copies_both_binaries_by_their_real_names() {
    let dockerfile = workspace_file("Dockerfile");
    let mut binaries = binary_names(&workspace_file("sidecar/Cargo.toml"));
    binaries.extend(binary_names(&workspace_file("webhook/Cargo.toml")));
    assert_eq!(binaries, BINARIES);
    assert!(
        dockerfile.contains("\nRUN cargo static-bins\n"),
        "the build stage runs the same command the tests' binaries come from"
    );
    let alias = static_bins_alias();
    for binary in &binaries {
        assert!(
            alias.contains(&format!("\"--bin\", \"{binary}\"")),
            "not built by static-bins: {binary} ({alias})"
        );
        let copy =
            format!("/src/target/{STATIC_TARGET}/release/{binary} /usr/local/bin/{binary}\n");
        assert!(
            runtime_stage(&dockerfile).contains(&format!("COPY --from=build {copy}")),
            "not copied to /usr/local/bin: {binary}"
        );
    }
}

#[test]
fn runtime_image_is_static_non_root_and_shell_free() {
    let dockerfile = workspace_file("Dockerfile");
    let alias = static_bins_alias();
    for flag in [
        "\"--release\"",
        "\"--locked\"",
        &format!("\"--target\", \"{STATIC_TARGET}\""),
        "target-feature=+crt-static",
        "getrandom_backend=\\\"linux_getrandom\\\"",
    ] {
        assert!(alias.contains(flag), "static-bins lacks {flag}: {alias}");
    }
    let runtime = runtime_stage(&dockerfile);
    assert!(
        runtime.starts_with("FROM scratch\n"),
        "runtime stage: {runtime}"
    );
    assert!(
        runtime.contains(&format!("USER {IMAGE_UID}:{IMAGE_UID}\n")),
        "non-root user"
    );
    assert!(
        !runtime.contains("RUN "),
        "the runtime stage has no shell to run anything"
    );
    assert!(
        runtime.contains("ENTRYPOINT [\""),
        "exec-form entrypoint needs no shell"
    );
    assert!(
        runtime.contains("COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/"),
        "https event destinations need the CA bundle an empty base lacks"
    );
}

/// The ELF program interpreter (`PT_INTERP`) a binary asks the kernel for: the dynamic
/// loader of a dynamically linked program, none for a static one.
fn program_interpreter(elf: &[u8]) -> Option<String> {
    assert!(
        elf.len() > 64 && elf.starts_with(b"\x7fELF") && elf[4] == 2 && elf[5] == 1,
        "not a little-endian ELF64 file"
    );
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (table, entry_size, entries) = (u64_at(0x20), usize::from(u16_at(0x36)), u16_at(0x38));
    (0..usize::from(entries))
        .map(|i| table + i * entry_size)
        .find(|&header| u32_at(header) == 3)
        .map(|header| {
            let (offset, size) = (u64_at(header + 8), u64_at(header + 32));
            String::from_utf8_lossy(&elf[offset..offset + size])
                .trim_end_matches('\0')
                .to_owned()
        })
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The chroot command when this process may use it (root), else why not.
fn chroot_command() -> Result<PathBuf, String> {
    if effective_uid() != Some(0) {
        return Err(format!(
            "chroot needs root and this test runs as uid {:?}",
            effective_uid()
        ));
    }
    find_program("chroot").ok_or_else(|| "no chroot command (coreutils)".to_owned())
}

/// A directory that is the whole file system of the process run in it: the binary at `/`,
/// and only what a test writes, as the kubelet would mount it.
struct EmptyRoot {
    dir: tempfile::TempDir,
    chroot: PathBuf,
    binary: String,
}

impl EmptyRoot {
    fn with_binary(chroot: &Path, name: &str) -> EmptyRoot {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The image's user must be able to enter `/`; a temporary directory is 0700.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(static_binary(name), dir.path().join(name)).unwrap();
        EmptyRoot {
            dir,
            chroot: chroot.to_owned(),
            binary: name.to_owned(),
        }
    }

    fn write(&self, path: &str, contents: &str) {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    /// A writable directory for the image's user (what an emptyDir volume gives the Pod).
    fn volume(&self, path: &str) {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    }

    /// Every file in the root, relative to it.
    fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, top: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, top, out);
                } else {
                    out.push(path.strip_prefix(top).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.sort();
        out
    }

    /// The binary, run as the image's user with `/` being this directory and an empty
    /// environment (a container gets only what its spec says).
    fn command(&self) -> Command {
        let mut command = Command::new(&self.chroot);
        command
            .arg(format!("--userspec={IMAGE_UID}:{IMAGE_UID}"))
            .arg(self.dir.path())
            .arg(format!("/{}", self.binary))
            .env_clear();
        command
    }
}

fn assert_success(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_image_binaries_are_static_and_start_in_an_empty_root() {
    let ours = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(
        program_interpreter(&ours).is_some(),
        "this test binary is dynamically linked, so the check below can tell"
    );
    for name in BINARIES {
        let elf = std::fs::read(static_binary(name)).unwrap();
        assert_eq!(program_interpreter(&elf), None, "{name} needs a loader");
    }
    let chroot = match chroot_command() {
        Ok(chroot) => chroot,
        Err(reason) => {
            println!("skipped running in an empty root: {reason}");
            return;
        }
    };
    for name in BINARIES {
        let root = EmptyRoot::with_binary(&chroot, name);
        let output = root.command().arg("--version").output().unwrap();
        let stdout = assert_success(&output, &format!("{name} --version in an empty root"));
        assert_eq!(stdout, format!("{name} {}\n", env!("CARGO_PKG_VERSION")));
        assert_eq!(root.files(), [name], "nothing but the binary was there");
    }
}

const USER: &str = "admin";
const PASSWORD: &str = "image-test-pw";
const STATE_VOLUME: &str = "var/lib/kubevirt-bmc";
/// A Service of the cluster, reached by its short name through the Pod's search list.
const DNS_NAME: &str = "event-receiver.monitoring.svc";
const DNS_RECORD: &str = "event-receiver.monitoring.svc.cluster.local";
/// A name only the Pod's `hostAliases` (its /etc/hosts) knows.
const HOSTS_NAME: &str = "events.hosts-alias.test";

/// One HTTP request the event receiver got.
#[derive(Debug)]
struct Delivery {
    path: String,
    host: String,
    body: String,
}

/// An HTTP server on loopback that answers 200 to every POST and reports what it got.
fn event_receiver() -> (u16, mpsc::Receiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Some(delivery) = read_request(stream)
                && sender.send(delivery).is_err()
            {
                return;
            }
        }
    });
    (port, receiver)
}

fn read_request(stream: TcpStream) -> Option<Delivery> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let (mut host, mut length) = (String::new(), 0);
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "host" => host = value.trim().to_owned(),
            "content-length" => length = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = reader.into_inner();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok()?;
    Some(Delivery {
        path,
        host,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Waits until `child` accepts TCP connections on loopback `port`; false when it exited
/// first (another process took the port) or never listened within a minute.
fn listens(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `kubevirt-bmc simulate` running in `root`, killed on drop.
struct SimulatedBmc {
    child: Child,
    ipmi_port: u16,
    redfish_port: u16,
    log: PathBuf,
}

impl SimulatedBmc {
    /// Starts on free ports, retrying when another process took one first.
    fn start(root: &EmptyRoot, log: PathBuf) -> SimulatedBmc {
        for _ in 0..5 {
            let (ipmi_port, redfish_port) = (free_udp_port(), free_tcp_port());
            let child = root
                .command()
                .arg("simulate")
                .args(["--ipmi-listen", &format!("127.0.0.1:{ipmi_port}")])
                .args(["--redfish-listen", &format!("127.0.0.1:{redfish_port}")])
                .args([
                    "--name",
                    "image-vm",
                    "--username",
                    USER,
                    "--password",
                    PASSWORD,
                ])
                .args(["--state-file", &format!("/{STATE_VOLUME}/state.json")])
                // The event receiver and the fake cluster DNS answer on loopback, which the
                // BMC's egress policy refuses unless the installation allows it.
                .args(["--egress-allow", "127.0.0.0/8"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut bmc = SimulatedBmc {
                child,
                ipmi_port,
                redfish_port,
                log: log.clone(),
            };
            if listens(&mut bmc.child, redfish_port) {
                return bmc;
            }
            let _ = bmc.child.kill();
            eprintln!("simulate did not listen; retrying:\n{}", bmc.log_text());
        }
        panic!("kubevirt-bmc simulate never listened in the empty root");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ipmitool(&self, args: &[&str]) -> String {
        let output = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "17", "-H", "127.0.0.1"])
            .args([
                "-p",
                &self.ipmi_port.to_string(),
                "-U",
                USER,
                "-P",
                PASSWORD,
            ])
            // Generous retries: the machine may be busy.
            .args(["-R", "4", "-N", "5"])
            .args(args)
            .output()
            .expect("ipmitool runs (e2e/setup.sh installs it)");
        assert_success(
            &output,
            &format!("ipmitool {args:?}; BMC log:\n{}", self.log_text()),
        )
    }

    /// Creates an event subscription with curl; returns the HTTP status.
    fn subscribe(&self, destination: &str) -> String {
        let body = serde_json::json!({"Destination": destination, "Protocol": "Redfish"});
        let output = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "60", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "-u", &format!("{USER}:{PASSWORD}")])
            .args([
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ])
            .arg(format!(
                "https://127.0.0.1:{}/redfish/v1/EventService/Subscriptions",
                self.redfish_port
            ))
            .output()
            .expect("curl runs (e2e/setup.sh installs it)");
        assert_success(&output, "curl subscribe")
    }
}

impl Drop for SimulatedBmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn simulate_in_an_empty_root_answers_ipmitool_and_delivers_events_to_host_names() {
    let chroot = match chroot_command() {
        Ok(chroot) => chroot,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let loopback = Ipv4Addr::LOCALHOST;
    let dns = ClusterDns::start(BTreeMap::from([(DNS_RECORD.to_owned(), loopback)]))
        .expect("a cluster DNS on port 53 of a loopback address (needs root)");
    let (receiver_port, deliveries) = event_receiver();

    let root = EmptyRoot::with_binary(&chroot, "kubevirt-bmc");
    root.write(
        "etc/resolv.conf",
        &pod_dns::resolv_conf("vms", "cluster.local", dns.address),
    );
    root.write(
        "etc/hosts",
        &pod_dns::hosts_file(
            Ipv4Addr::new(10, 244, 0, 7),
            "virt-launcher-image-vm-x7k2p",
            &[(loopback, &[HOSTS_NAME])],
        ),
    );
    root.volume(STATE_VOLUME);
    let logs = tempfile::tempdir().unwrap();
    let bmc = SimulatedBmc::start(&root, logs.path().join("bmc.log"));

    assert_eq!(
        bmc.ipmitool(&["power", "status"]).trim(),
        "Chassis Power is off"
    );
    for destination in [
        format!("http://{DNS_NAME}:{receiver_port}/by-dns"),
        format!("http://{HOSTS_NAME}:{receiver_port}/by-hosts"),
    ] {
        assert_eq!(
            bmc.subscribe(&destination),
            "201",
            "subscribe {destination}"
        );
    }
    assert_eq!(
        bmc.ipmitool(&["power", "on"]).trim(),
        "Chassis Power Control: Up/On"
    );

    // Each subscription gets PoweringOn and PoweredOn; one of each name is enough.
    let mut hosts_seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while hosts_seen.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let delivery = deliveries.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "events reached only {hosts_seen:?}; DNS queries {:?}; BMC log:\n{}",
                dns.queries(),
                bmc.log_text()
            )
        });
        let event: serde_json::Value = serde_json::from_str(&delivery.body).unwrap();
        assert_eq!(event["@odata.type"], "#Event.v1_7_0.Event", "{delivery:?}");
        let message = event["Events"][0]["MessageId"].as_str().unwrap_or_default();
        assert!(message.contains("ResourcePower"), "{delivery:?}");
        hosts_seen.insert(delivery.path, delivery.host);
    }
    assert_eq!(hosts_seen["/by-dns"], format!("{DNS_NAME}:{receiver_port}"));
    assert_eq!(
        hosts_seen["/by-hosts"],
        format!("{HOSTS_NAME}:{receiver_port}")
    );

    let queries = dns.queries();
    assert!(
        queries.contains(&(DNS_RECORD.to_owned(), 1)),
        "the Service name went through the search list to the cluster DNS: {queries:?}"
    );
    assert!(
        !queries.iter().any(|(name, _)| name.starts_with(HOSTS_NAME)),
        "/etc/hosts answered before DNS was asked: {queries:?}"
    );
    // A state write may be between its temporary file and the rename right now.
    let files: Vec<String> = root
        .files()
        .into_iter()
        .filter(|f| !f.starts_with(&format!("{STATE_VOLUME}/.tmp")))
        .collect();
    assert_eq!(
        files,
        [
            "etc/hosts",
            "etc/resolv.conf",
            "kubevirt-bmc",
            "var/lib/kubevirt-bmc/state.json"
        ],
        "the BMC ran with nothing else and kept its state on the volume"
    );
}

/// The runtime stage with its `COPY --from=build` sources taken from this machine: the
/// workspace's build output for `/src/target/...`, the same path for the build stage's own
/// files (it is Debian bookworm, as this machine is). Returns the Containerfile and the files
/// it needs in its context (source, name in the context).
fn local_runtime_stage(runtime: &str) -> (String, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut containerfile = String::new();
    for line in runtime.lines() {
        if let Some(rest) = line.strip_prefix("COPY --from=build ") {
            let (source, destination) = rest.split_once(' ').expect("COPY SRC DEST");
            let local = if let Some(built) = source.strip_prefix("/src/target/") {
                target_dir().join(built)
            } else if let Some(file) = source.strip_prefix("/src/") {
                workspace().join(file)
            } else {
                PathBuf::from(source)
            };
            let name = Path::new(source)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            containerfile.push_str(&format!("COPY {name} {destination}\n"));
            files.push((local, name));
        } else {
            containerfile.push_str(line);
            containerfile.push('\n');
        }
    }
    (containerfile, files)
}

#[test]
fn the_runtime_stage_builds_with_podman_from_the_static_binaries() {
    let Some(podman) = find_program("podman") else {
        println!("skipped: podman is not installed (e2e/setup.sh installs it from Debian)");
        return;
    };
    for name in BINARIES {
        static_binary(name);
    }
    let (containerfile, files) = local_runtime_stage(runtime_stage(&workspace_file("Dockerfile")));
    let context = tempfile::tempdir().unwrap();
    let mut content_bytes = 0;
    for (source, name) in &files {
        let copied = std::fs::copy(source, context.path().join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        content_bytes += copied;
    }
    std::fs::write(context.path().join("Containerfile"), &containerfile).unwrap();

    // Storage of its own, so the test leaves nothing in the machine's podman store.
    let storage = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        Command::new(&podman)
            .arg("--root")
            .arg(storage.path().join("root"))
            .arg("--runroot")
            .arg(storage.path().join("run"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(args)
            .output()
            .expect("podman runs")
    };
    let tag = "localhost/kubevirt-bmc:image-test";
    let context_dir = context.path().to_str().unwrap();
    let output = podman(&["build", "--tag", tag, context_dir]);
    assert_success(&output, &format!("podman build of\n{containerfile}"));
    let output = podman(&["image", "inspect", tag]);
    let inspect: serde_json::Value =
        serde_json::from_str(&assert_success(&output, "podman image inspect")).unwrap();
    let image = &inspect[0];
    assert_eq!(image["Config"]["User"], format!("{IMAGE_UID}:{IMAGE_UID}"));
    assert_eq!(
        image["Config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/kubevirt-bmc-webhook"])
    );
    let size = image["Size"].as_u64().expect("image size");
    assert!(
        size >= content_bytes,
        "the image holds the files: {size} < {content_bytes}"
    );
    // What a registry stores and a node pulls: the gzip-compressed layers and the config.
    let saved = storage.path().join("saved");
    let output = podman(&[
        "save",
        "--compress",
        "--format",
        "docker-dir",
        "--output",
        saved.to_str().unwrap(),
        tag,
    ]);
    assert_success(&output, "podman save --compress");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(
        layers.iter().all(|l| l["mediaType"]
            .as_str()
            .is_some_and(|m| m.ends_with("tar.gzip"))),
        "compressed layers: {manifest}"
    );
    let pulled = manifest["config"]["size"].as_u64().unwrap()
        + layers
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>();
    println!(
        "image {tag} with {:?}: {:.1} MB unpacked ({size} bytes), {:.1} MB to pull ({pulled} bytes, gzip)",
        files.iter().map(|(_, name)| name).collect::<Vec<_>>(),
        size as f64 / 1e6,
        pulled as f64 / 1e6,
    );
    assert!(
        pulled <= IMAGE_SIZE_GOAL,
        "the image is {pulled} bytes to pull, over the {IMAGE_SIZE_GOAL} goal"
    );
}

const WEBHOOK_SERVICE: &str = "kubevirt-bmc-webhook.kubevirt-bmc.svc";
const SIDECAR_IMAGE: &str = "registry.example.org/kubevirt-bmc:v0.1.0";

/// A CA and the webhook's serving certificate, as cert-manager or certs/generate.sh issue
/// them: (CA PEM, certificate PEM, key PEM).
fn webhook_certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "kubevirt-bmc image test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![WEBHOOK_SERVICE.to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn the_webhook_in_an_empty_root_serves_admission_with_its_mounted_certificate() {
    let chroot = match chroot_command() {
        Ok(chroot) => chroot,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let root = EmptyRoot::with_binary(&chroot, "kubevirt-bmc-webhook");
    let (ca, cert, key) = webhook_certificates();
    // The Secret volume of manifests/base/deployment.yaml (mode 0644, as a Secret's default).
    root.write("etc/kubevirt-bmc/tls/tls.crt", &cert);
    root.write("etc/kubevirt-bmc/tls/tls.key", &key);
    let outside = tempfile::tempdir().unwrap();
    let ca_file = outside.path().join("ca.crt");
    std::fs::write(&ca_file, ca).unwrap();
    let log = outside.path().join("webhook.log");

    let mut started = None;
    for _ in 0..5 {
        let port = free_tcp_port();
        // The Deployment's environment; the controller needs an API server and is left out.
        let mut child = root
            .command()
            .env("KUBEVIRT_BMC_WEBHOOK_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "KUBEVIRT_BMC_WEBHOOK_TLS_CERT",
                "/etc/kubevirt-bmc/tls/tls.crt",
            )
            .env(
                "KUBEVIRT_BMC_WEBHOOK_TLS_KEY",
                "/etc/kubevirt-bmc/tls/tls.key",
            )
            .env("KUBEVIRT_BMC_SIDECAR_IMAGE", SIDECAR_IMAGE)
            .env("KUBEVIRT_BMC_WEBHOOK_NO_CONTROLLER", "true")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        if listens(&mut child, port) {
            started = Some((child, port));
            break;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let (child, port) = started.unwrap_or_else(|| {
        panic!(
            "the webhook never listened in the empty root:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let _child = kubevirt_bmc_e2e::testkit::Kill(child);

    // curl verifies the mounted certificate for the Service name, as the API server does.
    let review = workspace().join("e2e/testdata/fixtures/admissionreview-a-vm1-optin.json");
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "60", "--cacert"])
        .arg(&ca_file)
        .args(["--resolve", &format!("{WEBHOOK_SERVICE}:{port}:127.0.0.1")])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", review.display()))
        .arg(format!(
            "https://{WEBHOOK_SERVICE}:{port}/mutate-pods?timeout=5s"
        ))
        .output()
        .expect("curl runs (e2e/setup.sh installs it)");
    let answer: serde_json::Value =
        serde_json::from_str(&assert_success(&output, "curl admission review")).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    let images: Vec<&str> = patch
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|op| op["value"]["image"].as_str())
        .collect();
    assert_eq!(images, [SIDECAR_IMAGE], "the injected sidecar: {patch}");
    assert_eq!(
        root.files(),
        [
            "etc/kubevirt-bmc/tls/tls.crt",
            "etc/kubevirt-bmc/tls/tls.key",
            "kubevirt-bmc-webhook"
        ]
    );
}
