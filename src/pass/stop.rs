//! A stop request for a pass in flight: the daemon sets it on SIGTERM so a
//! pass can end cleanly (nothing written after it, an ungated change rolled
//! back) instead of being dropped mid-way.

use tokio::sync::watch;

/// Never set unless made with [`Stop::new`]; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Stop(Option<watch::Receiver<bool>>);

impl Stop {
    /// A stop and the sender that sets it.
    pub fn new() -> (watch::Sender<bool>, Stop) {
        let (tx, rx) = watch::channel(false);
        (tx, Stop(Some(rx)))
    }

    /// Resolves once the stop is set; never for a default `Stop` or one
    /// whose sender is gone unset.
    pub async fn wait(&self) {
        if let Some(rx) = &self.0 {
            let mut rx = rx.clone();
            if rx.wait_for(|set| *set).await.is_ok() {
                return;
            }
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_until_set_and_default_never_fires() {
        let never = Stop::default();
        let quiet = tokio::time::timeout(Duration::from_millis(20), never.wait()).await;
        assert!(quiet.is_err());
        let (tx, stop) = Stop::new();
        let early = tokio::time::timeout(Duration::from_millis(20), stop.wait()).await;
        assert!(early.is_err());
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), stop.wait())
            .await
            .expect("set stop resolves");
    }
}
