//! What the load generators (`enrollca-scep-load`, `enrollca-acme-load`) share: the server's
//! CPU time from /proc and one result line, so runs against different servers compare.

use std::time::Duration;

/// User + system CPU seconds a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    use anyhow::Context;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    anyhow::ensure!(fields.len() >= 13, "malformed /proc stat");
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // USER_HZ is 100 on Linux whatever the kernel tick rate.
    Ok(ticks / 100.0)
}

/// One run's outcome.
pub struct Report<'a> {
    pub label: &'a str,
    pub concurrency: usize,
    /// What one operation is ("enrolment", "order").
    pub unit: &'a str,
    pub ok: usize,
    pub failed: usize,
    /// Further counts worth a mention (e.g. duplicate serials).
    pub notes: Vec<String>,
    pub wall: Duration,
    pub latencies: Vec<Duration>,
    /// Server CPU seconds spent during the run.
    pub server_cpu: Option<f64>,
}

impl Report<'_> {
    /// `label: concurrency C: N verified units in Ws = R/s; F failed; …; p50, p99; CPU/unit`.
    pub fn line(mut self) -> String {
        self.latencies.sort();
        let pct = |p: f64| {
            let n = self.latencies.len();
            self.latencies
                .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let wall = self.wall.as_secs_f64();
        let mut line = format!(
            "{}: concurrency {}: {} verified {}s in {wall:.2}s = {:.1}/s; {} failed",
            self.label,
            self.concurrency,
            self.ok,
            self.unit,
            self.ok as f64 / wall,
            self.failed
        );
        for note in &self.notes {
            line.push_str(&format!("; {note}"));
        }
        line.push_str(&format!(
            "; p50 {:.1} ms, p99 {:.1} ms",
            pct(0.50),
            pct(0.99)
        ));
        if let Some(cpu) = self.server_cpu {
            let per = cpu * 1e3 / self.ok.max(1) as f64;
            line.push_str(&format!("; server CPU {per:.2} ms/{}", self.unit));
        }
        line
    }
}
