//! Decoding messages captured from a real Python Celery 5 client (see
//! fixtures/celery/README.md), from their exact header bytes, and checking
//! that celeriac's own messages carry Celery's headers (less those at the
//! value Celery assumes when they are absent).

use amq_protocol_types::parsing::parse_field_table;
use base64::Engine;
use celeriac_common::broker::queue_arguments;
use celeriac_common::config::{Config, QueueType};
use celeriac_common::protocol::{MAX_BODY_BYTES_DEFAULT, TaskMessage};
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/celery");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if path.extension().is_some_and(|e| e == "json") && name != "queue_declare" {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            out.push((name, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 30,
        "expected the captured fixtures, found {}",
        out.len()
    );
    out
}

fn properties(f: &Value) -> BasicProperties {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(f["headers_raw_base64"].as_str().expect("raw headers"))
        .expect("base64");
    let (rest, headers) = parse_field_table(&raw[..]).expect("Celery's header bytes parse");
    assert!(rest.is_empty());
    let p = &f["properties"];
    let s = |k: &str| p[k].as_str().map(|v| v.into());
    let mut props = BasicProperties::default().with_headers(headers);
    if let Some(v) = s("content_type") {
        props = props.with_content_type(v);
    }
    if let Some(v) = s("content_encoding") {
        props = props.with_content_encoding(v);
    }
    if let Some(v) = s("correlation_id") {
        props = props.with_correlation_id(v);
    }
    if let Some(v) = s("reply_to") {
        props = props.with_reply_to(v);
    }
    if let Some(v) = p["priority"].as_u64() {
        props = props.with_priority(u8::try_from(v).expect("priority"));
    }
    props
}

#[test]
fn every_celery_message_decodes_with_its_arguments() {
    for (name, f) in fixtures() {
        let props = properties(&f);
        let body = f["body"].as_str().expect("body").as_bytes();
        let msg = TaskMessage::decode(&props, body, MAX_BODY_BYTES_DEFAULT)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let h = &f["headers"];
        assert_eq!(msg.task, h["task"].as_str().expect("task"), "{name}");
        assert_eq!(msg.id, h["id"].as_str().expect("id"), "{name}");
        assert_eq!(msg.lang, "py", "{name}");
        assert_eq!(
            Value::Array(msg.args.clone()),
            f["call"]["args"],
            "{name}: args"
        );
        assert_eq!(
            Value::Object(msg.kwargs.clone()),
            f["call"]["kwargs"],
            "{name}: kwargs"
        );
        assert_eq!(
            u64::from(msg.retries),
            h["retries"].as_u64().unwrap_or(0),
            "{name}: retries"
        );
        assert_eq!(
            msg.root_id.as_deref(),
            h["root_id"].as_str(),
            "{name}: root_id"
        );
        assert_eq!(msg.group.as_deref(), h["group"].as_str(), "{name}: group");
        assert_eq!(msg.eta.is_some(), !h["eta"].is_null(), "{name}: eta");
        assert_eq!(
            msg.expires.is_some(),
            !h["expires"].is_null(),
            "{name}: expires"
        );
        let tl = &h["timelimit"];
        assert_eq!(msg.timelimit.0, tl[0].as_f64(), "{name}: hard limit");
        assert_eq!(msg.timelimit.1, tl[1].as_f64(), "{name}: soft limit");
        // Whatever celeriac decodes it re-encodes to the same message.
        let again = TaskMessage::decode(
            &msg.properties().expect("properties"),
            &msg.encode_body().expect("encode"),
            MAX_BODY_BYTES_DEFAULT,
        )
        .unwrap_or_else(|e| panic!("{name}: re-decode: {e}"));
        assert_eq!(again, msg, "{name}: round trip");
    }
}

