//! What a final outcome brings after it, settled by the recorder after the
//! outcome is stored and before its message is acked (see
//! `docs/workflows.md`, "The worker hook"):
//!
//! - a chord member's outcome is reported to its chord
//!   ([`ResultBackend::members_done`], one transaction per batch, the same
//!   one that stores the batch's outcomes where the database allows it:
//!   [`ResultBackend::store_and_report`]); the one
//!   report that completes the chord publishes its callback with the
//!   members' results in order, the one that fails it records the callback
//!   FAILURE (`ChordError`) and calls its errbacks; then the chord is marked
//!   sent (a failed chord whose callback is a member of an outer chord only
//!   once the outer chord has heard of it);
//! - a chain step that ends in anything but SUCCESS marks the steps after it
//!   REVOKED (`ChainAborted`), so they are not left PENDING.
//!
//! If a member's worker dies anywhere in between, the member is redelivered,
//! found done, and reported again: the report answers "claimant, not sent"
//! until the callback is marked sent.

use crate::carry_out::task_error;
use crate::context::TaskFailure;
use crate::disposition::CHORD_CALLBACK_HEADER;
use crate::followup::{self, FollowupError, Unsent};
use crate::publish::Publisher;
use celeriac::canvas::{After, apply_after, planned_tasks};
use celeriac_common::TaskState;
use celeriac_common::backend::chord::{ChordAction, ChordMember, ChordProgress};
use celeriac_common::backend::{BackendError, ResultBackend, TaskError, TaskOutcome};
use celeriac_common::backoff::Backoff;
use celeriac_common::protocol::{Signature, TaskMessage};
use chrono::Utc;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Chords nested deeper than this are not followed (a failure reported to
/// an outer chord, and so on); the canvas module refuses deeper ones.
const MAX_NESTING: usize = 32;

/// One report of a finished member to its chord.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    member: ChordMember,
    root_id: String,
    /// The member's error, when it did not succeed.
    failure: Option<TaskError>,
    /// The callback's id as the member's message names it.
    callback_id: Option<String>,
}

/// What a finished delivery leaves to do once its outcome is stored.
pub(crate) struct Later {
    /// Reports to chords.
    pub(crate) reports: Vec<Report>,
    /// Outcomes stored with the task's (the rest of a stopped chain).
    pub(crate) aborted: Vec<TaskOutcome>,
    /// The session the delivery came on (callbacks go out through it).
    pub(crate) publisher: Arc<Publisher>,
    /// The queue it came from (for signatures that name none).
    pub(crate) queue: String,
}

/// Why a chord could not be settled; the member's message is returned to
/// its queue, and its next delivery reports again.
#[derive(Debug, thiserror::Error)]
enum SettleError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Followup(#[from] FollowupError),
}

/// The reports and chain marks that `msg` ending in `state` brings (nothing
/// for a state that is not final).
pub(crate) fn consequences(
    msg: &TaskMessage,
    state: TaskState,
    (error, result): (Option<&TaskError>, Option<&Value>),
) -> (Vec<Report>, Vec<TaskOutcome>) {
    let (mut reports, mut aborted) = (Vec::new(), Vec::new());
    if !state.is_ready() {
        return (reports, aborted);
    }
    let root = followup::root_of(msg).to_owned();
    let ok = state == TaskState::Success;
    let failure = |e: Option<&TaskError>| {
        (!ok).then(|| {
            e.cloned().unwrap_or_else(|| TaskError {
                kind: state.as_str().to_owned(),
                message: format!("ended in {state}"),
                traceback: None,
            })
        })
    };
    if let (Some(body), Some(group)) = (&msg.embed.chord, &msg.group) {
        reports.push(Report {
            member: ChordMember {
                // Kept with the member: the callback's arguments are read
                // from the member rows alone.
                result: result.filter(|_| ok).map(Value::to_string),
                ..member(group, &msg.id, msg.group_index, ok)
            },
            root_id: root.clone(),
            failure: failure(error),
            callback_id: text_option(body, "task_id"),
        });
    }
    if ok {
        return (reports, aborted);
    }
    let why = TaskError {
        kind: "ChainAborted".to_owned(),
        message: format!(
            "not run: step {} ({}) of its chain ended in {state}",
            msg.id, msg.task
        ),
        traceback: None,
    };
    let rest = msg.embed.chain.iter().flatten();
    let parent = Some(msg.id.clone());
    abort_steps(rest, (&root, parent), &why, (&mut reports, &mut aborted));
    (reports, aborted)
}

