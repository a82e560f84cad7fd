//! The bench command's tests, one module per subject, built as one test binary: one
//! link and one copy of the shared code instead of one per file (`cargo
//! nextest run -p celeriac-bench -E 'test(/^bench_smoke::/)'` runs a module's tests).

mod bench_smoke;
mod cli;
