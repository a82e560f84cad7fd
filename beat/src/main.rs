//! `celeriac-beat`: the scheduler (in progress).
fn main() {}
