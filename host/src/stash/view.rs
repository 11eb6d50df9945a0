//! What policies read of stashes: a stash looked up as the reader would
//! over HTTP (its own first, then a shared or discoverable one).

use super::store;
use crate::db::Db;
use crate::error::Result;
use crate::policy::view::{Answer, Read, Reader, StashDocument};

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

/// A stash read from storage; any other read answers as absence.
pub async fn fetch(db: &Db, reader: &Reader, read: &Read) -> Result<Answer> {
    let Read::Stash { name, persistent } = read else { return Ok(read.absent()) };
    if !crate::name::is_valid(name) {
        return Ok(read.absent());
    }
    Ok(Answer::Stash(store::lookup(db, &reader.name, name, *persistent).await?.map(document)))
}
