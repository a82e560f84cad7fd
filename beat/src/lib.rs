//! celeriac-beat: the scheduler (in progress).
