use super::encode::REPR_MAX_CHARS;
use super::headers::KNOWN_HEADERS;
use super::*;
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use serde_json::json;

fn round_trip(msg: &TaskMessage) -> TaskMessage {
    let body = msg.encode_body().expect("encode");
    TaskMessage::decode(
        &msg.properties().expect("properties"),
        &body,
        MAX_BODY_BYTES_DEFAULT,
    )
    .expect("decode")
}

fn props_with(headers: serde_json::Value) -> BasicProperties {
    let Ok(AMQPValue::FieldTable(t)) = amqp_value::from_json(&headers) else {
        panic!("headers must be an object");
    };
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE_JSON.into())
        .with_headers(t)
}

#[test]
fn full_message_round_trips() {
    let mut kw = Map::new();
    kw.insert("k".into(), json!({"nested": [1, 2]}));
    let mut m = TaskMessage::new("tasks.add", vec![json!(1), json!("ü")], kw).with_id("abc");
    m.eta = parse_time("2026-01-01T10:00:00.5+02:00");
    m.expires = parse_time("2026-01-02T00:00:00Z");
    m.retries = 3;
    m.timelimit = (Some(10.0), Some(5.5));
    m.group = Some("g".into());
    m.group_index = Some(2);
    m.priority = Some(7);
    m.extra_headers.insert("x-tenant".into(), json!("acme"));
    m.embed.callbacks = Some(vec![Signature::new("tasks.mul", vec![json!(3)])]);
    m.embed.chain = Some(vec![
        Signature::new("a", vec![]),
        Signature::new("b", vec![]),
    ]);
    let back = round_trip(&m);
    assert_eq!(back.root_id.as_deref(), Some("abc"));
    assert_eq!(back.argsrepr.as_deref(), Some("[1,\"ü\"]"));
    let mut expected = m.clone();
    expected.argsrepr = back.argsrepr.clone();
    expected.kwargsrepr = back.kwargsrepr.clone();
    assert_eq!(back, expected);
}

#[test]
fn properties_are_celerys() {
    let m = TaskMessage::new("t", vec![], Map::new());
    let p = m.properties().expect("properties");
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        p.content_encoding().as_ref().map(|s| s.as_str()),
        Some("utf-8")
    );
    assert_eq!(
        p.correlation_id().as_ref().map(|s| s.as_str()),
        Some(m.id.as_str())
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    // Headers at the value Celery assumes when absent are left out.
    let h = p.headers().clone().expect("headers");
    let keys: Vec<&str> = h.inner().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        ["argsrepr", "id", "kwargsrepr", "lang", "root_id", "task"]
    );
}

#[test]
fn every_set_field_is_sent_and_read_back() {
    let mut m = TaskMessage::new("t", vec![json!(1)], Map::new());
    m.origin = Some("gen1@host".into());
    m.priority = Some(3);
    let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123456+01:00").expect("time");
    m.shadow = Some("alias".into());
    m.eta = Some(at);
    m.expires = Some(at);
    m.group = Some("g".into());
    m.group_index = Some(0);
    m.retries = 2;
    m.timelimit = (Some(10.0), None);
    m.parent_id = Some("p".into());
    m.ignore_result = true;
    m.replaced_task_nesting = 1;
    m.stamped_headers = json!(["s"]);
    m.stamps = json!({"s": "v"});
    let h = m
        .properties()
        .expect("properties")
        .headers()
        .clone()
        .expect("headers");
    for key in KNOWN_HEADERS {
        assert!(h.contains_key(key), "header {key} missing");
    }
    assert_eq!(
        h.inner().get("timelimit"),
        Some(&AMQPValue::FieldArray(
            vec![AMQPValue::Double(10.0), AMQPValue::Void].into()
        ))
    );
    let back = round_trip(&m);
    let mut expected = m.clone();
    expected.argsrepr = back.argsrepr.clone();
    expected.kwargsrepr = back.kwargsrepr.clone();
    assert_eq!(back, expected);
}

