//! What policies read of a team. Decisions made for a team read its tasks
//! from the writer's snapshot ([`TeamView`]); reads of other teams (and
//! dry runs) go to storage through [`fetch`], as the reader could over HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::store::{self, Deps, Status as Stored, TaskRow};
use crate::db::Db;
use crate::error::Result;
use crate::name;
use crate::policy::view::{Answer, Read, Reader, Status, Task, TaskStatus, View};

fn status(s: Stored) -> TaskStatus {
    match s {
        Stored::Pending => TaskStatus::Pending,
        Stored::InProgress => TaskStatus::InProgress,
        Stored::Completed => TaskStatus::Completed,
    }
}

fn to_task(t: &TaskRow, blocked_by: Vec<i64>, blocks: Vec<i64>) -> Task {
    Task {
        id: t.id as u64,
        subject: t.subject.clone(),
        description: t.description.clone(),
        active_form: t.active_form.clone(),
        status: status(t.status),
        owner: t.owner.clone(),
        blocked_by: blocked_by.into_iter().map(|b| b as u64).collect(),
        blocks: blocks.into_iter().map(|b| b as u64).collect(),
        metadata: t.metadata.clone(),
    }
}

/// One team's tasks as its writer holds them. It answers task reads of its
/// own team; the reader is a member, or the write would not have reached
/// the writer.
pub struct TeamView {
    team: String,
    tasks: Arc<BTreeMap<i64, TaskRow>>,
    deps: Arc<Deps>,
    by_owner: Arc<BTreeMap<String, BTreeSet<i64>>>,
}

impl TeamView {
    pub fn new(
        team: &str,
        tasks: Arc<BTreeMap<i64, TaskRow>>,
        deps: Arc<Deps>,
        by_owner: Arc<BTreeMap<String, BTreeSet<i64>>>,
    ) -> Self {
        Self { team: team.to_string(), tasks, deps, by_owner }
    }

    fn task(&self, t: &TaskRow) -> Task {
        to_task(t, self.deps.blocked_by(t.id), self.deps.blocks(t.id))
    }
}

impl View for TeamView {
    fn answer(&self, read: &Read) -> Option<Answer> {
        match read {
            Read::Task { team, id } if *team == self.team => {
                let t = i64::try_from(*id).ok().and_then(|id| self.tasks.get(&id));
                Some(Answer::Task(t.map(|t| self.task(t))))
            }
            Read::Tasks { team } if *team == self.team => {
                Some(Answer::Tasks(self.tasks.values().map(|t| self.task(t)).collect()))
            }
            Read::OwnedBy { team, owner, status: wanted } if *team == self.team => Some(Answer::Tasks(
                self.by_owner
                    .get(owner)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.tasks.get(id))
                    .map(|t| self.task(t))
                    .filter(|t| wanted.is_none_or(|w| Status::of(t.status) == w))
                    .collect(),
            )),
            _ => None,
        }
    }
}

/// A task read from storage, for members (and admins) only; absence
/// otherwise, as over HTTP.
pub async fn fetch(db: &Db, reader: &Reader, read: &Read) -> Result<Answer> {
    let (team, one) = match read {
        Read::Task { team, id } => (team, Some(*id)),
        Read::Tasks { team } | Read::OwnedBy { team, .. } => (team, None),
        _ => return Ok(read.absent()),
    };
    if !name::is_valid(team) || !(reader.admin || store::is_member(db, team, &reader.name).await?) {
        return Ok(read.absent());
    }
    let rows: Vec<TaskRow> = match one {
        Some(id) => match i64::try_from(id) {
            Ok(id) => store::task(db, team, id).await?.into_iter().collect(),
            Err(_) => Vec::new(),
        },
        None => store::tasks(db, team, None, None, i64::MAX, 0).await?,
    };
    let deps: Deps = store::deps(db, team).await?.into_iter().collect();
    let tasks = rows.into_iter().map(|t| to_task(&t, deps.blocked_by(t.id), deps.blocks(t.id)));
    Ok(match read {
        Read::Task { .. } => Answer::Task(tasks.into_iter().next()),
        Read::OwnedBy { owner, status: wanted, .. } => Answer::Tasks(
            tasks
                .filter(|t| t.owner.as_deref() == Some(owner.as_str()))
                .filter(|t| wanted.is_none_or(|w| Status::of(t.status) == w))
                .collect(),
        ),
        _ => Answer::Tasks(tasks.collect()),
    })
}
