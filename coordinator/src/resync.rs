//! The background resync of a volume assembled after an unclean shutdown: every stripe's
//! redundancy rewritten from its data ([`Array::resync_stripe`]: parity and Q recomputed, RAID 1
//! primaries copied to their secondaries, each under the stripe's whole-stripe write lock) while
//! user I/O goes on.
//!
//! The worker runs a few stripes at a time ([`RESYNC_STRIPES_IN_FLIGHT`], so user accesses keep
//! most of the stripe locks and node bandwidth), reports its progress ([`ResyncStatus`]) and
//! stops between stripes when the coordinator shuts down; a resync cut short leaves the volume
//! dirty, so the next assembly starts it again. The core's [`Array::resync`] does the same pass
//! in one call, but cannot be stopped halfway.
//!
//! A stripe whose data is on a failed column cannot be resynced (its parity is what rebuilds
//! that data): in a forced assembly those stripes are skipped and counted; otherwise such a
//! stripe (a column failed during the resync) stops the resync with an error.

use std::sync::{Arc, Mutex};

use dagraid_core::access::{AccessError, Array};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Stripes resynced at once.
pub const RESYNC_STRIPES_IN_FLIGHT: usize = 4;

/// Progress of a resync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResyncStatus {
    /// Still running.
    pub running: bool,
    /// Stripes done (rewritten or skipped).
    pub done: u64,
    /// Stripes of the volume.
    pub total: u64,
    /// Stripes skipped because a data unit of theirs is on a failed column.
    pub skipped: u64,
    /// Why it stopped before the end; `None` if it did not.
    pub error: Option<String>,
}

impl ResyncStatus {
    /// Whether it ran to its end (every stripe rewritten or skipped).
    pub fn completed(&self) -> bool {
        !self.running && self.error.is_none() && self.done == self.total
    }
}

/// A running (or finished) resync of one volume.
#[derive(Debug)]
pub struct Resync {
    status: Arc<Mutex<ResyncStatus>>,
    cancel: CancellationToken,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Resync {
    /// Starts resyncing `array` in the background. With `skip_lost`, stripes whose data is on a
    /// failed column are skipped (forced assembly); otherwise they stop the resync.
    pub fn start(volume: String, array: Arc<Array>, skip_lost: bool) -> Arc<Resync> {
        let total = array.layout().stripes();
        let status = Arc::new(Mutex::new(ResyncStatus {
            running: true,
            total,
            ..ResyncStatus::default()
        }));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            volume,
            array,
            skip_lost,
            status.clone(),
            cancel.clone(),
        ));
        Arc::new(Resync {
            status,
            cancel,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    /// The progress now.
    pub fn status(&self) -> ResyncStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops after the stripes in progress, and waits for that.
    pub async fn stop(&self) {
        self.cancel.cancel();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(
    volume: String,
    array: Arc<Array>,
    skip_lost: bool,
    status: Arc<Mutex<ResyncStatus>>,
    cancel: CancellationToken,
) {
    let total = array.layout().stripes();
    tracing::info!(volume = %volume, stripes = total, "resync started");
    let update = |f: &dyn Fn(&mut ResyncStatus)| {
        f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
    };
    let stripes = futures::stream::iter(0..total)
        .take_until(cancel.cancelled())
        .map(|stripe| {
            let array = array.clone();
            async move { (stripe, array.resync_stripe(stripe).await) }
        })
        .buffer_unordered(RESYNC_STRIPES_IN_FLIGHT);
    futures::pin_mut!(stripes);
    let mut error = None;
    while let Some((stripe, r)) = stripes.next().await {
        match r {
            Ok(_) => update(&|s| s.done += 1),
            Err(AccessError::Unrecoverable { torn: false, .. }) if skip_lost => update(&|s| {
                s.done += 1;
                s.skipped += 1;
            }),
            Err(e) => {
                error.get_or_insert(format!("stripe {stripe}: {e}"));
                cancel.cancel();
            }
        }
    }
    let done = status.lock().unwrap_or_else(|p| p.into_inner()).done;
    let error = error
        .or_else(|| (done < total).then(|| "stopped: the coordinator is shutting down".to_owned()));
    match &error {
        None => tracing::info!(volume = %volume, stripes = total, "resync finished"),
        Some(e) => {
            tracing::warn!(volume = %volume, done, stripes = total, error = %e, "resync stopped")
        }
    }
    update(&|s| {
        s.running = false;
        s.error = error.clone();
    });
}
