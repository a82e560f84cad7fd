//! Task definitions shared by the runnable examples: one definition, used by
//! the producer side (to call) and the worker side (to run).

use celeriac_common::TaskDef;
use serde::{Deserialize, Serialize};

/// `tasks.add(x, y) -> x + y`. Python can call it as `add.delay(2, 3)`.
pub struct Add;
impl TaskDef for Add {
    const NAME: &'static str = "tasks.add";
    type Args = (i64, i64);
    type Output = i64;
}

/// Arguments of [`WordCount`], sent as keyword arguments.
#[derive(Debug, Serialize, Deserialize)]
pub struct WordCountArgs {
    /// The text to count words in.
    pub text: String,
}

/// `tasks.word_count(text=...) -> number of words`, a blocking (CPU) task.
pub struct WordCount;
impl TaskDef for WordCount {
    const NAME: &'static str = "tasks.word_count";
    type Args = WordCountArgs;
    type Output = usize;
}
