//! Handlers for the diagnostic tasks (see `celeriac_common::diagnostics`).

use crate::WorkerBuilder;
use crate::context::TaskFailure;
use celeriac_common::TaskDef;
use celeriac_common::diagnostics::{ECHO, Fail, Noop, Sleep};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;

impl WorkerBuilder {
    /// Registers `celeriac.noop`, `celeriac.echo`, `celeriac.sleep` and `celeriac.fail`.
    pub fn with_diagnostics(self) -> Self {
        self.register_raw(Noop::NAME, |_, _, _| async {
            Ok::<_, Infallible>(Value::Null)
        })
        .register_raw(ECHO, |_, args, kwargs| async move {
            Ok::<_, Infallible>(json!({ "args": args, "kwargs": kwargs }))
        })
        .register::<Sleep, _, _, _>(|_, (secs,)| async move {
            if !(secs.is_finite() && secs >= 0.0) {
                return Err(TaskFailure::new(
                    "ValueError",
                    format!("cannot sleep {secs} seconds"),
                ));
            }
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            Ok(secs)
        })
        .register::<Fail, _, _, _>(|_, (message,)| async move {
            Err::<Value, _>(TaskFailure::new("TaskFailed", message))
        })
    }
}