/// The error kind recorded on a callback or chain step that can never be
/// sent; its message is [`SEND_ERROR_PREFIX`] and the reason.
const SEND_ERROR: &str = "SendError";
const SEND_ERROR_PREFIX: &str = "cannot be sent: ";

/// The reason recorded in `error`, if it is the one [`unsent`] records (a
/// task that ran and raised an exception named `SendError` has its own
/// message and a traceback).
pub(crate) fn unsendable_reason(error: &TaskError) -> Option<&str> {
    if error.kind != SEND_ERROR || error.traceback.is_some() {
        return None;
    }
    error.message.strip_prefix(SEND_ERROR_PREFIX)
}

/// The outcomes and chord reports that a callback or chain step that can
/// never be sent brings, after `parent` succeeded: each of its tasks
/// FAILURE (`SendError`), the rest of its chain not run.
pub(crate) fn unsent(parent: &TaskMessage, unsent: &Unsent) -> (Vec<Report>, Vec<TaskOutcome>) {
    let (mut reports, mut aborted) = (Vec::new(), Vec::new());
    let root = followup::root_of(parent).to_owned();
    let why = TaskError {
        kind: SEND_ERROR.to_owned(),
        message: format!("{SEND_ERROR_PREFIX}{}", unsent.error),
        traceback: None,
    };
    let step = std::slice::from_ref(&unsent.sig).iter();
    let parent = Some(parent.id.clone());
    let last = abort_steps(step, (&root, parent), &why, (&mut reports, &mut aborted));
    for o in &mut aborted {
        o.state = TaskState::Failure;
    }
    let why = TaskError {
        kind: "ChainAborted".to_owned(),
        message: format!(
            "not run: step {} of its chain cannot be sent",
            last.as_deref().unwrap_or(&unsent.sig.task)
        ),
        traceback: None,
    };
    let rest = unsent.rest.iter();
    abort_steps(rest, (&root, last), &why, (&mut reports, &mut aborted));
    (reports, aborted)
}

/// Marks `steps` (a chain's, as Celery stores them: reversed) not run with
/// `why`, each step's parent the step before it where that is one task;
/// the parent the next step would have (the last step's id, if one task).
fn abort_steps<'a>(
    steps: impl DoubleEndedIterator<Item = &'a Signature>,
    (root, mut parent): (&str, Option<String>),
    why: &TaskError,
    (reports, aborted): (&mut Vec<Report>, &mut Vec<TaskOutcome>),
) -> Option<String> {
    // In the order they would run.
    for step in steps.rev() {
        let tasks = planned_tasks(step);
        let single = tasks.len() == 1;
        let step_parent = parent.take();
        for sig in tasks {
            let Some(id) = text_option(&sig, "task_id") else {
                continue; // not frozen (a chain built elsewhere): nothing to mark
            };
            if single {
                parent = Some(id.clone());
            }
            aborted.push(not_run(&sig, id, why, (root, step_parent.clone()), reports));
        }
    }
    parent
}

/// The outcome of a chain step that will not run (`why`), and the report
/// to its chord if it is the last step of a chain in a chord's header.
fn not_run(
    sig: &Signature,
    id: String,
    why: &TaskError,
    (root, parent): (&str, Option<String>),
    reports: &mut Vec<Report>,
) -> TaskOutcome {
    let mut o = TaskOutcome::new(id.clone(), sig.task.clone(), TaskState::Revoked);
    o.error = Some(why.clone());
    o.root_id = Some(root.to_owned());
    o.parent_id = parent;
    o.group_id = text_option(sig, "group_id");
    let index = sig.options.get("group_index").and_then(Value::as_i64);
    o.group_index = index.and_then(|i| u32::try_from(i).ok());
    o.done_at = Some(Utc::now());
    // It did not run here; if a copy of it did (after a crash), its own
    // outcome stays.
    o.unless_ready = true;
    // The last step of a chain in a chord's header: the chord fails.
    if let (Some(_), Some(group)) = (sig.options.get("chord"), &o.group_id) {
        reports.push(Report {
            member: member(group, &id, index, false),
            root_id: root.to_owned(),
            failure: Some(why.clone()),
            callback_id: None,
        });
    }
    o
}

