//! `limit` and `offset` for every list: limit defaults to 100, at most 1000.

use crate::error::{Error, Result};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

pub fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64)> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let offset = offset.unwrap_or(0);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::bad_request(format!("limit must be between 1 and {MAX_LIMIT}, got {limit}")));
    }
    if offset < 0 {
        return Err(Error::bad_request(format!("offset must not be negative, got {offset}")));
    }
    Ok((limit, offset))
}

#[cfg(test)]
mod tests {
    #[test]
    fn defaults_and_bounds() {
        assert_eq!(super::page(None, None).unwrap(), (100, 0));
        assert_eq!(super::page(Some(1000), Some(5)).unwrap(), (1000, 5));
        assert!(super::page(Some(0), None).is_err());
        assert!(super::page(Some(1001), None).is_err());
        assert!(super::page(None, Some(-1)).is_err());
    }
}
