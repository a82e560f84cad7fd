//! How long the names AMQP carries may be. Queue, exchange and routing-key
//! names, consumer tags, `correlation_id` and `reply_to` are AMQP short
//! strings: at most 255 bytes, and lapin panics on a longer one. Every name
//! that comes from outside (configuration, options, a message, a remote
//! control request) is checked here before it reaches lapin.

use super::BrokerError;
use crate::delay;

/// The longest AMQP short string, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The longest task queue name, in bytes: a message on its way through the
/// delay queues has the queue's name in its routing key, after the delay's
/// digits.
pub const MAX_QUEUE_BYTES: usize = MAX_NAME_BYTES - delay::KEY_DIGITS_BYTES;

/// Refuses a name longer than `max` bytes (`what` says what it names:
/// "queue", "exchange", "routing key").
pub fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), BrokerError> {
    if name.len() <= max {
        return Ok(());
    }
    let mut cut = 40.min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    Err(BrokerError::NameTooLong {
        what,
        start: name[..cut].to_owned(),
        len: name.len(),
        max,
    })
}

/// Refuses a task queue name longer than [`MAX_QUEUE_BYTES`].
pub fn check_queue(name: &str) -> Result<(), BrokerError> {
    check_name("queue name", name, MAX_QUEUE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_counted_in_bytes() {
        assert!(check_queue(&"q".repeat(MAX_QUEUE_BYTES)).is_ok());
        let long = "€".repeat(80); // 240 bytes
        let err = check_queue(&long).expect_err("too long");
        let text = err.to_string();
        assert!(text.contains("240 bytes"), "{text}");
        assert!(text.contains("at most 239"), "{text}");
        assert!(!err.is_transient());
        assert!(check_name("exchange name", &long, MAX_NAME_BYTES).is_ok());
        assert!(check_name("exchange name", &"x".repeat(256), MAX_NAME_BYTES).is_err());
    }

    #[test]
    fn the_longest_queue_fits_a_delayed_routing_key() {
        let queue = "q".repeat(MAX_QUEUE_BYTES);
        let key = delay::routing_key(delay::MAX_DELAY, &queue).expect("key");
        assert_eq!(key.len(), MAX_NAME_BYTES);
    }
}
