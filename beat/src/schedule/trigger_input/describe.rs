//! One line describing a trigger, for listings.

use serde_json::Value;

use crate::trigger::TriggerSpec;

/// A one-line description of a trigger for listings, e.g.
/// `cron "0 3 * * *" Europe/Berlin` or `every 10s`.
pub fn describe(spec: &TriggerSpec) -> String {
    let json = serde_json::to_value(spec).unwrap_or(Value::Null);
    let Value::Object(mut map) = json else {
        return String::new();
    };
    let kind = map
        .remove("type")
        .and_then(|t| t.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut text = match (kind.as_str(), spec) {
        ("cron", TriggerSpec::Cron { expr, .. }) => {
            map.remove("expr");
            format!("cron \"{expr}\"")
        }
        ("date", TriggerSpec::Date { run_at }) => return format!("at {}", run_at.to_rfc3339()),
        ("interval", _) => {
            let every = map
                .remove("every")
                .and_then(|e| e.as_str().map(str::to_owned));
            let units: Vec<String> = ["weeks", "days", "hours", "minutes", "seconds"]
                .iter()
                .filter_map(|u| map.remove(*u).map(|v| format!("{v}{}", &u[..1])))
                .collect();
            format!("every {}", every.unwrap_or_else(|| units.join("")))
        }
        _ => {
            let tz = map.remove("timezone");
            let start = map.remove("start_date");
            let end = map.remove("end_date");
            let dst = map.remove("dst");
            let calendars = map.remove("calendars");
            let fields = Value::Object(map.clone()).to_string();
            map.clear();
            for (k, v) in [
                ("timezone", tz),
                ("start_date", start),
                ("end_date", end),
                ("dst", dst),
                ("calendars", calendars),
            ] {
                if let Some(v) = v {
                    map.insert(k.to_owned(), v);
                }
            }
            format!("fields {fields}")
        }
    };
    let order = [
        "timezone",
        "start_date",
        "end_date",
        "jitter_seconds",
        "dst",
        "calendars",
    ];
    let rank = |k: &str| order.iter().position(|o| *o == k).unwrap_or(order.len());
    let mut pairs: Vec<(String, Value)> = map.into_iter().collect();
    pairs.sort_by_key(|(k, _)| rank(k));
    for (key, value) in pairs {
        let value = match &value {
            Value::Array(names) => names
                .iter()
                .map(|n| n.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","),
            Value::String(s) => s.clone(),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.fract() == 0.0)
                .map_or_else(|| n.to_string(), |f| format!("{f:.0}")),
            other => other.to_string(),
        };
        match key.as_str() {
            "timezone" => text.push_str(&format!(" {value}")),
            "start_date" => text.push_str(&format!(" from {value}")),
            "end_date" => text.push_str(&format!(" until {value}")),
            "jitter_seconds" => text.push_str(&format!(" jitter {value}s")),
            "dst" => text.push_str(&format!(" dst={value}")),
            "calendars" => text.push_str(&format!(" except {value}")),
            _ => text.push_str(&format!(" {key}={value}")),
        }
    }
    text
}
