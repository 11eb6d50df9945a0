//! `If-Match` for optimistic concurrency on stashes. ETags are the version
//! number in quotes: `"3"`.

use axum::http::HeaderMap;
use axum::http::header::IF_MATCH;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: write whatever the current version is.
    Absent,
    /// `*`: the resource must exist.
    Any,
    /// One or more versions, any of which may be current.
    Versions(Vec<i64>),
}

impl IfMatch {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self> {
        let Some(raw) = headers.get(IF_MATCH) else { return Ok(Self::Absent) };
        let raw = raw.to_str().map_err(|_| Error::bad_request("If-Match is not ASCII"))?.trim();
        if raw == "*" {
            return Ok(Self::Any);
        }
        raw.split(',')
            .map(|tag| {
                let tag = tag.trim();
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                tag.trim_matches('"').parse::<i64>().map_err(|_| {
                    Error::bad_request(format!(
                        "If-Match {tag:?} is not an ETag of this API: send the ETag you read, e.g. \"3\""
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Self::Versions)
    }

    pub fn is_present(&self) -> bool {
        *self != Self::Absent
    }

    /// 412 unless `current` (None: no such resource) satisfies the header.
    pub fn check(&self, current: Option<i64>) -> Result<()> {
        let ok = match (self, current) {
            (Self::Absent, _) => true,
            (Self::Any, current) => current.is_some(),
            (Self::Versions(vs), Some(v)) => vs.contains(&v),
            (Self::Versions(_), None) => false,
        };
        if ok {
            return Ok(());
        }
        Err(Error::precondition_failed(match current {
            Some(v) => format!("If-Match does not match the current version \"{v}\"; read it again and retry"),
            None => "If-Match was given but the stash does not exist".to_string(),
        }))
    }

    /// The one version a delete must hit, if the header names exactly one.
    pub fn single(&self) -> Option<i64> {
        match self {
            Self::Versions(vs) if vs.len() == 1 => Some(vs[0]),
            _ => None,
        }
    }
}

pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<IfMatch> {
        let mut h = HeaderMap::new();
        h.insert(IF_MATCH, v.parse().unwrap());
        IfMatch::from_headers(&h)
    }

    #[test]
    fn parses_and_checks() {
        assert_eq!(parse("\"3\"").unwrap(), IfMatch::Versions(vec![3]));
        assert_eq!(parse("W/\"3\", \"4\"").unwrap(), IfMatch::Versions(vec![3, 4]));
        assert_eq!(parse("*").unwrap(), IfMatch::Any);
        assert!(parse("\"abc\"").is_err());
        assert!(parse("\"3\"").unwrap().check(Some(3)).is_ok());
        assert_eq!(parse("\"3\"").unwrap().check(Some(4)).unwrap_err().status().as_u16(), 412);
        assert_eq!(IfMatch::Any.check(None).unwrap_err().status().as_u16(), 412);
        assert!(IfMatch::Absent.check(None).is_ok());
    }
}
