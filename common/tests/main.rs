//! The shared library's integration tests, one module per subject, built as one test binary: one
//! link and one copy of the shared code instead of one per file (`cargo
//! nextest run -p celeriac-common -E 'test(/^celery_fixtures::/)'` runs a module's tests).

mod celery_fixtures;
mod chords;
mod confirm_order;
mod expiry;
mod store;
