//! Unit tests of chord accounting that need no database.

use super::*;

#[test]
fn only_the_claimant_acts_and_only_once() {
    let chord = ChordRecord {
        group_id: "g".into(),
        size: 2,
        done: 2,
        state: ChordState::Complete,
        callback: Value::Null,
        callback_id: "cb".into(),
        fired_by: Some("t2".into()),
        fired_at: None,
        callback_sent_at: None,
    };
    let progress = |claimed, chord: &ChordRecord| ChordProgress {
        chord: chord.clone(),
        claimed,
    };
    assert_eq!(progress(true, &chord).action(), ChordAction::SendCallback);
    assert_eq!(progress(false, &chord).action(), ChordAction::Nothing);
    let failed = ChordRecord {
        state: ChordState::Failed,
        ..chord.clone()
    };
    assert_eq!(progress(true, &failed).action(), ChordAction::FailCallback);
    let sent = ChordRecord {
        callback_sent_at: Some(Utc::now()),
        ..chord
    };
    assert_eq!(progress(true, &sent).action(), ChordAction::Nothing);
}
