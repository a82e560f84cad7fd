//! The dashboard's integration tests, one module per subject, built as one test binary: one
//! link and one copy of the shared code instead of one per file (`cargo
//! nextest run -p celeriac-dashboard -E 'test(/^api::/)'` runs a module's tests).

mod support;

mod api;
mod backends;
mod browser;
