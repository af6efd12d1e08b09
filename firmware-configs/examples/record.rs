//! Adds (or replaces, by name) one `{name, value, unit, split, command, date, machine}` record in
//! a docs/results JSON file, stamped with today's date and this machine; the scripts under
//! `firmware-configs/scripts/` record what they measured with it:
//!
//! `cargo run -q -p edge-seg-firmware --example record -- FILE NAME VALUE UNIT SPLIT COMMAND`

use std::path::Path;
use std::process::ExitCode;

use seg_core::results::{machine, today_utc, upsert, Record};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, name, value, unit, split, command] = args.as_slice() else {
        eprintln!("usage: record FILE NAME VALUE UNIT SPLIT COMMAND");
        return ExitCode::from(2);
    };
    let Ok(value) = value.parse::<f64>() else {
        eprintln!("error: VALUE {value}: not a number");
        return ExitCode::from(2);
    };
    let r = Record {
        name: name.clone(),
        value,
        unit: unit.clone(),
        split: split.clone(),
        command: command.clone(),
        date: today_utc(),
        machine: machine(),
    };
    match upsert(Path::new(file), &[r]) {
        Ok(()) => {
            println!("{file}: {name} = {value} {unit}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {file}: {e}");
            ExitCode::from(2)
        }
    }
}