fn text_option(sig: &Signature, key: &str) -> Option<String> {
    sig.options
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn member(group: &str, id: &str, index: Option<i64>, ok: bool) -> ChordMember {
    ChordMember {
        group_id: group.to_owned(),
        task_id: id.to_owned(),
        index: index.and_then(|i| u32::try_from(i).ok()).unwrap_or(0),
        ok,
        result: None,
    }
}

/// The chord reports of `laters`, each with its position in `laters`.
fn reports_of(laters: &[(usize, Box<Later>)]) -> Vec<(usize, Report)> {
    laters
        .iter()
        .enumerate()
        .flat_map(|(i, (_, l))| l.reports.iter().map(move |r| (i, r.clone())))
        .collect()
}

/// Chord reports made, with the answers still to act on.
pub(crate) struct Reported {
    pending: Vec<(usize, Report)>,
    answers: Vec<Option<ChordProgress>>,
}

impl Reported {
    /// The positions (the first of each pair in `laters`) of the
    /// deliveries whose answers leave something to do: a callback to send
    /// or fail, a chord to record failed. Sorted, without repeats.
    pub(crate) fn acting(&self, laters: &[(usize, Box<Later>)]) -> Vec<usize> {
        let mut acting: Vec<usize> = self
            .pending
            .iter()
            .zip(&self.answers)
            .filter(|(_, answer)| {
                answer
                    .as_ref()
                    .is_none_or(|p| p.action() != ChordAction::Nothing)
            })
            .map(|((i, _), _)| laters[*i].0)
            .collect();
        acting.sort_unstable();
        acting.dedup();
        acting
    }
}

/// Stores `outcomes` and reports the chord members of `laters` in one
/// transaction; `None` when that cannot be done in one transaction or
/// failed (nothing is then stored or reported: store, then [`report`]).
pub(crate) async fn store_and_report(
    backend: &ResultBackend,
    outcomes: &[TaskOutcome],
    laters: &[(usize, Box<Later>)],
) -> Option<Reported> {
    let pending = reports_of(laters);
    let members: Vec<ChordMember> = pending.iter().map(|(_, r)| r.member.clone()).collect();
    match backend.store_and_report(outcomes, &members).await {
        Ok(Some(answers)) => Some(Reported { pending, answers }),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(error = %e, "storing and reporting together failed; apart now");
            None
        }
    }
}

/// Reports every chord member of `laters` (one transaction for all),
/// retrying while the database cannot be reached.
pub(crate) async fn report(backend: &ResultBackend, laters: &[(usize, Box<Later>)]) -> Reported {
    let pending = reports_of(laters);
    let members = pending.iter().map(|(_, r)| r.member.clone()).collect();
    let answers = report_until_done(backend, members).await;
    Reported { pending, answers }
}