#[test]
fn signatures_chains_and_custom_headers_survive() {
    let all = fixtures();
    let get = |case: &str| {
        let f = &all
            .iter()
            .find(|(n, _)| n == case)
            .unwrap_or_else(|| panic!("fixture {case}"))
            .1;
        TaskMessage::decode(
            &properties(f),
            f["body"].as_str().expect("body").as_bytes(),
            MAX_BODY_BYTES_DEFAULT,
        )
        .expect("decode")
    };
    let chain = get("chain3").embed.chain.expect("chain");
    assert_eq!(
        chain.iter().map(|s| s.task.as_str()).collect::<Vec<_>>(),
        ["tasks.mul", "tasks.add"]
    );
    assert!(chain[0].options.contains_key("task_id"));
    assert_eq!(get("link").embed.callbacks.expect("callbacks").len(), 1);
    assert_eq!(get("link_error").embed.errbacks.expect("errbacks").len(), 1);
    assert!(get("chord_header_0").embed.chord.is_some());
    let custom = get("custom_headers");
    assert!(!custom.extra_headers.is_empty(), "custom headers kept");
    let shadow = get("shadow_name");
    assert!(shadow.shadow.is_some() && shadow.display_name() != shadow.task);
}

/// celeriac sends Celery's headers, less those at the value Celery's worker
/// assumes when the key is absent (`null`, 0, false, `[null, null]`, `{}`);
/// it sends none Celery does not know.
#[test]
fn celeriac_sends_celerys_headers_except_defaults() {
    let (_, f) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "args_positional")
        .expect("fixture");
    let celery = f["headers"].as_object().expect("headers");
    // As `Client` sends it: with an origin.
    let mut msg = TaskMessage::new("tasks.add", vec![], Default::default());
    msg.origin = Some("gen1@host".into());
    let headers = msg
        .properties()
        .expect("properties")
        .headers()
        .clone()
        .expect("headers");
    let is_default = |v: &Value| {
        v.is_null()
            || v == &Value::from(0)
            || v == &Value::Bool(false)
            || v == &serde_json::json!([null, null])
            || v.as_object().is_some_and(|o| o.is_empty())
    };
    let mut left_out = Vec::new();
    for (key, value) in celery {
        if !headers.contains_key(key.as_str()) {
            assert!(
                is_default(value),
                "celeriac leaves out {key:?}, which Celery sends as {value}"
            );
            left_out.push(key.as_str());
        }
    }
    for key in headers.inner().keys() {
        assert!(
            celery.contains_key(key.as_str()),
            "celeriac sends {key:?}, which Celery does not"
        );
    }
    assert!(left_out.contains(&"timelimit") && left_out.contains(&"eta"));
}

#[test]
fn queues_are_declared_with_celerys_arguments() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/celery/queue_declare.json");
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    let v = &f["variants"];
    let args = |c: &Config| {
        serde_json::to_value(
            queue_arguments(c)
                .inner()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        match v {
                            AMQPValue::LongString(s) => {
                                Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned())
                            }
                            AMQPValue::LongInt(i) => Value::from(*i),
                            other => panic!("unexpected {other:?}"),
                        },
                    )
                })
                .collect::<serde_json::Map<_, _>>(),
        )
        .expect("json")
    };
    let classic = Config::default();
    assert_eq!(
        args(&classic),
        v["default"]["rabbitmqctl_list_queues"]["arguments"]
    );
    let quorum = Config {
        queue_type: QueueType::Quorum,
        ..Config::default()
    };
    let want = v
        .as_object()
        .expect("variants")
        .values()
        .find(|x| x["celery_conf"].to_string().contains("quorum"))
        .expect("quorum variant");
    assert_eq!(args(&quorum), want["rabbitmqctl_list_queues"]["arguments"]);
    let prio = Config {
        queue_max_priority: Some(10),
        ..Config::default()
    };
    let want = v
        .as_object()
        .expect("variants")
        .values()
        .find(|x| x["celery_conf"].to_string().contains("max_priority"))
        .expect("priority variant");
    assert_eq!(args(&prio), want["rabbitmqctl_list_queues"]["arguments"]);
}
