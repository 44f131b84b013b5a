//! A Tokio runtime of its own for a part of the server (the query engine,
//! the Flight SQL listener), so its work runs on as many threads as the
//! machine has cores rather than on whichever runtime started it. It may be
//! dropped from async code (tests drop the application inside their own
//! runtime), where dropping a `Runtime` itself would panic.

/// A multi-threaded runtime, shut down in the background when dropped.
pub struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    /// `threads` workers named `name`, with timers and I/O.
    pub fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    #[allow(clippy::expect_used, reason = "only `drop` takes the runtime out")]
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .map(|rt| rt.handle())
            .expect("the runtime is alive until dropped")
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