/// Acts on the answers of `reported`, then reports and acts on what that
/// brings (a failed callback that is a member of an outer chord), and so
/// on; returns the positions (the first of each pair in `laters`) of the
/// deliveries that must go back to their queue instead of being acked.
pub(crate) async fn act_on(
    backend: &ResultBackend,
    laters: &[(usize, Box<Later>)],
    reported: Reported,
) -> Vec<usize> {
    let Reported {
        mut pending,
        answers,
    } = reported;
    let mut first = Some(answers);
    let mut failed = Vec::new();
    // Failed chords whose callback is a member of an outer chord: marked
    // settled only once the outer chord has heard of it (and acted), so
    // that a crash or an error in between leaves the inner claimant to
    // report again when its member is redelivered.
    let mut settled_later: Vec<(usize, String)> = Vec::new();
    for _ in 0..MAX_NESTING {
        if pending.is_empty() {
            break;
        }
        let answers = match first.take() {
            Some(answers) => answers,
            None => {
                let members = pending.iter().map(|(_, r)| r.member.clone()).collect();
                report_until_done(backend, members).await
            }
        };
        let mut next = Vec::new();
        for ((i, report), answer) in pending.into_iter().zip(answers) {
            let later = &laters[i].1;
            match crate::recorder::bounded(backend, act(backend, later, &report, answer)).await {
                Ok(Acted {
                    outer,
                    settle_after,
                }) => {
                    next.extend(outer.into_iter().map(|r| (i, r)));
                    settled_later.extend(settle_after.map(|gid| (i, gid)));
                }
                Err(e) => {
                    tracing::warn!(
                        task.id = %report.member.task_id,
                        chord = %report.member.group_id,
                        error = %e,
                        "cannot settle the chord now; returning the member to its queue"
                    );
                    failed.push(laters[i].0);
                }
            }
        }
        pending = next;
    }
    // Reports left unmade (nested too deep): their chords stay unsettled.
    let unsettled: Vec<usize> = pending.iter().map(|(i, _)| laters[*i].0).collect();
    // Outermost first: if one cannot be marked, the ones inside it stay
    // unsettled too, so the member's redelivery replays the whole nesting.
    for (i, gid) in settled_later.into_iter().rev() {
        if failed.contains(&laters[i].0) || unsettled.contains(&laters[i].0) {
            continue;
        }
        if let Err(e) = crate::recorder::bounded(backend, backend.mark_callback_sent(&gid)).await {
            tracing::warn!(
                chord = %gid,
                error = %e,
                "cannot mark the failed chord settled; returning the member to its queue"
            );
            failed.push(laters[i].0);
        }
    }
    failed.sort_unstable();
    failed.dedup();
    failed
}

/// What acting on one answer brought.
#[derive(Default)]
struct Acted {
    /// Reports to make next (a failed callback that is itself a member of
    /// an outer chord).
    outer: Vec<Report>,
    /// The failed chord to mark settled once those are made and acted on.
    settle_after: Option<String>,
}

