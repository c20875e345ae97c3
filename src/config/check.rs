//! `carrier-server admin check-config FILE`: the problem in a file as
//! `file:line: key 'k': message`, so an editor can jump to it.

use std::path::Path;

use super::{ConfigError, ServerConfig};

/// Loads `path` as the server would; on failure, one line naming the file,
/// the line (where the key is written in it) and the key.
pub fn check_file(path: &Path) -> Result<(), String> {
    match ServerConfig::load(path) {
        Ok(_) => Ok(()),
        Err(ConfigError::Invalid { path, key, message }) => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let at = match line_of(&text, key) {
                Some(line) => format!("{}:{line}", path.display()),
                None => path.display().to_string(),
            };
            Err(format!("{at}: key '{key}': {message}"))
        }
        Err(other) => Err(other.to_string()),
    }
}

/// The 1-based line where the dotted `key` (`section.name`) is set.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (section, name) = key.split_once('.')?;
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header.trim_start_matches('[').trim_end_matches(']').trim();
            continue;
        }
        let sets = line
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if current == section && sets {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "[server]\nport = 1\n\n[otp]\nttl_secs = 0\n").unwrap();
        let err = check_file(&path).unwrap_err();
        assert!(
            err.ends_with("server.toml:5: key 'otp.ttl_secs': must be greater than 0"),
            "{err}"
        );
        std::fs::write(&path, "[server]\nport = \"x\"\n").unwrap();
        let err = check_file(&path).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(&path, "[server]\nport = 1\n").unwrap();
        assert_eq!(check_file(&path), Ok(()));
    }
}
