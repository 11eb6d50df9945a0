//! What policies read of stashes: a stash looked up as the reader would
//! over HTTP (its own first, then a shared or discoverable one), whole or,
//! for a contract, by its parts.

use super::store;
use crate::db::Db;
use crate::error::Result;
use crate::policy::view::{Answer, Read, Reader, StashDocument, contract_answer};

/// The policy's form of a stored stash.
pub fn document(s: store::Stash) -> StashDocument {
    StashDocument {
        name: s.name,
        owner: s.owner,
        persistent: s.persistent,
        version: s.version as u64,
        content_type: s.content_type,
        body: s.body,
        schema_id: s.schema_id,
    }
}

/// A stash, or a contract read by its parts, from storage; any other read
/// answers as absence.
pub async fn fetch(db: &Db, reader: &Reader, read: &Read) -> Result<Answer> {
    let (name, persistent) = match read {
        Read::Stash { name, persistent } => (name.as_str(), *persistent),
        _ => match read.contract() {
            Some(contract) => (contract, true),
            None => return Ok(read.absent()),
        },
    };
    if !crate::name::is_valid(name) {
        return Ok(read.absent());
    }
    let found = store::lookup(db, &reader.name, name, persistent).await?;
    Ok(match read {
        Read::Stash { .. } => Answer::Stash(found.map(document)),
        _ => match found.and_then(|s| serde_json::from_slice(&s.body).ok()) {
            Some(doc) => contract_answer(&doc, read),
            None => read.absent(),
        },
    })
}
