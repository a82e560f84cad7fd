//! Celery's `pattern` and `matcher` of a broadcast: a request with no
//! `destination` but both of them is for the workers whose hostname the
//! pattern matches (kombu's `Node.handle_message`). kombu knows two
//! matchers: `glob` (Python's `fnmatch`: the whole name, `*`, `?`, `[seq]`,
//! `[!seq]`) and `pcre` (Python's `re.match`: a regular expression
//! anchored at the start only). An unknown matcher or a pattern that does
//! not compile matches no worker, as kombu then dispatches nothing.

use regex::Regex;

/// Whether `hostname` is one the request's `pattern` and `matcher` select.
pub(crate) fn matches(hostname: &str, pattern: &str, matcher: &str) -> bool {
    let expr = match matcher {
        "glob" => format!("^(?s:{})$", glob_to_regex(pattern)),
        "pcre" => format!("^(?:{pattern})"),
        _ => return false,
    };
    Regex::new(&expr).is_ok_and(|re| re.is_match(hostname))
}

/// The regular expression of an `fnmatch` pattern, as Python translates it:
/// a `[` without its `]` stands for itself, `[!` negates a set, and a `]`
/// right after `[` or `[!` is a member.
fn glob_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if chars.get(j) == Some(&'!') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str(r"\[");
                    continue;
                }
                let set = &chars[i..j];
                i = j + 1;
                let (negated, members) = match set.split_first() {
                    Some(('!', rest)) => (true, rest),
                    _ => (false, set),
                };
                if members.is_empty() {
                    // `[!]` is any one character; `[]` cannot happen (its
                    // `]` is a member).
                    out.push('.');
                    continue;
                }
                out.push('[');
                if negated {
                    out.push('^');
                }
                for (k, &m) in members.iter().enumerate() {
                    let range = m == '-' && k > 0 && k + 1 < members.len();
                    if !range && m.is_ascii_punctuation() {
                        out.push('\\');
                    }
                    out.push(m);
                }
                out.push(']');
            }
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_the_whole_hostname_as_fnmatch_does() {
        let host = "celeriac@web-1.example";
        for yes in [
            "celeriac@*",
            "*@web-1.example",
            "*",
            "celeriac@web-?.example",
            "celeriac@web-[0-9].example",
            "celeriac@web-[!2].example",
            "celeriac@web-1.example",
        ] {
            assert!(matches(host, yes, "glob"), "{yes}");
        }
        for no in [
            "celeriac@web",
            "eleriac@*",
            "celeriac@web-[2-9].example",
            "celeriac@web-[!1].example",
            // `.` is a character, not "any character".
            "celeriac@web-1xexample",
            "CELERIAC@*",
        ] {
            assert!(!matches(host, no, "glob"), "{no}");
        }
        // A `[` without its `]` is itself; a `]` first in a set is a member.
        assert!(matches("a[b", "a[b", "glob"));
        assert!(matches("a]", "a[]]", "glob"));
        assert!(matches("a-", "a[x-]", "glob"));
        assert!(matches("a&", "a[&~]", "glob"));
    }

    #[test]
    fn pcre_is_anchored_at_the_start_only() {
        let host = "celeriac@web-1";
        assert!(matches(host, "celeriac@", "pcre"));
        assert!(matches(host, r"celeriac@web-\d+$", "pcre"));
        assert!(matches(host, "(?i)CELERIAC", "pcre"));
        assert!(!matches(host, "web", "pcre"));
        assert!(!matches(host, "celeriac@web-2", "pcre"));
    }

    #[test]
    fn unknown_matchers_and_broken_patterns_match_nobody() {
        assert!(!matches("w1", "w1", "regex"));
        assert!(!matches("w1", "w1", ""));
        assert!(!matches("w1", "(w1", "pcre"));
        assert!(!matches("w1", "w[z-a]", "glob"));
    }
}
