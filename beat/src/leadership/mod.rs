//! Leadership: any number of beats share one database and exactly one leads,
//! by holding a fenced lease ([`lease`]).

pub mod lease;
