//! The HTTP server: routes, and starting and stopping it.

use crate::error::DashboardError;
use crate::state::{AppState, Management};
use crate::{api, assets, live};
use axum::Router;
use axum::routing::{get, post};
use celeriac_common::{Config, ResultBackend};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long [`Dashboard::serve`] lets requests finish after its stop.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How the dashboard runs (the address it listens on is the caller's).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The token that actions need; `None`: read-only.
    pub token: Option<String>,
    /// Beat's TOML schedule file, so that its entries are listed too.
    pub schedule_file: Option<PathBuf>,
    /// The RabbitMQ management API (`http://user:pass@host:15672`);
    /// `None`: the broker's host on port 15672 with the broker's
    /// credentials; `Some("off")`: passive declares only.
    pub management_url: Option<String>,
}

/// A dashboard ready to serve.
pub struct Dashboard {
    state: Arc<AppState>,
}

impl Dashboard {
    /// Opens the result database (migrating it unless the configuration
    /// says not to).
    pub async fn open(config: Config, options: Options) -> Result<Dashboard, DashboardError> {
        if !config.results_enabled() {
            return Err(DashboardError::NoDatabase);
        }
        let backend = ResultBackend::connect(&config.result_backend).await?;
        if config.migrate_on_start {
            backend.migrate().await?;
        }
        let management = management(&config.broker_url, options.management_url.as_deref());
        let token = options.token.filter(|t| !t.is_empty());
        let state = AppState::new(config, backend, token, options.schedule_file, management);
        Ok(Dashboard {
            state: Arc::new(state),
        })
    }

    /// The routes (pages, assets, API), for embedding in another server.
    /// A page keeps its events stream (`/api/events`) open; call
    /// [`Dashboard::close`] when that server starts its graceful shutdown,
    /// or the shutdown waits for every open tab.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Ends every open events stream, and those opened from now on.
    pub fn close(&self) {
        self.state.live.close();
    }

    /// Serves on `listener` until `stop` completes; listens to the events
    /// stream meanwhile. Then open events streams end, and requests still
    /// running get 5 s to finish before their connections are
    /// dropped.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        let events = tokio::spawn(live::listen(self.state.clone()));
        let facts = tokio::spawn(crate::facts::poll(self.state.clone()));
        let mut app = self.router();
        if listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
            app = app.layer(axum::middleware::from_fn(loopback_hosts_only));
        }
        let state = self.state.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            stop.await;
            state.live.close();
        });
        let closed = self.state.live.closed();
        let served = tokio::select! {
            served = server.into_future() => served.map_err(DashboardError::Serve),
            () = async {
                closed.await;
                tokio::time::sleep(CLOSE_GRACE).await;
            } => {
                tracing::warn!(
                    "requests still open {} s after the stop: their connections are dropped",
                    CLOSE_GRACE.as_secs()
                );
                Ok(())
            }
        };
        events.abort();
        facts.abort();
        served
    }
}

fn router(state: Arc<AppState>) -> Router {
    let page = get(assets::page);
    Router::new()
        .route("/", page.clone())
        .route("/workers", page.clone())
        .route("/queues", page.clone())
        .route("/tasks", page.clone())
        .route("/tasks/{id}", page.clone())
        .route("/schedules", page)
        .route("/assets/{file}", get(assets::file))
        .route("/api/overview", get(api::overview::get))
        .route("/api/workers", get(api::workers::list))
        .route("/api/queues", get(api::queues::list))
        .route("/api/tasks", get(api::tasks::search))
        .route("/api/tasks/{id}", get(api::tasks::one))
        .route("/api/tasks/{id}/revoke", post(api::tasks::revoke))
        .route("/api/tasks/{id}/retry", post(api::tasks::retry))
        .route("/api/schedules", get(api::schedules::list))
        .route("/api/schedules/{name}/{action}", post(api::schedules::act))
        .route("/api/dlq/{id}/replay", post(api::queues::replay))
        .route("/api/events", get(live::sse))
        .with_state(state)
}

