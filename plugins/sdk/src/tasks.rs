//! Background tasks a plugin starts in `start` and ends in `stop`.

use std::sync::Mutex;

use tokio::task::JoinHandle;

#[derive(Debug, Default)]
pub struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Tasks {
    /// Spawns `fut` on the current runtime and keeps its handle.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// Aborts every task spawned so far.
    pub fn stop(&self) {
        for t in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}
