//! Leadership: any number of beats share one database and exactly one leads,
//! by holding a fenced lease ([`lease`]) that a background task keeps
//! taking or renewing ([`keeper`]).

pub mod keeper;
pub mod lease;