/// On a loopback address, a request must name a loopback host: a page on
/// another site that points its own name at 127.0.0.1 (DNS rebinding)
/// sends its own name as `Host`, and is refused.
async fn loopback_hosts_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    if host.is_none_or(is_loopback_host) {
        next.run(request).await
    } else {
        crate::error::ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "this dashboard listens on loopback and answers only to localhost, 127.0.0.1 or [::1]",
        )
        .into_response()
    }
}

/// Whether a `Host` header (with or without a port) names this machine's
/// loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The management API's address: given, or the broker's host on 15672
/// (15671 for `amqps`) with the broker's credentials and virtual host.
pub(crate) fn management(broker_url: &str, given: Option<&str>) -> Option<Management> {
    if given == Some("off") {
        return None;
    }
    let broker = url::Url::parse(broker_url).ok()?;
    // Percent-decoded as RFC 3986 (and lapin) read them: a `+` or `&` in a
    // password or virtual host is itself.
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let vhost = match broker.path().trim_start_matches('/') {
        "" => "/".to_owned(),
        v => decode(v),
    };
    let from = match given {
        Some(g) => url::Url::parse(g).ok()?,
        None => {
            let tls = broker.scheme() == "amqps";
            let host = broker.host_str()?;
            let port = if tls { 15671 } else { 15672 };
            let scheme = if tls { "https" } else { "http" };
            let mut u = url::Url::parse(&format!("{scheme}://{host}:{port}")).ok()?;
            u.set_username(broker.username()).ok()?;
            u.set_password(broker.password()).ok()?;
            u
        }
    };
    let user = match from.username() {
        "" => "guest".to_owned(),
        u => decode(u),
    };
    let password = from.password().map_or_else(|| "guest".to_owned(), decode);
    let base = format!(
        "{}://{}{}",
        from.scheme(),
        from.host_str()?,
        from.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    Some(Management {
        base,
        user,
        password,
        vhost,
    })
}

#[cfg(test)]
mod tests {
    use super::{is_loopback_host, management};

    #[test]
    fn only_loopback_host_names_pass() {
        for ok in [
            "localhost",
            "localhost:5555",
            "127.0.0.1:5555",
            "127.0.0.2",
            "[::1]:5555",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for refused in [
            "evil.example:5555",
            "evil.example",
            "10.0.0.1:5555",
            "[fe80::1]:80",
            "",
        ] {
            assert!(!is_loopback_host(refused), "{refused}");
        }
    }

    #[test]
    fn management_address_from_the_broker_url() {
        let m = management("amqp://u:p%40ss@rabbit:5672/%2f", None).expect("derived");
        assert_eq!(
            (
                m.base.as_str(),
                m.user.as_str(),
                m.password.as_str(),
                m.vhost.as_str()
            ),
            ("http://rabbit:15672", "u", "p@ss", "/")
        );
        let m = management("amqps://rabbit/prod", None).expect("derived");
        assert_eq!(
            (m.base.as_str(), m.vhost.as_str()),
            ("https://rabbit:15671", "prod")
        );
        assert_eq!((m.user.as_str(), m.password.as_str()), ("guest", "guest"));
        let m = management("amqp://rabbit/v", Some("http://a:b@mgmt:8080")).expect("given");
        assert_eq!(
            (m.base.as_str(), m.user.as_str(), m.vhost.as_str()),
            ("http://mgmt:8080", "a", "v")
        );
        assert!(management("amqp://rabbit/v", Some("off")).is_none());
        // `+` and `&` stand for themselves in a URL's user part and path
        // (not a form's space and separator).
        let m = management("amqp://u+1:ab+c%26d@rabbit/a+b", None).expect("derived");
        assert_eq!(
            (m.user.as_str(), m.password.as_str(), m.vhost.as_str()),
            ("u+1", "ab+c&d", "a+b")
        );
    }
}
