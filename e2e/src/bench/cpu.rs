//! Server CPU time and anonymous memory as the kernel accounts them, read from /proc, and the
//! real `ipmitool` session loop whose cost the table charges to each server. Reading the
//! servers' own CPU time (not the wall clock) keeps the per-request figures honest on a
//! machine shared with other work: waiting for a core costs no CPU time.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;

/// User plus system CPU time of a process (all its threads, living or exited), in clock
/// ticks: fields 14 and 15 of /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime from the text of /proc/PID/stat. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so fields count from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (USER_HZ), the unit of [`cpu_ticks`]: `getconf CLK_TCK`, or 100,
/// what Linux reports to user space on every architecture it runs this on.
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Anonymous memory (heap, stacks; `Anonymous` of /proc/PID/smaps_rollup), in KiB: what
/// each more sidecar adds to a node. Not Private_Clean + Private_Dirty: with one copy
/// running, the binary's own mapped pages count as private too (6.7 of 9.3 MiB for the BMC;
/// 0.2 MiB once a second copy runs), while on a node the sidecars of one image share them.
pub fn anonymous_kib(pid: u32) -> Option<u64> {
    parse_anonymous_kib(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

pub fn parse_anonymous_kib(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup
        .lines()
        .find(|l| l.starts_with("Anonymous:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The CPU a server spent on a batch of requests.
#[derive(Debug, Clone, Copy)]
pub struct CpuPerRequest {
    pub ticks: u64,
    pub requests: u64,
    pub ticks_per_second: u64,
}

impl CpuPerRequest {
    /// Microseconds of server CPU per request; NaN without requests.
    pub fn micros(&self) -> f64 {
        if self.requests == 0 || self.ticks_per_second == 0 {
            return f64::NAN;
        }
        self.ticks as f64 * 1e6 / self.ticks_per_second as f64 / self.requests as f64
    }

    /// The value with what it rests on, e.g. `41.0 (2 ticks / 488)`: a handful of ticks
    /// is a coarse figure, and the reader should see that.
    pub fn describe(&self) -> String {
        format!(
            "{:.1} ({} ticks / {})",
            self.micros(),
            self.ticks,
            self.requests
        )
    }
}

/// Runs `measure` and charges the CPU time `pid` spent meanwhile to the requests it reports.
pub async fn charge<F, T>(pid: u32, measure: F) -> Result<(T, u64), BenchError>
where
    F: std::future::Future<Output = Result<T, BenchError>>,
{
    let before = cpu_ticks(pid).ok_or_else(|| no_stat(pid))?;
    let result = measure.await?;
    let after = cpu_ticks(pid).ok_or_else(|| no_stat(pid))?;
    Ok((result, after.saturating_sub(before)))
}

fn no_stat(pid: u32) -> BenchError {
    BenchError::Start {
        what: format!("process {pid}"),
        reason: "no /proc/PID/stat (it exited)".to_owned(),
    }
}

/// What a batch of ipmitool runs did.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionRuns {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

/// `count` runs of `ipmitool -I lanplus -C suite ... power status` (each a whole session:
/// discovery, RAKP login, Set Session Privilege Level, Get Chassis Status, Close Session),
/// `parallel` at a time. A run counts as ok when ipmitool exits 0 and prints the power state.
pub async fn ipmitool_sessions(
    bmc: SocketAddr,
    suite: u8,
    password: &str,
    count: u64,
    parallel: u64,
) -> Result<SessionRuns, BenchError> {
    let password = password.to_owned();
    client_runs(count, parallel, move || {
        ipmitool_power_status(bmc, suite, &password)
    })
    .await
}

/// `count` runs of the floor's client process (`kubevirt-bmc-udp-floor client`: as many
/// round trips as one ipmitool session, each after ipmitool's pause, then exit), `parallel`
/// at a time, as [`ipmitool_sessions`] runs ipmitool.
pub async fn floor_sessions(
    floor: std::path::PathBuf,
    server: SocketAddr,
    count: u64,
    parallel: u64,
) -> Result<SessionRuns, BenchError> {
    client_runs(count, parallel, move || {
        let status = Command::new(&floor)
            .args(["client", "--server", &server.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| BenchError::Ipmi(format!("cannot run {}: {e}", floor.display())))?;
        Ok(status.success())
    })
    .await
}

/// `count` runs of `run_one` (true: the run succeeded) on `parallel` blocking workers.
async fn client_runs<F>(count: u64, parallel: u64, run_one: F) -> Result<SessionRuns, BenchError>
where
    F: Fn() -> Result<bool, BenchError> + Clone + Send + 'static,
{
    let start = Instant::now();
    let parallel = parallel.max(1);
    let mut tasks = Vec::new();
    for worker in 0..parallel {
        let share = count / parallel + u64::from(worker < count % parallel);
        let run_one = run_one.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut runs = SessionRuns::default();
            for _ in 0..share {
                if run_one()? {
                    runs.ok += 1;
                } else {
                    runs.errors += 1;
                }
            }
            Ok::<_, BenchError>(runs)
        }));
    }
    let mut total = SessionRuns::default();
    for task in tasks {
        let runs = task
            .await
            .map_err(|e| BenchError::Ipmi(format!("client worker: {e}")))??;
        total.ok += runs.ok;
        total.errors += runs.errors;
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

fn ipmitool_power_status(bmc: SocketAddr, suite: u8, password: &str) -> Result<bool, BenchError> {
    let output = Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", &suite.to_string()])
        .args(["-H", &bmc.ip().to_string(), "-p", &bmc.port().to_string()])
        .args(["-U", "admin", "-P", password])
        .args(["power", "status"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            BenchError::Ipmi(format!(
                "cannot run ipmitool (e2e/setup.sh installs it): {e}"
            ))
        })?;
    Ok(output.status.success()
        && String::from_utf8_lossy(&output.stdout).contains("Chassis Power is"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_count_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as /proc shows it.
        let stat = "4242 (kube bmc) x) S 1 4242 4242 0 -1 4194560 900 0 3 0 \
                    170 33 0 0 20 0 3 0 12345 10000000 400 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(203));
        assert_eq!(parse_stat_ticks("12 (short) S 1"), None);
    }

    #[test]
    fn anonymous_memory_is_read_from_the_rollup() {
        let rollup = "55d0a000-7ffd1000 ---p 00000000 00:00 0 [rollup]\n\
                      Rss:                9836 kB\n\
                      Shared_Clean:       1912 kB\n\
                      Private_Clean:      6892 kB\n\
                      Private_Dirty:      1032 kB\n\
                      Anonymous:          1032 kB\n";
        assert_eq!(parse_anonymous_kib(rollup), Some(1032));
        assert_eq!(parse_anonymous_kib("Rss: 1 kB\n"), None);
    }

    #[tokio::test]
    async fn client_runs_make_every_run_once_and_count_the_failed_ones() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        // Runs 0, 2 and 4 succeed, 1 and 3 fail; 5 runs do not split evenly over 2 workers.
        let runs = client_runs(5, 2, move || {
            Ok(counter.fetch_add(1, Ordering::SeqCst).is_multiple_of(2))
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_eq!((runs.ok, runs.errors), (3, 2));
    }

    #[test]
    fn cpu_per_request_shows_its_basis() {
        let c = CpuPerRequest {
            ticks: 2,
            requests: 400,
            ticks_per_second: 100,
        };
        assert_eq!(c.micros(), 50.0);
        assert_eq!(c.describe(), "50.0 (2 ticks / 400)");
        let none = CpuPerRequest { requests: 0, ..c };
        assert!(none.micros().is_nan());
    }
}
