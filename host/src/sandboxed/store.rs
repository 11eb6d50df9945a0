//! Agents' cursors and dead letters. An entry's effects (its appends), its
//! decision record and the cursor's advance past it commit in one
//! transaction, and the advance only from the position the runner read: a
//! host that lost a race (another host, an older version) commits nothing.

use crate::db::Db;
use crate::db::is_unique_violation;
use crate::error::Result;
use crate::policy::store::DecisionRow;
use crate::stash::Stash;
use crate::{append_in_tx, clock, insert_decisions, with_db};

/// A write checked and ready to commit with the cursor's advance.
pub enum Effect {
    /// An entry, which must get this `seq`.
    Append { stream_id: String, label: Option<String>, data: String, seq: i64 },
    /// A stash row over the version `expected` (None: new).
    Put { next: Box<Stash>, expected: Option<i64> },
}

/// Writes a call's effects in `$tx` as `$run_as`, each entry `$hops` calls
/// from HTTP: the (stream, seq) appended, or None if something moved since
/// the call (an entry did not get its seq, a stash its version; the caller
/// rolls back).
macro_rules! write_effects {
    ($tx:expr, $effects:expr, $run_as:expr, $hops:expr, $now:expr) => {{
        let mut written = Some(Vec::new());
        for effect in $effects {
            match effect {
                Effect::Append { stream_id, label, data, seq } => {
                    let got = append_in_tx!($tx, stream_id, label, data, $run_as, $now, $hops)?;
                    if got != Some(*seq) {
                        written = None;
                        break;
                    }
                    if let Some(w) = &mut written {
                        w.push((stream_id.clone(), *seq));
                    }
                }
                Effect::Put { next, expected } => {
                    let done = match expected {
                        Some(v) => crate::update_stash!(&mut *$tx, next, *v),
                        None => crate::insert_stash!(&mut *$tx, next),
                    };
                    match done {
                        Ok(1) => {}
                        Ok(_) => {
                            written = None;
                            break;
                        }
                        Err(e) if is_unique_violation(&e) => {
                            written = None;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        written
    }};
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Cursor {
    pub stream_id: String,
    /// The last entry handled (or skipped).
    pub seq: i64,
    pub processed: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Entries not delivered because too many agent calls led to them.
    pub looped: i64,
    pub paused: bool,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: String,
    pub stream_id: String,
    pub seq: i64,
    pub attempts: i64,
    pub error: String,
    pub at: i64,
}

/// The cursor of `policy` on `stream_id`, made at `start` if it has none
/// (read first: the runner asks on every look, and a write each time would
/// take SQLite's one writer for nothing).
pub async fn cursor(db: &Db, policy: &str, stream_id: &str, start: i64) -> Result<Cursor> {
    const READ: &str = "SELECT stream_id, seq, processed, failed, skipped, looped, paused, last_error \
                        FROM agent_cursors WHERE policy = $1 AND stream_id = $2";
    const MAKE: &str =
        "INSERT INTO agent_cursors (policy, stream_id, seq, processed, failed, skipped, paused, updated_at)
         VALUES ($1, $2, $3, 0, 0, 0, $4, $5) ON CONFLICT (policy, stream_id) DO NOTHING";
    let found: Option<Cursor> =
        with_db!(db, read, |pool| sqlx::query_as(READ).bind(policy).bind(stream_id).fetch_optional(pool).await)?;
    if let Some(c) = found {
        return Ok(c);
    }
    with_db!(db, write, |pool| sqlx::query(MAKE)
        .bind(policy)
        .bind(stream_id)
        .bind(start)
        .bind(false)
        .bind(clock::now_ms())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    // Another host may have made it first: read what stands.
    Ok(with_db!(db, write, |pool| sqlx::query_as(READ).bind(policy).bind(stream_id).fetch_one(pool).await)?)
}

/// Every cursor of `policy`.
pub async fn cursors(db: &Db, policy: &str) -> Result<Vec<Cursor>> {
    Ok(with_db!(db, read, |pool| sqlx::query_as(
        "SELECT stream_id, seq, processed, failed, skipped, looped, paused, last_error FROM agent_cursors \
         WHERE policy = $1 ORDER BY stream_id"
    )
    .bind(policy)
    .fetch_all(pool)
    .await)?)
}

/// One handled entry's writes (each entry `hops` agent calls from one
/// written over HTTP) and its call's record.
pub struct Handled {
    pub effects: Vec<Effect>,
    pub hops: i64,
    pub record: DecisionRow,
}

/// What handling entries (or skipping some) left to commit.
pub enum Step {
    /// Entries up to the new position: these handled, as `run_as`; the rest
    /// not for this agent, so many, of which so many had come through too
    /// many agents.
    Moved { handled: Vec<Handled>, run_as: String, skipped: i64, looped: i64 },
    /// Every attempt failed: a dead letter, and the subscription pauses if asked.
    Dead { letter: DeadLetter, record: Box<DecisionRow>, pause: bool },
}

/// How a commit went.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// Done; the appended entries' (stream, seq), to announce.
    Done(Vec<(String, i64)>),
    /// The cursor moved (another host, or another version of this agent),
    /// or a write found its entry's seq or its stash's version taken:
    /// nothing was written, and the entry is handled again from where the
    /// cursor is.
    Lost,
}

/// Commits `step`, moving the cursor of `policy` on `stream_id` from `from`
/// to `to`, all in one transaction.
pub async fn commit(db: &Db, policy: &str, stream_id: &str, from: i64, to: i64, step: Step) -> Result<Committed> {
    let now = clock::now_ms();
    Ok(with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        let (processed, failed, skipped, looped, error, paused) = match &step {
            Step::Moved { handled, skipped, looped, .. } => (handled.len() as i64, 0, *skipped, *looped, None, false),
            Step::Dead { letter, pause, .. } => (0, 1, 0, 0, Some(letter.error.clone()), *pause),
        };
        let mut appended = Vec::new();
        if let Step::Moved { handled, run_as, .. } = &step {
            for h in handled {
                let Some(written) = write_effects!(tx, &h.effects, run_as, h.hops, now) else {
                    tx.rollback().await?;
                    return Ok(Committed::Lost);
                };
                appended.extend(written);
            }
        }
        let moved = sqlx::query(
            "UPDATE agent_cursors SET seq = $3, processed = processed + $4, failed = failed + $5, \
             skipped = skipped + $6, looped = looped + $7, last_error = COALESCE($8, last_error), paused = $9, \
             updated_at = $10 WHERE policy = $1 AND stream_id = $2 AND seq = $11",
        )
        .bind(policy)
        .bind(stream_id)
        .bind(to)
        .bind(processed)
        .bind(failed)
        .bind(skipped)
        .bind(looped)
        .bind(&error)
        .bind(paused)
        .bind(now)
        .bind(from)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(Committed::Lost);
        }
        match &step {
            Step::Moved { handled, .. } => insert_decisions!(tx, handled.iter().map(|h| &h.record))?,
            Step::Dead { letter, record, .. } => {
                insert_decisions!(tx, [&**record])?;
                sqlx::query(
                    "INSERT INTO agent_dead_letters (id, policy, stream_id, seq, attempts, error, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&letter.id)
                .bind(policy)
                .bind(&letter.stream_id)
                .bind(letter.seq)
                .bind(letter.attempts)
                .bind(&letter.error)
                .bind(letter.at)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Committed::Done(appended))
    }
    .await)?)
}

/// A dead letter handled at last: its writes and record, and the letter
/// gone, in one transaction; `Lost` if the letter was already gone (a
/// retry that raced this one) or an append's seq moved.
pub async fn retried(
    db: &Db,
    policy: &str,
    letter: &DeadLetter,
    effects: &[Effect],
    run_as: &str,
    hops: i64,
    record: &DecisionRow,
) -> Result<Committed> {
    let now = clock::now_ms();
    Ok(with_db!(db, write, |pool| async {
        let mut tx = pool.begin().await?;
        let gone = sqlx::query("DELETE FROM agent_dead_letters WHERE id = $1 AND policy = $2")
            .bind(&letter.id)
            .bind(policy)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone != 1 {
            tx.rollback().await?;
            return Ok(Committed::Lost);
        }
        let Some(appended) = write_effects!(tx, effects, run_as, hops, now) else {
            tx.rollback().await?;
            return Ok(Committed::Lost);
        };
        sqlx::query(
            "UPDATE agent_cursors SET processed = processed + 1, failed = failed - 1, updated_at = $3 \
             WHERE policy = $1 AND stream_id = $2",
        )
        .bind(policy)
        .bind(&letter.stream_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_decisions!(tx, [record])?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Committed::Done(appended))
    }
    .await)?)
}

/// A dead letter by id, if `policy` has it.
pub async fn dead_letter(db: &Db, policy: &str, id: &str) -> Result<Option<DeadLetter>> {
    Ok(with_db!(db, read, |pool| sqlx::query_as(
        "SELECT id, stream_id, seq, attempts, error, at FROM agent_dead_letters WHERE policy = $1 AND id = $2"
    )
    .bind(policy)
    .bind(id)
    .fetch_optional(pool)
    .await)?)
}

/// A retry that failed again: the letter keeps the new error.
pub async fn failed_again(db: &Db, id: &str, error: &str) -> Result<()> {
    with_db!(db, write, |pool| sqlx::query(
        "UPDATE agent_dead_letters SET attempts = attempts + 1, error = $2, at = $3 WHERE id = $1"
    )
    .bind(id)
    .bind(error)
    .bind(clock::now_ms())
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Notes the latest failure on a cursor without moving it.
pub async fn failed_once(db: &Db, policy: &str, stream_id: &str, error: &str) -> Result<()> {
    with_db!(db, write, |pool| sqlx::query(
        "UPDATE agent_cursors SET last_error = $3, updated_at = $4 WHERE policy = $1 AND stream_id = $2"
    )
    .bind(policy)
    .bind(stream_id)
    .bind(error)
    .bind(clock::now_ms())
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The dead letters of `policy`, oldest first.
pub async fn dead_letters(db: &Db, policy: &str, limit: i64) -> Result<Vec<DeadLetter>> {
    Ok(with_db!(db, read, |pool| sqlx::query_as(
        "SELECT id, stream_id, seq, attempts, error, at FROM agent_dead_letters WHERE policy = $1 \
         ORDER BY at, id LIMIT $2"
    )
    .bind(policy)
    .bind(limit)
    .fetch_all(pool)
    .await)?)
}

/// Counts of dead letters per stream of `policy`.
pub async fn dead_letter_count(db: &Db, policy: &str) -> Result<i64> {
    let (n,): (i64,) =
        with_db!(db, read, |pool| sqlx::query_as("SELECT COUNT(*) FROM agent_dead_letters WHERE policy = $1")
            .bind(policy)
            .fetch_one(pool)
            .await)?;
    Ok(n)
}

/// Takes or renews the lease on running `policy` for `holder` until
/// `until` (ms): true if `holder` has it now.
pub async fn lease(db: &Db, policy: &str, holder: &str, until: i64) -> Result<bool> {
    const SQL: &str = "INSERT INTO agent_leases (policy, holder, until) VALUES ($1, $2, $3) \
         ON CONFLICT (policy) DO UPDATE SET holder = excluded.holder, until = excluded.until \
         WHERE agent_leases.holder = excluded.holder OR agent_leases.until < $4";
    let n = with_db!(db, write, |pool| sqlx::query(SQL)
        .bind(policy)
        .bind(holder)
        .bind(until)
        .bind(clock::now_ms())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Gives the lease back (a host stopping), so another takes over at once.
pub async fn release(db: &Db, policy: &str, holder: &str) -> Result<()> {
    with_db!(db, write, |pool| sqlx::query("DELETE FROM agent_leases WHERE policy = $1 AND holder = $2")
        .bind(policy)
        .bind(holder)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Who holds the lease on `policy`, and until when (ms).
pub async fn holder(db: &Db, policy: &str) -> Result<Option<(String, i64)>> {
    Ok(with_db!(db, read, |pool| sqlx::query_as("SELECT holder, until FROM agent_leases WHERE policy = $1")
        .bind(policy)
        .fetch_optional(pool)
        .await)?)
}
