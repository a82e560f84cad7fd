//! The explicit task registry: names mapped to handlers. Nothing in a message
//! can make a worker run code that was not registered here.

use crate::context::{TaskContext, TaskFailure};
use crate::options::TaskOptions;
use celeriac_common::TaskDef;
use celeriac_common::task::{ArgsError, join_args};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// A running task's future, type-erased.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = Result<Value, TaskFailure>> + Send>>;

/// A handler's entry point: decodes the arguments and prepares the call.
type Prepare<T> =
    Arc<dyn Fn(TaskContext, &[Value], &Map<String, Value>) -> Result<T, ArgsError> + Send + Sync>;

/// How a handler runs.
pub(crate) enum Handler {
    /// On the async runtime.
    Async(Prepare<TaskFuture>),
    /// On tokio's blocking thread pool.
    Blocking(Prepare<BlockingCall>),
}

/// A blocking call, ready to run on a blocking thread.
pub(crate) type BlockingCall = Box<dyn FnOnce() -> Result<Value, TaskFailure> + Send>;

/// Task names → handlers, their options and rate limiters. Handlers are
/// fixed once the worker is built; options and limiters change at run time
/// (remote control's `rate_limit` and `time_limit`).
#[derive(Default)]
pub(crate) struct Registry {
    handlers: HashMap<String, Handler>,
    options: RwLock<HashMap<String, Arc<TaskOptions>>>,
    limiters: RwLock<HashMap<String, Arc<Limiter>>>,
}

/// Spaces task starts at least `interval` apart (per worker, per task name).
pub(crate) struct Limiter {
    interval: Duration,
    next: std::sync::Mutex<Instant>,
}

impl Limiter {
    /// Waits for this start's slot.
    pub(crate) async fn wait(&self) {
        let wait = match self.next.lock() {
            Ok(mut next) => {
                let now = Instant::now();
                let start = (*next).max(now);
                *next = start + self.interval;
                start - now
            }
            Err(_) => Duration::ZERO,
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

static DEFAULT_OPTIONS: std::sync::LazyLock<Arc<TaskOptions>> =
    std::sync::LazyLock::new(|| Arc::new(TaskOptions::default()));

fn to_value<O: serde::Serialize>(out: O) -> Result<Value, TaskFailure> {
    serde_json::to_value(out).map_err(|e| TaskFailure::new("ResultNotSerializable", e.to_string()))
}

impl Registry {
    pub(crate) fn get(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name)
    }

    pub(crate) fn options(&self, name: &str) -> Arc<TaskOptions> {
        let options = self.options.read().unwrap_or_else(PoisonError::into_inner);
        options.get(name).unwrap_or(&DEFAULT_OPTIONS).clone()
    }

    pub(crate) fn limiter(&self, name: &str) -> Option<Arc<Limiter>> {
        let limiters = self.limiters.read().unwrap_or_else(PoisonError::into_inner);
        limiters.get(name).cloned()
    }

    /// Sets the options of `name` (its rate limiter follows them).
    pub(crate) fn set_options(&self, name: &str, options: TaskOptions) {
        {
            let mut limiters = self
                .limiters
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            match options.rate_limit {
                Some(rate) => {
                    let limiter = Limiter {
                        interval: rate.interval,
                        next: std::sync::Mutex::new(Instant::now()),
                    };
                    limiters.insert(name.to_owned(), Arc::new(limiter));
                }
                None => {
                    limiters.remove(name);
                }
            }
        }
        let mut all = self.options.write().unwrap_or_else(PoisonError::into_inner);
        all.insert(name.to_owned(), Arc::new(options));
    }

    /// Changes some options of `name` at run time, keeping the others.
    pub(crate) fn update_options(&self, name: &str, change: impl FnOnce(&mut TaskOptions)) {
        let mut options = (*self.options(name)).clone();
        change(&mut options);
        self.set_options(name, options);
    }

    /// Whether a handler is registered under `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.handlers.keys().cloned().collect();
        names.sort();
        names
    }

    pub(crate) fn insert_async<T, F, Fut, E>(&mut self, f: F)
    where
        T: TaskDef,
        F: Fn(TaskContext, T::Args) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T::Output, E>> + Send + 'static,
        E: Into<TaskFailure>,
    {
        let f = Arc::new(f);
        let handler = move |ctx: TaskContext, args: &[Value], kwargs: &Map<String, Value>| {
            let typed: T::Args = join_args(args, kwargs)?;
            let f = f.clone();
            let fut: TaskFuture =
                Box::pin(async move { f(ctx, typed).await.map_err(Into::into).and_then(to_value) });
            Ok(fut)
        };
        self.handlers
            .insert(T::NAME.to_owned(), Handler::Async(Arc::new(handler)));
    }

    pub(crate) fn insert_blocking<T, F, E>(&mut self, f: F)
    where
        T: TaskDef,
        F: Fn(TaskContext, T::Args) -> Result<T::Output, E> + Send + Sync + 'static,
        E: Into<TaskFailure>,
    {
        let f = Arc::new(f);
        let handler = move |ctx: TaskContext, args: &[Value], kwargs: &Map<String, Value>| {
            let typed: T::Args = join_args(args, kwargs)?;
            let f = f.clone();
            let call: BlockingCall =
                Box::new(move || f(ctx, typed).map_err(Into::into).and_then(to_value));
            Ok(call)
        };
        self.handlers
            .insert(T::NAME.to_owned(), Handler::Blocking(Arc::new(handler)));
    }

    pub(crate) fn insert_raw<F, Fut, E>(&mut self, name: &str, f: F)
    where
        F: Fn(TaskContext, Vec<Value>, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, E>> + Send + 'static,
        E: Into<TaskFailure>,
    {
        let f = Arc::new(f);
        let handler = move |ctx: TaskContext, args: &[Value], kwargs: &Map<String, Value>| {
            let fut = f(ctx, args.to_vec(), kwargs.clone());
            let fut: TaskFuture = Box::pin(async move { fut.await.map_err(Into::into) });
            Ok(fut)
        };
        self.handlers
            .insert(name.to_owned(), Handler::Async(Arc::new(handler)));
    }
}
