//! One shutdown signal shared by every task of the stack (servers, pollers).

use tokio::sync::watch;

/// Triggers shutdown; dropping it also triggers it, so a failed start-up cannot leave tasks
/// running.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Waits for shutdown. Cheap to clone: give one to each task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and its first receiver.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every [`Shutdown`] to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.fire();
    }
}

impl Shutdown {
    /// True once shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is triggered (immediately if it already was).
    pub async fn wait(mut self) {
        // An error means the trigger is gone, which also means stop.
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// Sleeps for `d` unless shutdown comes first; returns false when shutting down.
    pub async fn sleep(&self, d: std::time::Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.is_triggered(),
            _ = self.clone().wait() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn fire_and_drop_both_stop_waiters() {
        let (t, s) = channel();
        assert!(!s.is_triggered());
        let waiter = tokio::spawn(s.clone().wait());
        t.fire();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!s.sleep(Duration::from_secs(10)).await);

        let (t, s) = channel();
        drop(t);
        tokio::time::timeout(Duration::from_secs(1), s.wait())
            .await
            .unwrap();
    }
}
