//! Several broker nodes: which one a process connects to, and moving to
//! the next when it is lost.
//!
//! `broker_url` may name several nodes (`amqp://a;amqp://b`, or a list in
//! the config file). A process keeps, per `broker_url`, the order it tries
//! them in (as given, or shuffled once: `broker_failover_strategy`) and the
//! node it last reached. Every connection the process opens starts with
//! that node, so a process's connections stay together; when a connection
//! to it has failed since (an I/O error, missed heartbeats, the node shut
//! down), the next one starts with the following node instead, and the
//! lost node is tried last. Each node gets `broker_connect_timeout_secs`;
//! a connection fails only when every node failed.

use super::{BrokerError, Limits, connect_with_limits};
use crate::config::{Config, FailoverStrategy, mask_url};
use crate::tls::BrokerTls;
use lapin::{Connection, ConnectionStatus};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Where a process stands with the nodes of one `broker_url`.
struct Rotation {
    /// Node indices in the order they are tried.
    order: Vec<usize>,
    /// Position in `order` of the node last reached.
    at: usize,
    /// The last connection made to it, to tell whether it failed since.
    last: Option<ConnectionStatus>,
}

impl Rotation {
    fn new(nodes: usize, strategy: FailoverStrategy) -> Rotation {
        let mut order: Vec<usize> = (0..nodes).collect();
        if strategy == FailoverStrategy::Shuffle {
            use rand::seq::SliceRandom;
            order.shuffle(&mut rand::rng());
        }
        Rotation {
            order,
            at: 0,
            last: None,
        }
    }

    /// The nodes to try, in order: from the one last reached, or from the
    /// next one if the last connection to it failed.
    fn plan(&self) -> Vec<usize> {
        let lost = self.last.as_ref().is_some_and(ConnectionStatus::errored);
        let start = self.at + usize::from(lost);
        let n = self.order.len();
        (0..n).map(|k| self.order[(start + k) % n]).collect()
    }

    /// `node` was reached with a connection whose state is `status`.
    fn reached(&mut self, node: usize, status: ConnectionStatus) {
        if let Some(at) = self.order.iter().position(|&i| i == node) {
            self.at = at;
        }
        self.last = Some(status);
    }
}

fn rotations() -> &'static Mutex<HashMap<String, Rotation>> {
    static ROTATIONS: OnceLock<Mutex<HashMap<String, Rotation>>> = OnceLock::new();
    ROTATIONS.get_or_init(Mutex::default)
}

/// The order in which to try the `nodes` nodes of `config.broker_url` now.
fn plan(config: &Config, nodes: usize) -> Vec<usize> {
    let mut all = rotations().lock().unwrap_or_else(PoisonError::into_inner);
    let rotation = all
        .entry(config.broker_url.clone())
        .or_insert_with(|| Rotation::new(nodes, config.broker_failover_strategy));
    if rotation.order.len() != nodes {
        *rotation = Rotation::new(nodes, config.broker_failover_strategy);
    }
    rotation.plan()
}

fn reached(config: &Config, node: usize, status: ConnectionStatus) -> bool {
    let mut all = rotations().lock().unwrap_or_else(PoisonError::into_inner);
    let Some(rotation) = all.get_mut(&config.broker_url) else {
        return false;
    };
    let moved = rotation.order.get(rotation.at) != Some(&node);
    rotation.reached(node, status);
    moved
}

/// Connects to one of the nodes of `config.broker_url` (see the module
/// docs for which); `name` shows in RabbitMQ's management UI. With one
/// node, its error is returned as is; with several, the last node's error
/// inside [`BrokerError::NoNode`].
pub async fn connect_config(config: &Config, name: &str) -> Result<Connection, BrokerError> {
    let urls = config.broker_urls();
    let tls = BrokerTls::from_config(config);
    let limits = Limits::from_config(config);
    match urls.as_slice() {
        [] => Err(no_url(config)),
        [url] => connect_with_limits(url, &tls, name, limits).await,
        _ => {
            let mut last = None;
            for node in plan(config, urls.len()) {
                let url = urls[node];
                let (n, of) = (node + 1, urls.len());
                match connect_with_limits(url, &tls, name, limits).await {
                    Ok(connection) => {
                        if reached(config, node, connection.status().clone()) {
                            let broker = mask_url(url);
                            tracing::warn!(%broker, "moved to broker node {n} of {of}");
                        }
                        return Ok(connection);
                    }
                    Err(e) if !e.is_transient() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "broker node {n} of {of} unreachable");
                        last = Some(e);
                    }
                }
            }
            Err(BrokerError::NoNode {
                nodes: urls.len(),
                last: Box::new(last.unwrap_or_else(|| no_url(config))),
            })
        }
    }
}

fn no_url(config: &Config) -> BrokerError {
    BrokerError::BadUrl {
        url: mask_url(&config.broker_url),
        reason: "no broker URL given".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_stays_then_moves_past_a_lost_node() {
        let mut r = Rotation::new(3, FailoverStrategy::RoundRobin);
        assert_eq!(r.plan(), [0, 1, 2]);
        r.reached(1, ConnectionStatus::default());
        // Still on node 1 while its last connection has not failed.
        assert_eq!(r.plan(), [1, 2, 0]);
        r.reached(2, ConnectionStatus::default());
        assert_eq!(r.plan(), [2, 0, 1]);
    }

    #[test]
    fn shuffle_is_a_permutation_kept_per_process() {
        let r = Rotation::new(5, FailoverStrategy::Shuffle);
        let mut seen = r.plan();
        assert_eq!(seen, r.plan(), "the order is drawn once");
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        let orders: std::collections::HashSet<Vec<usize>> = (0..50)
            .map(|_| Rotation::new(5, FailoverStrategy::Shuffle).plan())
            .collect();
        assert!(orders.len() > 1, "never shuffled");
    }
}
