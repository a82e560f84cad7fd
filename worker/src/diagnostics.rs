//! Handlers for the diagnostic tasks (see `celeriac_common::diagnostics`).

use crate::WorkerBuilder;
use crate::context::TaskFailure;
use celeriac_common::TaskDef;
use celeriac_common::diagnostics::{ECHO, Fail, Noop, Sleep};
use serde_json::{Number, Value, json};
use std::convert::Infallible;
use std::time::Duration;

/// `celeriac.sleep` as this worker runs it: the seconds are taken as the
/// number they were sent as, so the task returns them unchanged (`2` for
/// `2`, `0.5` for `0.5`); a caller typed with [`Sleep`] reads either as a
/// float.
struct SleepAsSent;
impl TaskDef for SleepAsSent {
    const NAME: &'static str = Sleep::NAME;
    type Args = (Number,);
    type Output = Number;
}

/// How long `celeriac.sleep` sleeps for `seconds`.
fn sleep_time(seconds: &Number) -> Result<Duration, TaskFailure> {
    seconds
        .as_f64()
        .filter(|s| *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| TaskFailure::new("ValueError", format!("cannot sleep {seconds} seconds")))
}

impl WorkerBuilder {
    /// Registers `celeriac.noop`, `celeriac.echo`, `celeriac.sleep` and `celeriac.fail`.
    pub fn with_diagnostics(self) -> Self {
        self.register_raw(Noop::NAME, |_, _, _| async {
            Ok::<_, Infallible>(Value::Null)
        })
        .register_raw(ECHO, |_, args, kwargs| async move {
            Ok::<_, Infallible>(json!({ "args": args, "kwargs": kwargs }))
        })
        .register::<SleepAsSent, _, _, _>(|_, (seconds,)| async move {
            tokio::time::sleep(sleep_time(&seconds)?).await;
            Ok::<_, TaskFailure>(seconds)
        })
        .register::<Fail, _, _, _>(|_, (message,)| async move {
            Err::<Value, _>(TaskFailure::new("TaskFailed", message))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use celeriac_common::task::join_args;

    fn args(v: Value) -> Result<(Number,), celeriac_common::ArgsError> {
        join_args(v.as_array().expect("a list"), &Default::default())
    }

    #[test]
    fn sleep_returns_its_seconds_as_sent() {
        // An integer stays an integer, a float a float.
        let (two,) = args(json!([2])).expect("args");
        assert_eq!(serde_json::to_value(&two).expect("json"), json!(2));
        assert_eq!(sleep_time(&two).expect("time"), Duration::from_secs(2));
        let (half,) = args(json!([0.5])).expect("args");
        assert_eq!(serde_json::to_value(&half).expect("json"), json!(0.5));
        assert_eq!(sleep_time(&half).expect("time"), Duration::from_millis(500));
        // What a typed `Sleep` caller reads back.
        assert_eq!(serde_json::from_value::<f64>(json!(2)).expect("f64"), 2.0);
    }

    #[test]
    fn sleep_refuses_what_is_not_a_duration() {
        for bad in [json!(-1), json!(1e300)] {
            let (n,) = args(json!([bad])).expect("args");
            let err = sleep_time(&n).expect_err("refused");
            assert_eq!(err.kind, "ValueError");
            assert!(err.message.contains("cannot sleep"), "{}", err.message);
        }
        assert!(args(json!(["2"])).is_err(), "a string is not a number");
    }
}
