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
}
