//! `edge-seg-fuzz`: seeded mutation fuzzing of edge-seg's parsers (see the library docs).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use edge_seg_fuzz::{driver, generate, quiet_panics, run_one, target, TARGETS};

#[derive(Parser)]
#[command(
    name = "edge-seg-fuzz",
    about = "Seeded mutation fuzzing of every parser of outside bytes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the targets.
    List,
    /// Fuzz targets; findings go to --crashes, counts to --record.
    Run {
        /// A target name, or `all`.
        #[arg(long, default_value = "all")]
        target: String,
        /// Executions per target.
        #[arg(long, default_value_t = 1_000_000)]
        execs: u64,
        /// Seed of the run (execution i of seed s is always the same input).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Executions per child process.
        #[arg(long, default_value_t = 20_000)]
        batch: u64,
        /// Address-space limit of a child, MiB (an allocation beyond it aborts: a finding).
        #[arg(long, default_value_t = 4096)]
        mem_mb: u64,
        /// Time limit of one child, seconds (beyond it: a hang).
        #[arg(long, default_value_t = 600)]
        batch_timeout: u64,
        /// Folder for the inputs of findings.
        #[arg(long, default_value = "fuzz/crashes")]
        crashes: PathBuf,
        /// Results file to upsert `fuzz_execs_<target>` / `fuzz_crashes_<target>` into.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// (internal) Run executions [from, to) of one target in this process.
    #[command(hide = true)]
    Batch {
        #[arg(long)]
        target: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// Write the input of one execution to a file (to keep a finding reported by index, e.g. as
    /// a regression in fuzz/regressions/<target>/).
    Dump {
        /// The target.
        #[arg(long)]
        target: String,
        /// Seed of the run.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Execution index.
        #[arg(long)]
        index: u64,
        /// Output file (written atomically).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run saved inputs (files, or folders of `<target>/` subfolders such as fuzz/regressions)
    /// through a target; fails when one panics.
    Replay {
        /// The target.
        #[arg(long)]
        target: String,
        /// Input files.
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn find(name: &str) -> Result<&'static edge_seg_fuzz::Target> {
    target(name).with_context(|| {
        format!(
            "--target {name}: unknown; one of {}",
            TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
        )
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::List => {
            for t in TARGETS {
                println!("{:12} {}", t.name, t.about);
            }
        }
        Cmd::Batch { target, seed, from, to } => {
            let t = find(&target)?;
            let mut h = (t.build)()?;
            quiet_panics();
            let mut out = std::io::stdout().lock();
            for i in from..to {
                let input = generate(&h, seed, i);
                if let Some(msg) = run_one(&mut h.exec, &input) {
                    writeln!(out, "PANIC {i} {}", msg.replace('\n', " "))?;
                    out.flush()?;
                }
            }
            writeln!(out, "DONE {}", to - from)?;
        }
        Cmd::Dump {
            target,
            seed,
            index,
            out,
        } => {
            let h = (find(&target)?.build)()?;
            seg_core::io::write_atomic(&out, &generate(&h, seed, index))
                .with_context(|| format!("--out {}: cannot write", out.display()))?;
        }
        Cmd::Replay { target, files } => {
            let t = find(&target)?;
            let mut h = (t.build)()?;
            quiet_panics();
            let mut failed = 0;
            for f in &files {
                let input = std::fs::read(f).with_context(|| format!("{}: cannot read", f.display()))?;
                if let Some(msg) = run_one(&mut h.exec, &input) {
                    println!("{}: panicked: {msg}", f.display());
                    failed += 1;
                }
            }
            println!("{} inputs, {failed} panicked", files.len());
            if failed > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Run {
            target,
            execs,
            seed,
            batch,
            mem_mb,
            batch_timeout,
            crashes,
            record,
        } => {
            let names: Vec<&str> = if target == "all" {
                TARGETS.iter().map(|t| t.name).collect()
            } else {
                vec![find(&target)?.name]
            };
            anyhow::ensure!(batch >= 1, "--batch must be at least 1");
            let settings = driver::RunSettings {
                exe: std::env::current_exe().context("cannot find this executable")?,
                seed,
                batch,
                mem_mb,
                batch_timeout_s: batch_timeout,
            };
            let mut total_findings = 0;
            for name in names {
                let started = std::time::Instant::now();
                let (done, findings) = driver::run(&settings, name, execs, |n, f| {
                    eprint!("\r{name}: {n}/{execs} executions, {f} findings");
                })?;
                eprintln!();
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "{name}: {done} executions in {secs:.0} s ({:.0}/s), {} findings",
                    done as f64 / secs.max(1e-9),
                    findings.len()
                );
                if !findings.is_empty() {
                    let h = (find(name)?.build)()?;
                    for (f, p) in findings
                        .iter()
                        .zip(driver::save_findings(&crashes, name, &h, seed, &findings)?)
                    {
                        println!("  {} at {}: {} -> {}", f.kind, f.index, f.detail, p.display());
                    }
                }
                total_findings += findings.len();
                if let Some(path) = &record {
                    let split = format!("seed {seed}, executions 0..{done}");
                    let recs = [
                        seg_core::results::Record::now(
                            &format!("fuzz_execs_{name}"),
                            done as f64,
                            "executions",
                            &split,
                        ),
                        seg_core::results::Record::now(
                            &format!("fuzz_crashes_{name}"),
                            findings.len() as f64,
                            "inputs",
                            &split,
                        ),
                    ];
                    seg_core::results::upsert(path, &recs).with_context(|| format!("--record {}", path.display()))?;
                }
            }
            if total_findings > 0 {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
