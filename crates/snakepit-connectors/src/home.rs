//! The connectors' home runtime (the crate docs, "Runtime").

use std::future::Future;

use snakepit::HostFailure;
use tokio::runtime::Handle;

use crate::payload::connector_error;
use crate::Connectors;

impl Connectors {
    /// Runs `fut` on the connectors' home runtime (see the crate docs), inline when
    /// already there.
    pub(crate) async fn on_home<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, HostFailure> {
        let here = Handle::current();
        let home = self.inner.home.get_or_init(|| here.clone());
        if home.id() == here.id() {
            return Ok(fut.await);
        }
        struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
        impl<T> Drop for AbortOnDrop<T> {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut task = AbortOnDrop(home.spawn(fut));
        (&mut task.0)
            .await
            .map_err(|e| connector_error(format!("the connector task failed: {e}")))
    }
}
