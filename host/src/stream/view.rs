//! What policies read of streams: entries oldest first after a seq, or the
//! newest. Expired streams and entries past retention are not there.

use super::store::{self, EntryQuery};
use crate::clock;
use crate::db::Db;
use crate::error::Result;
use crate::policy::view::{Answer, Read, StreamEntry};

fn entry(e: store::EntryRow) -> StreamEntry {
    StreamEntry {
        seq: e.seq as u64,
        label: e.label,
        data: e.data,
        agent: e.agent,
        created_at: clock::rfc3339(e.created_at),
    }
}

/// A stream read from storage; any other read answers as absence.
pub async fn fetch(db: &Db, read: &Read) -> Result<Answer> {
    if let Read::LastSeq { stream_id } = read {
        let last = store::by_id(db, stream_id).await?.map_or(0, |s| s.last_seq);
        return Ok(Answer::Seq(u64::try_from(last).unwrap_or(0)));
    }
    let (id, label) = match read {
        Read::Stream { stream_id, label, .. } | Read::Latest { stream_id, label } => (stream_id, label.as_deref()),
        _ => return Ok(read.absent()),
    };
    let Some(stream) = store::by_id(db, id).await? else { return Ok(read.absent()) };
    let cutoff = super::retention_cutoff(&stream);
    Ok(match read {
        Read::Stream { after, limit, .. } => {
            let q = EntryQuery {
                label,
                after: i64::try_from(*after).unwrap_or(i64::MAX),
                not_before: cutoff,
                limit: i64::from(*limit),
                offset: 0,
            };
            Answer::Entries(store::entries(db, id, &q).await?.into_iter().map(entry).collect())
        }
        _ => Answer::Entry(store::latest(db, id, label, cutoff).await?.map(entry)),
    })
}
