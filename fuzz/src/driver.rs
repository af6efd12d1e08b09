//! The driver: runs a target's executions in child processes (batches), under a memory limit
//! and a time limit, and finds the input behind an abort or a hang by bisecting its batch.
//!
//! A child (`edge-seg-fuzz batch`) prints `PANIC <index> <message>` for each caught panic and
//! `DONE <count>` at the end; anything else (killed by a signal, the memory limit, the time
//! limit) is a crash of the batch.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// One finding.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Execution index (the input is `generate(harness, seed, index)`).
    pub index: u64,
    /// `panic`, `abort` or `hang`.
    pub kind: &'static str,
    /// Panic message, exit status or "no result within N s".
    pub detail: String,
}

/// How a batch ended.
enum BatchEnd {
    Done(Vec<Finding>),
    Crashed(String, &'static str),
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// This executable (re-run as the child).
    pub exe: PathBuf,
    /// Seed of the run.
    pub seed: u64,
    /// Executions per child.
    pub batch: u64,
    /// Address-space limit of a child, MiB.
    pub mem_mb: u64,
    /// Time limit of one child, seconds.
    pub batch_timeout_s: u64,
}

fn run_batch(s: &RunSettings, target: &str, from: u64, to: u64, timeout: Duration) -> Result<BatchEnd> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {} && exec \"$0\" \"$@\"", s.mem_mb * 1024))
        .arg(&s.exe)
        .args(["batch", "--target", target, "--seed", &s.seed.to_string()])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("{}: cannot start a batch", s.exe.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut findings = Vec::new();
        let mut done = false;
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Some(rest) = line.strip_prefix("PANIC ") {
                let (i, msg) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Ok(index) = i.parse() {
                    findings.push(Finding {
                        index,
                        kind: "panic",
                        detail: msg.to_string(),
                    });
                }
            } else if line.starts_with("DONE ") {
                done = true;
            }
        }
        (findings, done)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (findings, done) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("batch reader thread panicked"))?;
    Ok(match status {
        Some(st) if st.success() && done => BatchEnd::Done(findings),
        Some(st) => BatchEnd::Crashed(format!("child ended: {st}"), "abort"),
        None => BatchEnd::Crashed(format!("no result within {} s", timeout.as_secs()), "hang"),
    })
}

/// Runs executions `0..execs` of `target`; returns the findings (panics, aborts, hangs) and
/// the number of executions done. `progress` is called after each batch.
pub fn run(
    s: &RunSettings,
    target: &str,
    execs: u64,
    mut progress: impl FnMut(u64, usize),
) -> Result<(u64, Vec<Finding>)> {
    let mut findings = Vec::new();
    let mut next = 0;
    let timeout = Duration::from_secs(s.batch_timeout_s);
    while next < execs {
        let to = (next + s.batch).min(execs);
        match run_batch(s, target, next, to, timeout)? {
            BatchEnd::Done(f) => {
                findings.extend(f);
                next = to;
            }
            BatchEnd::Crashed(detail, kind) => {
                // bisect [next, to) down to the first input that crashes a child on its own
                let (mut lo, mut hi) = (next, to);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    match run_batch(s, target, lo, mid, timeout)? {
                        BatchEnd::Done(_) => lo = mid,
                        BatchEnd::Crashed(..) => hi = mid,
                    }
                }
                // the panics of the inputs before it, then the crash itself
                if lo > next {
                    if let BatchEnd::Done(f) = run_batch(s, target, next, lo, timeout)? {
                        findings.extend(f);
                    }
                }
                findings.push(Finding {
                    index: lo,
                    kind,
                    detail,
                });
                next = lo + 1;
            }
        }
        progress(next, findings.len());
    }
    Ok((next, findings))
}

/// Writes each finding's input to `dir/<target>/<kind>-<index>.bin` (and the message beside
/// it); returns the paths.
pub fn save_findings(
    dir: &Path,
    target: &str,
    h: &crate::Harness,
    seed: u64,
    findings: &[Finding],
) -> Result<Vec<PathBuf>> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).with_context(|| format!("{}: cannot create", d.display()))?;
    let mut out = Vec::new();
    for f in findings {
        let input = crate::generate(h, seed, f.index);
        let p = d.join(format!("{}-s{seed}-{}.bin", f.kind, f.index));
        seg_core::io::write_atomic(&p, &input).with_context(|| format!("{}: cannot write", p.display()))?;
        seg_core::io::write_atomic(&p.with_extension("txt"), f.detail.as_bytes())
            .with_context(|| format!("{}: cannot write", p.display()))?;
        out.push(p);
    }
    Ok(out)
}