#[test]
fn malformed_bodies_are_clear_errors() {
    let p = props_with(json!({"task": "t", "id": "1"}));
    let cases: &[(&[u8], &str)] = &[
        (b"{not json", "not valid JSON"),
        (
            b"{\"a\": 1}",
            "expected [args, kwargs, embed], found an object",
        ),
        (b"[[], {}]", "expected 3 elements"),
        (b"[1, {}, {}]", "args must be a list, found a number"),
        (b"[[], [], {}]", "kwargs must be an object, found a list"),
        (b"[[], {}, 5]", "embed must be an object"),
        (b"[[], {}, {\"callbacks\": [\"tasks.x\"]}]", "embed:"),
    ];
    for (body, want) in cases {
        let err = TaskMessage::decode(&p, body, 1024)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn task_ids_up_to_191_characters_and_255_bytes_are_accepted() {
    let body = b"[[], {}, {}]";
    let decode =
        |id: String| TaskMessage::decode(&props_with(json!({"task": "t", "id": id})), body, 1024);
    let m = decode("a".repeat(191)).expect("191 characters");
    assert_eq!(m.id.chars().count(), 191);
    decode("é".repeat(127)).expect("127 characters, 254 bytes");
    // No reply or retry could carry it as `correlation_id`.
    let err = decode("é".repeat(128)).expect_err("256 bytes").to_string();
    assert!(err.contains("longer than 255 bytes"), "{err}");
}

#[test]
fn missing_and_bad_headers() {
    let body = b"[[], {}, {}]";
    let err =
        TaskMessage::decode(&props_with(json!({"id": "1"})), body, 1024).expect_err("no task");
    assert!(matches!(err, ProtocolError::MissingHeader("task")));
    let err =
        TaskMessage::decode(&props_with(json!({"task": "t"})), body, 1024).expect_err("no id");
    assert!(matches!(err, ProtocolError::MissingHeader("id")));
    for (h, name) in [
        (json!({"task": "t", "id": "1", "eta": "tomorrow"}), "eta"),
        (json!({"task": "t", "id": "1", "retries": "x"}), "retries"),
        (json!({"task": "t", "id": "1", "retries": -1}), "retries"),
        (
            json!({"task": "t", "id": "1", "timelimit": "x"}),
            "timelimit",
        ),
        (json!({"task": 5, "id": "1"}), "task"),
        // Ids no result row can be keyed by.
        (json!({"task": "t", "id": ""}), "id"),
        (json!({"task": "t", "id": "x".repeat(192)}), "id"),
        (json!({"task": "t", "id": "a\u{0}b"}), "id"),
    ] {
        match TaskMessage::decode(&props_with(h), body, 1024) {
            Err(ProtocolError::BadHeader { name: n, .. }) => assert_eq!(n, name),
            other => panic!("expected bad header {name}, got {other:?}"),
        }
    }
}

#[test]
fn content_type_size_and_null_parts() {
    let body = b"[null, null, null]";
    let h = json!({"task": "t", "id": "1"});
    let pickle = props_with(h.clone()).with_content_type("application/x-python-serialize".into());
    assert!(matches!(
        TaskMessage::decode(&pickle, body, 1024),
        Err(ProtocolError::UnsupportedContentType(_))
    ));
    let latin = props_with(h.clone()).with_content_encoding("latin-1".into());
    assert!(matches!(
        TaskMessage::decode(&latin, body, 1024),
        Err(ProtocolError::UnsupportedEncoding(_))
    ));
    let big = vec![b' '; 2048];
    assert!(matches!(
        TaskMessage::decode(&props_with(h.clone()), &big, 1024),
        Err(ProtocolError::TooLarge {
            size: 2048,
            limit: 1024
        })
    ));
    let m = TaskMessage::decode(&props_with(h), body, 1024).expect("nulls are empty");
    assert!(m.args.is_empty() && m.kwargs.is_empty());
    assert_eq!(m.lang, "py");
    assert_eq!(m.root_id, None);
}

#[test]
fn naive_times_are_utc_and_expiry_is_checked() {
    let t = parse_time("2026-03-04T05:06:07.123456").expect("naive");
    assert_eq!(t.offset().local_minus_utc(), 0);
    let mut m = TaskMessage::new("t", vec![], Map::new());
    m.expires = Some(t);
    assert!(m.is_expired(t.with_timezone(&Utc)));
    assert!(!m.is_expired(t.with_timezone(&Utc) - chrono::Duration::seconds(1)));
}

#[test]
fn long_reprs_are_truncated_on_a_char_boundary() {
    let m = TaskMessage::new("t", vec![json!("é".repeat(2000))], Map::new());
    let h = m
        .properties()
        .expect("properties")
        .headers()
        .clone()
        .expect("headers");
    let Some(AMQPValue::LongString(s)) = h.inner().get("argsrepr") else {
        panic!("argsrepr missing");
    };
    let text = std::str::from_utf8(s.as_bytes()).expect("utf-8");
    assert!(text.len() <= REPR_MAX_CHARS + 3 && text.ends_with("..."));
}

/// A message that came in with names longer than AMQP carries (a task id
/// of 191 four-byte characters, a `reply_to` or header key from a JSON
/// body) is refused when it is to be sent on, not a panic in the client.
#[test]
fn names_amqp_cannot_carry_are_an_error_when_sent() {
    let fits = TaskMessage::new("t", vec![], Default::default());
    assert!(fits.properties().is_ok());
    let mut m = fits.clone();
    m.id = "€".repeat(86); // 258 bytes, 86 characters
    // Refused as it comes in, too: no reply or retry could carry it.
    let err = check_task_id(&m.id).expect_err("over 255 bytes");
    assert!(err.to_string().contains("255 bytes"), "{err}");
    let err = m.properties().expect_err("id").to_string();
    assert!(
        err.contains("\"id\"") && err.contains("258 bytes; AMQP carries at most 255"),
        "{err}"
    );
    let mut m = fits.clone();
    m.reply_to = Some("r".repeat(256));
    assert!(m.properties().is_err());
    let mut m = fits.clone();
    m.extra_headers.insert("h".repeat(256), json!(1));
    assert!(m.properties().is_err());
    let mut m = fits.clone();
    m.extra_headers
        .insert("h".into(), json!({ "k".repeat(256): 1 }));
    assert!(m.properties().is_err());
    let mut m = fits;
    m.stamps = json!({ "s".repeat(256): ["x"] });
    assert!(m.properties().is_err());
}
