//! celeriac-beat: the scheduler. Triggers (crontab strings, APScheduler-style
//! fields, intervals, one-shot dates) evaluated in IANA time zones.
pub mod trigger;
