//! A RabbitMQ virtual host of a test's own, made with `rabbitmqctl` on the
//! test broker's node and deleted with everything in it when dropped.

use std::process::Command;

/// A virtual host made for one test, `guest` allowed everything in it.
/// Dropping it deletes the vhost with its queues and exchanges.
#[derive(Debug)]
pub struct TestVhost {
    /// Its name.
    pub name: String,
    /// The test broker's URL with this vhost.
    pub url: String,
}

/// `rabbitmqctl` could not make the vhost.
#[derive(Debug, thiserror::Error)]
#[error("rabbitmqctl {args:?} failed: {output}")]
pub struct VhostError {
    args: Vec<String>,
    output: String,
}

/// Runs `rabbitmqctl` with `args` on the test broker's node and returns what
/// it printed.
pub fn rabbitmqctl(args: &[&str]) -> Result<String, VhostError> {
    let failed = |output: String| VhostError {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        output,
    };
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

impl TestVhost {
    /// Makes `<prefix>-<random>` on the node `rabbitmqctl` reaches by
    /// default (the shared node of the test broker URL).
    pub fn create(prefix: &str) -> Result<TestVhost, VhostError> {
        let name = super::unique(prefix);
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = TestVhost {
            url: with_vhost(&super::broker_url(), &name),
            name,
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

/// `url` with its vhost (path) replaced by `vhost`.
pub fn with_vhost(url: &str, vhost: &str) -> String {
    let base = match url.find("://") {
        Some(scheme) => match url[scheme + 3..].find('/') {
            Some(slash) => &url[..scheme + 3 + slash],
            None => url,
        },
        None => url,
    };
    format!("{base}/{vhost}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_vhost_replaces_the_path() {
        let u = "amqp://guest:guest@127.0.0.1:5672/%2f";
        assert_eq!(
            super::with_vhost(u, "t-1"),
            "amqp://guest:guest@127.0.0.1:5672/t-1"
        );
        assert_eq!(super::with_vhost("amqp://h:1", "v"), "amqp://h:1/v");
    }
}
