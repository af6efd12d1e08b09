//! Result records: every figure the docs report is also written, by the command that measured
//! it, to `docs/results/<topic>.json` as a list of
//! `{name, value, unit, split, command, date, machine}` records.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One measured figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// What was measured (e.g. `suponly_full_val_miou`).
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit (`mIoU %`, `ms`, …).
    pub unit: String,
    /// The data split it was measured on (or `-`).
    pub split: String,
    /// The command line that produced it.
    pub command: String,
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// The machine (CPU model and cores).
    pub machine: String,
}

impl Record {
    /// A record stamped with today's date, this machine and this process's command line.
    pub fn now(name: &str, value: f64, unit: &str, split: &str) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
            split: split.into(),
            command: command_line(),
            date: today_utc(),
            machine: machine(),
        }
    }
}

/// Inserts or replaces (by name) `records` in the JSON list at `path`, atomically.
pub fn upsert(path: &Path, records: &[Record]) -> std::io::Result<()> {
    let mut all: Vec<Record> = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    for r in records {
        match all.iter_mut().find(|x| x.name == r.name) {
            Some(x) => *x = r.clone(),
            None => all.push(r.clone()),
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(&all).map_err(std::io::Error::other)?;
    crate::io::write_atomic(path, format!("{text}\n").as_bytes())
}

/// This process's command line, program name without its directory.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let prog = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or(p)
        })
        .unwrap_or_default();
    std::iter::once(prog).chain(args).collect::<Vec<_>>().join(" ")
}

/// Today's UTC date as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// CPU model, core count and (x86-64) VNNI, e.g. `AMD EPYC 9B14, 2 cores, VNNI`.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} cores{}", isa())
}

/// On x86, whether the CPU has VNNI (int8 speed, and onnxruntime's int8 accuracy, depend on
/// it; one model name has come with and without it on this project's machines).
fn isa() -> &'static str {
    match cpu_has_vnni() {
        Some(true) => ", VNNI",
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Some(false) if std::arch::is_x86_feature_detected!("avx2") => ", AVX2 without VNNI",
        _ => "",
    }
}

/// Whether this x86 CPU has VNNI (AVX-512 VNNI or AVX-VNNI); `None` on other architectures.
pub fn cpu_has_vnni() -> Option<bool> {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        Some(std::arch::is_x86_feature_detected!("avx512vnni") || std::arch::is_x86_feature_detected!("avxvnni"))
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn upsert_replaces_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        upsert(
            &p,
            &[Record::now("a", 1.0, "x", "val"), Record::now("b", 2.0, "x", "val")],
        )
        .unwrap();
        upsert(&p, &[Record::now("a", 3.0, "x", "val")]).unwrap();
        let all: Vec<Record> = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].value, 3.0);
    }
}
