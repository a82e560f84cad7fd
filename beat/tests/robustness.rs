//! Garbage input yields errors, never panics; extreme instants are handled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use celeriac_beat::trigger::{Schedule, TriggerSpec, parse_duration};
use chrono::{DateTime, Utc};
use common::{cron, spec, try_cron, try_spec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn random_text(rng: &mut StdRng, alphabet: &[char], max_len: usize) -> String {
    let len = rng.random_range(1..=max_len);
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect()
}

#[test]
fn random_expressions_never_panic() {
    let mut rng = StdRng::seed_from_u64(42);
    let alphabet: Vec<char> = "0123456789**//,-#LW?@abcdefjmnorstuwyFRIé"
        .chars()
        .collect();
    let mut accepted = 0;
    for _ in 0..5000 {
        let columns: [&[&str]; 7] = [
            &["*", "*/5", "0", "1-5", "10-50/20", "59", "5/10", "0,30"],
            &["*", "*/5", "0", "1-5", "10-50/20", "59", "5/10", "0,30"],
            &["*", "*/2", "0", "1-3", "23", "22-2"],
            &["*", "?", "1", "L", "L-2", "15", "31", "*/10", "1,L"],
            &["*", "2", "jan", "nov-feb", "*/3"],
            &["*", "?", "mon", "5L", "5#3", "0-6", "fri-mon", "7"],
            &["*", "2025", "2024-2030/2"],
        ];
        let count = [5, 6, 7][rng.random_range(0..3)];
        let skip = usize::from(count == 5);
        let expr: Vec<String> = columns[skip..skip + count.min(6)]
            .iter()
            .chain(columns[6..].iter().take(usize::from(count == 7)))
            .map(|choices| {
                if rng.random_range(0..8) == 0 {
                    random_text(&mut rng, &alphabet, 4)
                } else {
                    choices[rng.random_range(0..choices.len())].to_string()
                }
            })
            .collect();
        let expr = expr.join(" ");
        if let Ok(t) = try_cron(&expr, "Europe/Berlin") {
            accepted += 1;
            let _ = t.next_after(DateTime::<Utc>::UNIX_EPOCH);
        }
        let field = random_text(&mut rng, &alphabet, 12);
        let _ = try_spec(json!({"type": "fields", "day": field.clone(), "hour": field}));
        let _ = parse_duration(&random_text(
            &mut rng,
            &"0123456789.hmswdy é".chars().collect::<Vec<_>>(),
            10,
        ));
    }
    println!("{accepted} of 5000 random crontab strings were valid");
    // Both paths must be exercised: valid expressions (so evaluation runs
    // too) and garbage that is rejected. With this seed about half are valid.
    assert!(
        (1000..=4000).contains(&accepted),
        "{accepted} of 5000 random crontab strings were valid; expected 20% to 80%"
    );
}

#[test]
fn extreme_instants() {
    let triggers = [
        cron("* * * * *", "UTC"),
        cron("0 0 29 2 *", "Europe/Berlin"),
        spec(json!({"type": "fields", "second": "*/7", "timezone": "Australia/Lord_Howe"})),
        spec(json!({"type": "interval", "every": "1w"})),
        spec(json!({"type": "date", "run_at": "2024-01-01T00:00:00Z"})),
    ];
    for t in &triggers {
        let _ = t.next_after(DateTime::<Utc>::MAX_UTC);
        let _ = t.next_after(DateTime::<Utc>::MIN_UTC);
    }
    let huge = TriggerSpec::from_json(&json!({"type": "interval", "weeks": u64::MAX})).unwrap();
    assert!(huge.compile().is_err());
    assert!(try_spec(json!({"type": "interval", "every": "1h", "jitter_seconds": 1e300})).is_err());
}
