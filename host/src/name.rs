//! Resource names: `[A-Za-z0-9._-]{1,128}` for stashes, streams, schemas,
//! teams, agents and policies alike, except `.` and `..`, which clients
//! resolve as path segments before they are sent. Checked once, at the
//! serde boundary or at the path, so the rest of the host only ever sees
//! valid names.

use crate::error::Error;

pub const MAX_NAME_LEN: usize = 128;

pub fn is_valid(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// Checks one name; `kind` says what it names, for the message.
pub fn check(kind: &str, name: &str) -> Result<(), Error> {
    if is_valid(name) {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid {kind} name {name:?}: use 1 to {MAX_NAME_LEN} characters from A-Z, a-z, 0-9, '.', '_' and '-' \
             (but not \".\" or \"..\")"
        ))
        .with_code("invalid_name"))
    }
}

/// Labels are names too, given as a comma-separated list (`a,b`) or an array.
pub fn check_labels(labels: &[String]) -> Result<(), Error> {
    labels.iter().try_for_each(|l| check("label", l))
}

pub fn split_labels(csv: &str) -> Vec<String> {
    csv.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(is_valid("website-redesign"));
        assert!(is_valid("a.b_c-D9"));
        assert!(is_valid(&"x".repeat(128)));
        assert!(is_valid("...") && is_valid(".hidden") && is_valid("a..b"));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", "has space", "slash/y", "ünï", "semi;colon", "comma,x", "%41", ".", ".."] {
            assert!(!is_valid(bad), "{bad:?} should be invalid");
        }
        assert!(!is_valid(&"x".repeat(129)));
    }

    #[test]
    fn splits_label_lists() {
        assert_eq!(split_labels("a, b,,c"), vec!["a", "b", "c"]);
        assert!(split_labels("").is_empty());
    }
}
