//! Why a benchmark stopped: one line for stderr.

use celeriac_common::cli::one_line;

/// Why a benchmark stopped, as the one line it prints.
#[derive(Debug)]
pub(crate) struct BenchError(String);

impl BenchError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        BenchError(msg.into())
    }
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Any error, with its causes on one line (`?` where no context is due).
impl<E: std::error::Error + 'static> From<E> for BenchError {
    fn from(e: E) -> Self {
        BenchError(one_line(&e))
    }
}

/// Maps an error to `what: why` (`.map_err(err("cannot connect"))`).
pub(crate) fn err<E: std::error::Error + 'static>(what: &str) -> impl Fn(E) -> BenchError + '_ {
    move |e| BenchError::new(format!("{what}: {}", one_line(&e)))
}