/// `members_done`, retried while the database cannot be reached (the
/// members' messages stay unacknowledged meanwhile). When the report costs
/// its connection while the database answers pings (MySQL drops a
/// statement over `max_allowed_packet`), the members go one by one, and
/// one that keeps failing is reported failed without its result: its chord
/// fails, naming it, instead of the worker's outcomes waiting for ever.
async fn report_until_done(
    backend: &ResultBackend,
    members: Vec<ChordMember>,
) -> Vec<Option<ChordProgress>> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut answered = 0;
    loop {
        let done = backend.members_done(members.clone());
        let Ok(done) = tokio::time::timeout(backend.call_timeout(), done).await else {
            // A silent socket: again, on a fresh connection (a report
            // counts a member once however often it is made).
            tracing::error!(
                count = members.len(),
                "reporting chord members timed out; retrying"
            );
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        };
        match done {
            Ok(answers) => return answers,
            Err(e) if e.cost_the_connection() && crate::recorder::answers(backend).await => {
                answered += 1;
                if members.len() > 1 && answered >= crate::recorder::SPLIT_AFTER {
                    tracing::warn!(
                        error = %e,
                        count = members.len(),
                        "the database answers but does not take these chord reports; \
                         reporting them one by one"
                    );
                    let mut out = Vec::with_capacity(members.len());
                    for m in members {
                        out.extend(Box::pin(report_until_done(backend, vec![m])).await);
                    }
                    return out;
                }
                let m = &members[0];
                if answered >= crate::recorder::ANSWERED_MAX && (m.ok || m.result.is_some()) {
                    tracing::error!(
                        error = %e,
                        task.id = %m.task_id,
                        chord = %m.group_id,
                        "the database does not take this chord member's report; \
                         reporting it failed, without its result"
                    );
                    let failed = ChordMember {
                        ok: false,
                        result: None,
                        ..m.clone()
                    };
                    return Box::pin(report_until_done(backend, vec![failed])).await;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                answered = 0;
                if backoff.failures() == 0 {
                    tracing::error!(
                        error = %e,
                        count = members.len(),
                        "cannot report chord members; retrying"
                    );
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Acts on one answer.
async fn act(
    backend: &ResultBackend,
    later: &Later,
    report: &Report,
    answer: Option<ChordProgress>,
) -> Result<Acted, SettleError> {
    let Some(progress) = answer else {
        return not_recorded(backend, report)
            .await
            .map(|()| Acted::default());
    };
    match progress.action() {
        ChordAction::Nothing => Ok(Acted::default()),
        ChordAction::SendCallback => send_callback(backend, later, report, &progress).await,
        ChordAction::FailCallback => fail_callback(backend, later, report, &progress).await,
    }
}

/// A member of a chord the result backend does not know (its client did
/// not record it, as Celery's own does not): its callback cannot be run
/// exactly once, so it is recorded failed, once. A callback that already
/// has a row (failed by an earlier member, or sent, run and its chord since
/// expired) is left as it is.
async fn not_recorded(backend: &ResultBackend, report: &Report) -> Result<(), SettleError> {
    let gid = &report.member.group_id;
    if let Some(id) = &report.callback_id
        && let Some(row) = backend.get(id).await?
    {
        tracing::debug!(
            chord = %gid,
            callback.id = %id,
            callback.state = %row.state,
            "member of a chord not recorded; its callback's row stays as it is"
        );
        return Ok(());
    }
    tracing::error!(
        chord = %gid,
        "chord not recorded in the result backend (sent by a client that does not record chords); \
         its callback cannot run"
    );
    let Some(id) = &report.callback_id else {
        return Ok(());
    };
    let mut o = TaskOutcome::new(id.clone(), "celery.chord", TaskState::Failure);
    o.error = Some(TaskError {
        kind: "ChordError".to_owned(),
        message: format!(
            "chord {gid} is not recorded in the result backend: \
             send chords with a client that records them (celeriac's send_workflow)"
        ),
        traceback: None,
    });
    o.group_id = Some(gid.clone());
    o.done_at = Some(Utc::now());
    o.unless_ready = true;
    backend.store(vec![o]).await?;
    Ok(())
}

/// The claimant of a completed chord: publishes the callback with the
/// members' results in order, then marks it sent. A callback that cannot
/// be sent is recorded FAILURE instead, and reported failed to its outer
/// chord if it is a member of one.
async fn send_callback(
    backend: &ResultBackend,
    later: &Later,
    report: &Report,
    progress: &ChordProgress,
) -> Result<Acted, SettleError> {
    let chord = &progress.chord;
    let gid = &chord.group_id;
    let began = std::time::Instant::now();
    // Both at once where the database has connections to spare (the
    // check is for a claimant that published before a crash, rare).
    let (done, arguments) = tokio::join!(
        backend.get(&chord.callback_id),
        backend.callback_arguments(chord)
    );
    // Published before a crash, and already running or done: not again.
    if done?.is_some() {
        backend.mark_callback_sent(gid).await?;
        return Ok(Acted::default());
    }
    let results = Value::Array(arguments?);
    let read = began.elapsed();
    let after = After {
        result: Some(&results),
        parent_id: &report.member.task_id,
        root_id: &report.root_id,
    };
    let planned = serde_json::from_value::<Signature>(chord.callback.clone())
        .map_err(|e| e.to_string())
        .and_then(|sig| apply_after(sig, after, Vec::new()).map_err(|e| e.to_string()));
    let sent = match planned {
        Ok(mut applied) => {
            for (msg, _) in &mut applied.messages {
                msg.extra_headers
                    .insert(CHORD_CALLBACK_HEADER.into(), Value::String(gid.clone()));
            }
            let (publisher, queue) = (&later.publisher, later.queue.as_str());
            let built = began.elapsed();
            match followup::publish(publisher, Some(backend), &applied, queue, "chord callback")
                .await
            {
                Ok(()) => {
                    tracing::debug!(
                        chord = %gid,
                        read_ms = read.as_secs_f64() * 1e3,
                        built_ms = built.as_secs_f64() * 1e3,
                        published_ms = began.elapsed().as_secs_f64() * 1e3,
                        "chord callback: times since the claim"
                    );
                    Ok(())
                }
                // The same every time: recorded as a callback that cannot
                // be sent.
                Err(e) if e.is_unsendable() => Err(e.to_string()),
                // The broker or the database says no, for now: the member
                // goes back to its queue and reports again.
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => Err(e),
    };
    match sent {
        Ok(()) => {}
        Err(e) => {
            tracing::error!(chord = %gid, error = %e, "chord callback cannot be sent");
            let why = TaskError {
                kind: "ChordError".to_owned(),
                message: format!("the callback cannot be sent: {e}"),
                traceback: None,
            };
            let mut outer = Vec::new();
            let mut o = match serde_json::from_value::<Signature>(chord.callback.clone()) {
                // Recorded as a step that does not run, with the report to
                // its outer chord if it is a member of one.
                Ok(sig) => not_run(
                    &sig,
                    chord.callback_id.clone(),
                    &why,
                    (&report.root_id, Some(report.member.task_id.clone())),
                    &mut outer,
                ),
                Err(_) => TaskOutcome::new(
                    chord.callback_id.clone(),
                    "celery.chord",
                    TaskState::Failure,
                ),
            };
            o.state = TaskState::Failure;
            o.error = Some(why);
            o.done_at = Some(Utc::now());
            o.unless_ready = true;
            backend.store(vec![o]).await?;
            if !outer.is_empty() {
                return Ok(Acted {
                    outer,
                    settle_after: Some(gid.clone()),
                });
            }
        }
    }
    backend.mark_callback_sent(gid).await?;
    Ok(Acted::default())
}

/// The claimant of a failed chord: records the callback FAILURE with a
/// `ChordError` naming the failed member (as Celery does), calls the
/// callback's errbacks, marks the rest of its chain not run, then marks the
/// chord sent, or, when the callback is a member of an outer chord, returns
/// that report and leaves the mark until the outer chord has it.
async fn fail_callback(
    backend: &ResultBackend,
    later: &Later,
    report: &Report,
    progress: &ChordProgress,
) -> Result<Acted, SettleError> {
    let chord = &progress.chord;
    let failed = chord.fired_by.as_deref().unwrap_or(&report.member.task_id);
    let (kind, message) = report
        .failure
        .as_ref()
        .map_or(("Failure", ""), |e| (e.kind.as_str(), e.message.as_str()));
    let text = format!("Dependency {failed} raised {kind}({message:?})");
    let error = task_error(TaskFailure::new("ChordError", text));
    let after = After {
        result: None,
        parent_id: failed,
        root_id: &report.root_id,
    };
    // What the callback would have sent: each of those fails without running.
    let planned = serde_json::from_value::<Signature>(chord.callback.clone())
        .ok()
        .and_then(|sig| apply_after(sig, after, Vec::new()).ok());
    let messages = match planned {
        Some(applied) => applied.messages,
        None => {
            let mut msg = TaskMessage::new("celery.chord", Vec::new(), Default::default())
                .with_id(chord.callback_id.clone());
            msg.root_id = Some(report.root_id.clone());
            vec![(msg, None)]
        }
    };
    let mut outer = Vec::new();
    for (msg, queue) in &messages {
        let mut o = TaskOutcome::new(msg.id.clone(), msg.task.clone(), TaskState::Failure);
        o.error = Some(error.clone());
        (o.parent_id, o.root_id, o.group_id) = (
            msg.parent_id.clone(),
            msg.root_id.clone(),
            msg.group.clone(),
        );
        o.group_index = msg.group_index.and_then(|i| u32::try_from(i).ok());
        o.done_at = Some(Utc::now());
        o.unless_ready = true;
        let (reports, mut rows) = consequences(msg, TaskState::Failure, (Some(&error), None));
        rows.insert(0, o);
        backend.store(rows).await?;
        let queue = queue.as_deref().unwrap_or(&later.queue);
        if !followup::on_failure(&later.publisher, msg, queue).await {
            // The callback's FAILURE is stored: the errbacks are not tried again.
            tracing::error!(task_id = %msg.id, "the errbacks of a failed chord callback were not sent");
        }
        outer.extend(reports);
    }
    tracing::info!(
        chord = %chord.group_id,
        member = %failed,
        "chord failed: callback recorded FAILURE"
    );
    if outer.is_empty() {
        backend.mark_callback_sent(&chord.group_id).await?;
        return Ok(Acted::default());
    }
    Ok(Acted {
        outer,
        settle_after: Some(chord.group_id.clone()),
    })
}
