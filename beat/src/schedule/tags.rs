//! Tags: labels on entries (`tags = ["nightly", "billing"]`, `schedule add
//! --tag nightly`) that `schedule list`, `pause`, `resume` and `remove`
//! select entries by, as the Python `schedule` library's tags do.

use crate::schedule::entry::EntryError;
use crate::trigger::suggest;

/// Longest tag.
pub const TAG_MAX_LEN: usize = 64;

/// Checks one tag: 1 to 64 bytes, no whitespace, commas or control characters.
pub fn validate_tag(tag: &str) -> Result<(), EntryError> {
    let bad = |why: &str| EntryError::invalid("tags", format!("tag {tag:?} {why}"));
    if tag.is_empty() {
        return Err(EntryError::invalid("tags", "a tag must not be empty"));
    }
    if tag.len() > TAG_MAX_LEN {
        return Err(bad(&format!("is longer than {TAG_MAX_LEN} bytes")));
    }
    if tag
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(bad("contains whitespace, a comma or a control character"));
    }
    Ok(())
}

/// Checks `tags` and returns them without repeats, in the order given.
pub fn normalize(tags: Vec<String>) -> Result<Vec<String>, EntryError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        validate_tag(&tag)?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

/// The message for a tag no entry carries: names the tag, suggests a close
/// one among `known`, and says where file entries come from.
pub fn no_entry_with(tag: &str, known: &[&str], file_known: bool) -> String {
    let mut msg = format!("no entry has tag \"{tag}\"");
    if let Some(s) = suggest(tag, known.iter().copied()) {
        msg.push_str(&format!(", did you mean \"{s}\"?"));
    } else if !file_known {
        msg.push_str(" (for schedule file entries, pass --schedule FILE)");
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked_and_deduplicated() {
        let tags = normalize(vec!["nightly".into(), "billing".into(), "nightly".into()]);
        assert_eq!(tags.ok(), Some(vec!["nightly".into(), "billing".into()]));
        for bad in ["", "two words", "a,b", "tab\there"] {
            let err = normalize(vec![bad.into()]).expect_err(bad).to_string();
            assert!(err.starts_with("tags: "), "{err}");
        }
        assert!(validate_tag(&"x".repeat(65)).is_err());
        assert!(validate_tag("team:billing/eu-1").is_ok());
    }

    #[test]
    fn an_unknown_tag_is_named_with_a_suggestion() {
        assert_eq!(
            no_entry_with("nigthly", &["nightly", "billing"], true),
            "no entry has tag \"nigthly\", did you mean \"nightly\"?"
        );
        assert_eq!(
            no_entry_with("weekly", &["nightly"], false),
            "no entry has tag \"weekly\" (for schedule file entries, pass --schedule FILE)"
        );
    }
}
