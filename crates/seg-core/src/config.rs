//! TOML config loading with one-line errors that name the file, line and problem.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A config file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("{path}{location}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// `:line:column` when known.
    pub location: String,
    /// What is wrong, on one line.
    pub message: String,
}

/// Reads and parses a TOML file into `T` (whose serde attributes should deny unknown fields).
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.display().to_string(),
        location: String::new(),
        message: e.to_string(),
    })?;
    parse_toml(&text, &path.display().to_string())
}

/// Parses TOML text; `origin` names it in errors.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let location = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                format!(":{line}:{col}")
            })
            .unwrap_or_default();
        ConfigError {
            path: origin.to_string(),
            location,
            message: e.message().replace('\n', " ").trim().to_string(),
        }
    })
}

/// Serialises `value` as TOML.
pub fn to_toml<T: serde::Serialize>(value: &T) -> Result<String, ConfigError> {
    toml::to_string_pretty(value).map_err(|e| ConfigError {
        path: "<config>".into(),
        location: String::new(),
        message: e.to_string(),
    })
}

/// Applies `key.path=VALUE` overrides (the command-line flag `flag`, e.g. `--set`) to a config:
/// `VALUE` is read as a TOML value (`3`, `0.5`, `true`, `[180, 240]`, `"text"`; anything that
/// does not parse is taken as a string) and written at the dotted path, creating missing
/// tables. The result is deserialised again, so an unknown key or a wrong type is an error
/// naming the flag and the override.
pub fn apply_overrides<T: Clone + serde::Serialize + DeserializeOwned>(
    value: &T,
    sets: &[String],
    flag: &str,
) -> Result<T, ConfigError> {
    if sets.is_empty() {
        return Ok(value.clone());
    }
    let err = |set: &str, message: String| ConfigError {
        path: format!("{flag} {set}"),
        location: String::new(),
        message,
    };
    let mut table: toml::Table = toml::from_str(&to_toml(value)?).map_err(|e| err("", e.message().to_string()))?;
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .ok_or_else(|| err(set, "expected KEY=VALUE, e.g. schedule.iterations=800".into()))?;
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").expect("parsed one key"),
            Err(_) => toml::Value::String(raw.to_string()),
        };
        let parts: Vec<&str> = key.trim().split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err(set, format!("'{key}' is not a dotted key")));
        }
        let mut cur = &mut table;
        for p in &parts[..parts.len() - 1] {
            let entry = cur
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry
                .as_table_mut()
                .ok_or_else(|| err(set, format!("'{p}' is a value, not a section")))?;
        }
        cur.insert(parts[parts.len() - 1].to_string(), parsed);
    }
    let text = toml::to_string(&table).map_err(|e| err("", e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(&sets.join(" "), e.message().replace('\n', " ").trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct C {
        a: u32,
    }

    #[test]
    fn unknown_key_is_one_line_with_position() {
        let e = parse_toml::<C>("a = 1\nbogus = 2\n", "x.toml").unwrap_err().to_string();
        assert!(e.starts_with("x.toml:2:1: unknown field `bogus`"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        name: String,
        sched: Sched,
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sched {
        steps: u64,
        size: [u32; 2],
        rate: f64,
    }

    #[test]
    fn overrides_set_nested_values_and_reject_unknown_keys() {
        let c = Nested {
            name: "a".into(),
            sched: Sched {
                steps: 10,
                size: [1, 2],
                rate: 0.5,
            },
        };
        let sets = [
            "sched.steps=800",
            "sched.size=[180, 240]",
            "name=run b",
            "sched.rate=2e-3",
        ]
        .map(String::from);
        let got = apply_overrides(&c, &sets, "--set").unwrap();
        assert_eq!(got.sched.steps, 800);
        assert_eq!(got.sched.size, [180, 240]);
        assert_eq!(got.name, "run b");
        assert_eq!(got.sched.rate, 2e-3);
        let e = apply_overrides(&c, &["sched.stepz=3".to_string()], "--set")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set sched.stepz=3") && e.contains("stepz"), "{e}");
        let e = apply_overrides(&c, &["sched.steps=many".to_string()], "--adapt-set")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--adapt-set sched.steps=many"), "{e}");
        assert!(apply_overrides(&c, &["steps".to_string()], "--set").is_err());
        assert!(apply_overrides(&c, &["name.x=1".to_string()], "--set").is_err());
        assert_eq!(apply_overrides(&c, &[], "--set").unwrap(), c);
    }
}
