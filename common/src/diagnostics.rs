//! Definitions of the diagnostic tasks every stock `celeriac-worker` runs,
//! useful to operators (is the pipeline alive?) and to tests.

use crate::TaskDef;
use serde_json::Value;

/// `celeriac.noop()`: does nothing, returns `null`. Accepts and ignores any arguments.
pub struct Noop;
impl TaskDef for Noop {
    const NAME: &'static str = "celeriac.noop";
    type Args = ();
    type Output = Value;
}

/// `celeriac.echo(*args, **kwargs)`: returns `{"args": [...], "kwargs": {...}}`.
/// Untyped: call it with `send_task`.
pub const ECHO: &str = "celeriac.echo";

/// `celeriac.sleep(seconds)`: sleeps without blocking the worker, returns the seconds.
pub struct Sleep;
impl TaskDef for Sleep {
    const NAME: &'static str = "celeriac.sleep";
    type Args = (f64,);
    type Output = f64;
}

/// `celeriac.fail(message)`: fails with kind `TaskFailed` and that message.
pub struct Fail;
impl TaskDef for Fail {
    const NAME: &'static str = "celeriac.fail";
    type Args = (String,);
    type Output = Value;
}
