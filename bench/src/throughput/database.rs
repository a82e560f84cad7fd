//! Throw-away result databases: an SQLite file in the temp directory, or a
//! fresh database on a PostgreSQL / MySQL server, dropped afterwards.

use crate::error::BenchError;
use celeriac_common::cli::one_line;
use celeriac_common::mask_url;
use sea_orm::{ConnectionTrait, Database};
use std::path::PathBuf;

/// Which database holds the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Results {
    /// No result backend (`result_backend = "none"`).
    None,
    /// A temporary SQLite file.
    Sqlite,
    /// A throw-away database on the PostgreSQL server.
    Postgres,
    /// A throw-away database on the MySQL / MariaDB server.
    Mysql,
}

impl Results {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Results::None => "none",
            Results::Sqlite => "sqlite",
            Results::Postgres => "postgres",
            Results::Mysql => "mysql",
        }
    }
}

/// A database made for one bench run.
pub(crate) struct ThrowAway {
    pub(crate) url: String,
    kind: Results,
    name: String,
    admin_url: String,
    files: Vec<PathBuf>,
}

impl ThrowAway {
    /// Creates an empty database of `kind` (not `None`), named after `run_id`;
    /// `admin_url` is a server URL for PostgreSQL / MySQL.
    pub(crate) async fn create(
        kind: Results,
        admin_url: &str,
        run_id: &str,
    ) -> Result<ThrowAway, BenchError> {
        let name = format!("celeriac_bench_{run_id}");
        if kind == Results::Sqlite || kind == Results::None {
            let path = std::env::temp_dir().join(format!("{name}.db"));
            let files = ["", "-wal", "-shm", "-journal"]
                .iter()
                .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
                .collect();
            return Ok(ThrowAway {
                url: format!("sqlite://{}?mode=rwc", path.display()),
                kind: Results::Sqlite,
                name,
                admin_url: String::new(),
                files,
            });
        }
        let admin = Database::connect(admin_url).await.map_err(|e| {
            BenchError::new(format!(
                "cannot connect to {} to create the bench database ({}); check --{}-url",
                mask_url(admin_url),
                one_line(&e),
                kind.name()
            ))
        })?;
        let created = admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await;
        let _ = admin.close().await;
        created.map_err(|e| {
            BenchError::new(format!(
                "cannot create database {name} on {}: {}",
                mask_url(admin_url),
                one_line(&e)
            ))
        })?;
        Ok(ThrowAway {
            url: with_database(admin_url, &name),
            kind,
            name,
            admin_url: admin_url.to_owned(),
            files: Vec::new(),
        })
    }

    /// Drops the database or deletes the file (best effort).
    pub(crate) async fn drop_database(self) {
        if self.kind == Results::Sqlite {
            for f in &self.files {
                let _ = std::fs::remove_file(f);
            }
            return;
        }
        let force = if self.kind == Results::Postgres {
            " WITH (FORCE)"
        } else {
            ""
        };
        match Database::connect(&self.admin_url).await {
            Ok(admin) => {
                if let Err(e) = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {}{force}", self.name))
                    .await
                {
                    eprintln!(
                        "celeriac-bench: could not drop database {}: {}",
                        self.name,
                        one_line(&e)
                    );
                }
                let _ = admin.close().await;
            }
            Err(e) => eprintln!(
                "celeriac-bench: could not drop database {}: {}",
                self.name,
                one_line(&e)
            ),
        }
    }
}

/// `url` with its database (path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("mysql://root:pw@db:3306/test?ssl-mode=disabled", "b"),
            "mysql://root:pw@db:3306/b?ssl-mode=disabled"
        );
        assert_eq!(
            with_database("postgres://u@host", "b"),
            "postgres://u@host/b"
        );
    }
}
