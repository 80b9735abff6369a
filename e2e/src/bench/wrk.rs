//! wrk as the one HTTP client of the table's Redfish rows, its output parsed.

use std::process::Command;

use super::BenchError;
use super::stats::Row;

/// Runs `wrk` against `url` with `connections` keep-alive connections for `seconds`.
/// Non-2xx answers and socket errors count as errors.
pub fn run(url: &str, header: &str, connections: u32, seconds: u64) -> Result<Row, BenchError> {
    let threads = connections.clamp(1, 2).to_string();
    let output = Command::new("wrk")
        .args(["-t", &threads, "-c", &connections.to_string()])
        .args([
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "--timeout",
            "10s",
        ])
        .args(["-H", header])
        .arg(url)
        .output()
        .map_err(|e| BenchError::Wrk(format!("cannot run wrk (e2e/setup.sh installs it): {e}")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError::Wrk(format!(
            "exited {}: {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    parse(&text).ok_or_else(|| BenchError::Wrk(format!("unreadable output:\n{text}")))
}

fn parse(text: &str) -> Option<Row> {
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l[prefix.len()..].split_whitespace().next())
    };
    let non_2xx: u64 = field("Non-2xx or 3xx responses:")
        .map_or(Ok(0), str::parse)
        .ok()?;
    // "Socket errors: connect 0, read 1, write 0, timeout 0"
    let socket_errors: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map_or(0, |rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        });
    // "  70495 requests in 5.00s, 120.00MB read"
    let requests: u64 = text
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Row {
        requests,
        rps: field("Requests/sec:")?.parse().ok()?,
        p50_ms: duration_ms(field("50%")?)?,
        p99_ms: duration_ms(field("99%")?)?,
        errors: non_2xx + socket_errors,
    })
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`, `1.00m`.
fn duration_ms(text: &str) -> Option<f64> {
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let value: f64 = text[..digits].parse().ok()?;
    match &text[digits..] {
        "us" => Some(value / 1000.0),
        "ms" => Some(value),
        "s" => Some(value * 1000.0),
        "m" => Some(value * 60_000.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 5s test @ https://127.0.0.1:8443/redfish/v1/Systems/bench-vm
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms    2.01ms  40.12ms   93.12%
    Req/Sec     7.10k   512.33     8.01k    70.00%
  Latency Distribution
     50%  844.00us
     75%    1.20ms
     90%    2.00ms
     99%   12.16ms
  70495 requests in 5.00s, 120.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  14099.00
Transfer/sec:     24.00MB
";

    #[test]
    fn reads_rate_percentiles_and_every_error() {
        let row = parse(OUTPUT).unwrap();
        assert_eq!(row.requests, 70495);
        assert_eq!(row.rps, 14099.0);
        assert_eq!(row.p50_ms, 0.844);
        assert_eq!(row.p99_ms, 12.16);
        assert_eq!(row.errors, 7);
    }

    #[test]
    fn a_clean_run_has_no_errors() {
        let clean: String = OUTPUT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse(&clean).unwrap().errors, 0);
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(duration_ms("1.5x"), None);
    }
}
