//! The durable state of one volume ([`DurableState`]: modification counter, config epoch, clean
//! flag, every column's state) and [`VolumeStates`], which keeps it on both copies: the label of
//! every surviving component and the coordinator's store record.
//!
//! **Order of a change.** The counter is bumped, the new labels are written to every column the
//! new state does not call failed (concurrently, each under the node deadline), then the store
//! record is updated; only then does the change count as durable (and the access that needed it
//! may be acknowledged). A crash anywhere in between leaves some copies at the new counter and
//! the rest at the old one; assembly takes the highest counter
//! (`dagraid_core::meta::assembly`), and either record is a state the volume really was in.
//!
//! **Which copy is authoritative.** Neither by kind: the one with the highest counter. The store
//! is not trusted over a label because a crash between the label writes and the store write
//! leaves the labels ahead; a label is not trusted over the store or another label because a
//! component left behind by a failure (its node down while the others were relabelled) keeps an
//! older label that still calls it optimal. The highest counter is always the latest state that
//! reached at least one copy, and every later change starts from it.
//!
//! **A component whose label cannot be written is failed** (Linux md does the same with a
//! superblock write error): the change is written again, with that column failed and the
//! counter bumped, to the others, if the layout tolerates it; otherwise the change fails and so
//! does the access that needed it. The array learns about the failure right after (the column is
//! failed through [`Array::fail_component`]); until then the recorder keeps it failed in every
//! change it writes. A node that refuses this coordinator's epoch fails the change: a newer
//! coordinator owns the volume.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use dagraid_core::access::{Array, StateRecorder};
use dagraid_core::array::{ComponentState, ComponentStates};
use dagraid_core::layout::{ColumnSet, Layout};
use dagraid_core::lost::LostSet;
use dagraid_core::parity_map::{DirtyRegions, MapSnapshot};
use futures::future::BoxFuture;

use crate::labels::{ArmedCrash, CrashHooks, LabelWriteError, VolumeLabels};
use crate::store::{DurableState, Store};

/// A failure state to record: what the array holds (or assembly decided).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    /// Every column's state.
    pub states: Vec<ComponentState>,
    /// Every column's recovery watermark.
    pub recovered: Vec<u64>,
    /// The lost blocks.
    pub lost: LostSet,
    /// The partial-parity log's period.
    pub log_period: u64,
}

/// What a change does to the parity map.
#[derive(Debug, Clone)]
enum MapChange {
    /// Nothing.
    Keep,
    /// Replaced: assembly (the regions awaiting their resync), clean shutdown (none).
    Set(DirtyRegions),
}

impl Proposed {
    /// What `states` hold.
    pub fn of(states: &ComponentStates) -> Proposed {
        Proposed {
            states: states.states().to_vec(),
            recovered: states.recovered().to_vec(),
            lost: states.lost().clone(),
            log_period: states.log_period(),
        }
    }
}

/// What the recorder knows about the volume's durable state.
#[derive(Debug)]
struct Persisted {
    /// The state last made durable on labels and store.
    durable: DurableState,
    /// The highest counter used so far (written to some labels, maybe not all).
    counter: u64,
    /// Columns this recorder failed because their label write failed, until the array knows.
    failed_here: BTreeSet<usize>,
    /// Marked clean at shutdown: no further change may be recorded.
    closed: bool,
    /// The array's state generation ([`ComponentStates::generation`]) of the newest states
    /// recorded: an older one is never written over them.
    generation: u64,
    /// The version of the newest parity-map copy recorded ([`MapSnapshot::version`]): an
    /// older one is never written over it.
    map_version: u64,
}

/// The [`StateRecorder`] of one volume: labels on the surviving components, then the store.
#[derive(Debug)]
pub struct VolumeStates {
    store: Store,
    name: String,
    id: String,
    layout: Layout,
    labels: VolumeLabels,
    persisted: tokio::sync::Mutex<Persisted>,
    /// A copy of `persisted.durable` for readers that must not wait.
    snapshot: Mutex<DurableState>,
    array: OnceLock<Weak<Array>>,
    crash: CrashHooks,
    /// Whether the array logs its writes while degraded: if not, no record claims a log
    /// period (`dagraid_core::ppl`), so a crash while degraded needs a forced assembly.
    keeps_log: bool,
}

impl VolumeStates {
    /// The recorder of volume `name` (id `id`) whose durable state is `durable` (as last
    /// persisted, or as assembly decided). `crash` holds the test hooks.
    pub fn new(
        store: Store,
        name: impl Into<String>,
        id: impl Into<String>,
        layout: Layout,
        labels: VolumeLabels,
        durable: DurableState,
        crash: CrashHooks,
    ) -> Self {
        Self {
            store,
            name: name.into(),
            id: id.into(),
            layout,
            labels,
            snapshot: Mutex::new(durable.clone()),
            persisted: tokio::sync::Mutex::new(Persisted {
                counter: durable.mod_counter,
                durable,
                failed_here: BTreeSet::new(),
                closed: false,
                generation: 0,
                map_version: 0,
            }),
            array: OnceLock::new(),
            crash,
            keeps_log: true,
        }
    }

    /// The same for an array that logs its writes while degraded or not
    /// ([`dagraid_core::access::ArrayConfig::partial_parity_log`]).
    pub fn keeping_log(mut self, keeps_log: bool) -> Self {
        self.keeps_log = keeps_log;
        self
    }

    /// Tells the recorder which array it records for (to hand it the columns whose label write
    /// failed).
    pub fn attach(&self, array: &Arc<Array>) {
        let _ = self.array.set(Arc::downgrade(array));
    }

    /// The labels of the volume.
    pub fn labels(&self) -> &VolumeLabels {
        &self.labels
    }

    /// The durable state as last persisted.
    pub fn durable(&self) -> DurableState {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Persists `proposed` and the parity map as `map` says, with clean flag `clean` (`None`: unchanged), as the next state. With
    /// `fail_unwritable`, a column whose label cannot be written is failed (within the
    /// tolerance) and the change written again; without, any label failure fails the change
    /// (assembly and creation, where nothing is served yet). `crash` is the test hook.
    ///
    /// `generation` is the array state generation `states` were taken at (`None`: not from the
    /// array, as at assembly): states older than the newest recorded are never written over
    /// them, and the call answers with the durable state as it is.
    async fn persist(
        &self,
        proposed: Proposed,
        map: MapChange,
        generation: Option<u64>,
        clean: Option<bool>,
        fail_unwritable: bool,
        crash: Option<ArmedCrash>,
    ) -> Result<DurableState, String> {
        let mut p = self.persisted.lock().await;
        if p.closed {
            return Err(format!(
                "volume {:?} was marked clean for shutdown; no state change is recorded any more",
                self.name
            ));
        }
        if let Some(g) = generation
            && g < p.generation
        {
            tracing::debug!(volume = %self.name, generation = g, recorded = p.generation, "older states not recorded over newer ones");
            return Ok(p.durable.clone());
        }
        let map = match map {
            MapChange::Keep => p.durable.map.clone(),
            MapChange::Set(m) => Some(m),
        };
        let Proposed {
            mut states,
            recovered,
            lost,
            log_period,
        } = proposed;
        for &c in &p.failed_here {
            if let Some(s) = states.get_mut(c) {
                *s = ComponentState::Failed;
            }
        }
        let clean = clean.unwrap_or(p.durable.clean);
        let mut newly_failed = Vec::new();
        let next = loop {
            p.counter += 1;
            // The lost set's counter moves only with the lost set: the metadata records are
            // written by the changes that change it (`crate::labels`).
            let lost_counter = if lost != p.durable.lost {
                p.counter
            } else {
                p.durable.lost_counter
            };
            // The map's counter is a sequence of its own: a map update alone does not bump
            // the modification counter (`VolumeStates::persist_map`).
            let map_changed = map != p.durable.map;
            let map_counter = p.durable.map_counter + u64::from(map_changed);
            let map_cleared_at = cleared_at(&p.durable, map.as_ref(), p.counter);
            let next = DurableState {
                mod_counter: p.counter,
                config_epoch: p.durable.config_epoch
                    + u64::from(
                        states != p.durable.states || self.labels.members() != p.durable.members,
                    ),
                clean,
                states: states.clone(),
                recovered: recovered.clone(),
                lost: lost.clone(),
                lost_counter,
                members: self.labels.members(),
                map: map.clone(),
                map_counter,
                map_cleared_at,
                log_period: if self.keeps_log { log_period } else { 0 },
            };
            let record = lost_counter == next.mod_counter || map_changed;
            let failures = self.labels.write(&next, record, crash).await;
            if failures.is_empty() {
                break next;
            }
            let gone = self.gone_columns();
            let mut changed = false;
            for (column, error) in failures {
                match error {
                    LabelWriteError::Component(detail) if fail_unwritable => {
                        let mut failed: ColumnSet = failed_columns(&states);
                        failed.insert(column);
                        if !self.layout.tolerates(&failed) {
                            if gone.contains(column) {
                                // Its node is gone and it cannot be failed: the volume is
                                // failed and refuses writes, so the column's data stays
                                // current. The change is durable on the other labels and the
                                // store; this label stays older and loses at assembly.
                                tracing::warn!(volume = %self.name, column, error = %detail, "label of a gone column not written; the change is recorded on the others");
                                continue;
                            }
                            return Err(format!(
                                "the label of column {column} cannot be written ({detail}) and failing it would exceed the tolerance of {}",
                                self.layout.level()
                            ));
                        }
                        changed = true;
                        tracing::warn!(volume = %self.name, column, error = %detail, "label write failed; the component is marked failed");
                        states[column] = ComponentState::Failed;
                        newly_failed.push(column);
                    }
                    other => {
                        return Err(format!("the label of column {column}: {other}"));
                    }
                }
            }
            if !changed {
                break next;
            }
        };
        self.store
            .update_state_async(self.name.clone(), self.id.clone(), next.clone())
            .await
            .map_err(|e| e.to_string())?;
        p.failed_here.extend(newly_failed.iter().copied());
        if let Some(g) = generation {
            p.generation = g;
        }
        p.durable = next.clone();
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = next.clone();
        drop(p);
        if !newly_failed.is_empty() {
            self.hand_failures_to_array(newly_failed);
        }
        Ok(next)
    }

    /// Persists a copy of the parity map (docs/STATE.md, "Parity map"): the metadata records
    /// of the columns not failed first, then the store. A map update changes no state: it bumps
    /// the map's own counter, not the modification counter, writes no label and fails no
    /// column: a record that cannot be written (its node down or slow) is logged and keeps an
    /// older map, which the union at assembly covers, because the store must hold the map
    /// before the write that waited for it is issued (a store failure fails that write). A copy
    /// older than one recorded is not written.
    async fn persist_map(&self, map: &MapSnapshot) -> Result<(), String> {
        let mut p = self.persisted.lock().await;
        if p.closed {
            return Err(format!(
                "volume {:?} was marked clean for shutdown; no change is recorded any more",
                self.name
            ));
        }
        if map.version <= p.map_version {
            return Ok(());
        }
        let regions = DirtyRegions::from(map);
        if p.durable.map.as_ref() == Some(&regions) {
            p.map_version = map.version;
            return Ok(());
        }
        let mut next = p.durable.clone();
        next.map_cleared_at = cleared_at(&p.durable, Some(&regions), p.durable.mod_counter);
        next.map = Some(regions);
        next.map_counter += 1;
        // The test hook is taken by the first update that writes anything.
        let crash = ArmedCrash::take(self.crash.map.as_ref());
        for (column, error) in self.labels.write_records(&next, crash).await {
            tracing::warn!(volume = %self.name, column, %error, "parity map not written to this column's metadata record; the store holds it");
        }
        self.store
            .update_state_async(self.name.clone(), self.id.clone(), next.clone())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(crash) = crash {
            crash.abort_after_store();
        }
        p.map_version = map.version;
        p.durable = next.clone();
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    /// The columns the array knows are gone (their node does not answer; not failed).
    fn gone_columns(&self) -> ColumnSet {
        self.array
            .get()
            .and_then(Weak::upgrade)
            .map(|a| a.states().gone_columns().clone())
            .unwrap_or_default()
    }

    /// Fails, in the array, the columns whose label write failed (in a task: the array records
    /// the change through this recorder, which is busy now).
    fn hand_failures_to_array(&self, columns: Vec<usize>) {
        let Some(array) = self.array.get().and_then(Weak::upgrade) else {
            return;
        };
        let name = self.name.clone();
        tokio::spawn(async move {
            for column in columns {
                if let Err(error) = array.fail_component(column).await {
                    tracing::warn!(volume = %name, column, %error, "could not fail the column whose label write failed");
                }
            }
        });
    }

    /// Assembly: persists the decided `states` and parity map `map` (the regions awaiting
    /// their resync), not clean (the volume is about to serve), under a counter above every
    /// copy found (the recorder starts from the authoritative record). Every surviving label
    /// must be written.
    pub async fn persist_assembly(
        &self,
        proposed: Proposed,
        map: DirtyRegions,
    ) -> Result<DurableState, String> {
        self.persist(
            proposed,
            MapChange::Set(map),
            None,
            Some(false),
            false,
            None,
        )
        .await
    }

    /// [`VolumeStates::persist_assembly`], tried again with a back-off (200 ms doubling to
    /// 2 s) until `until`, so one slow or lost label write never leaves a volume unassembled;
    /// then once more, failing a column whose label still cannot be written (within the
    /// tolerance, as for any change while the volume serves).
    pub async fn persist_assembly_retrying(
        &self,
        proposed: Proposed,
        map: DirtyRegions,
        until: tokio::time::Instant,
    ) -> Result<DurableState, String> {
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            match self.persist_assembly(proposed.clone(), map.clone()).await {
                Ok(d) => return Ok(d),
                Err(e) if tokio::time::Instant::now() + delay < until => {
                    tracing::warn!(volume = %self.name, error = %e, retry_in_ms = delay.as_millis() as u64, "the assembled state could not be recorded; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::warn!(volume = %self.name, error = %e, "the assembled state could not be recorded; a column whose label cannot be written is failed");
                    break;
                }
            }
        }
        self.persist(proposed, MapChange::Set(map), None, Some(false), true, None)
            .await
    }

    /// Clean shutdown: persists the array's current states (not the last recorded ones: a
    /// failure the array marked whose recording failed is still a failure) with the clean flag
    /// set and no dirty region (every write drained: no stripe can be torn) unless the map is
    /// held (a column is not current: the map is its written-while-failed bitmap and is kept),
    /// then refuses any further change (the volume must not be written after this). With the
    /// label of a component that cannot be written, the column is failed as for any change.
    pub async fn mark_clean(&self) -> Result<DurableState, String> {
        let (proposed, generation) = match self.array.get().and_then(Weak::upgrade) {
            Some(array) => {
                let st = array.states();
                (Proposed::of(&st), Some(st.generation()))
            }
            None => {
                let d = self.durable();
                (
                    Proposed {
                        states: d.states,
                        recovered: d.recovered,
                        lost: d.lost,
                        log_period: d.log_period,
                    },
                    None,
                )
            }
        };
        {
            let mut p = self.persisted.lock().await;
            self.settle(&mut p, &proposed.states);
        }
        let map = match self.array.get().and_then(Weak::upgrade) {
            Some(array) => {
                let map = array.parity_map();
                map.clear_idle(array.map_held());
                DirtyRegions::from(&map.snapshot())
            }
            None => {
                let d = self.durable();
                match d.map {
                    Some(m) if d.states.iter().any(|s| !s.is_current()) => m,
                    m => DirtyRegions {
                        region_stripes: m.map_or(1, |m| m.region_stripes),
                        regions: LostSet::new(),
                    },
                }
            }
        };
        let done = self
            .persist(
                proposed,
                MapChange::Set(map),
                generation,
                Some(true),
                true,
                None,
            )
            .await;
        let mut p = self.persisted.lock().await;
        p.closed = true;
        done
    }

    /// Forgets the columns it failed that the array now knows are failed.
    fn settle(&self, p: &mut Persisted, states: &[ComponentState]) {
        p.failed_here
            .retain(|&c| !states.get(c).is_some_and(|s| s.is_failed()));
    }
}

/// The `map_cleared_at` of a change from `old` that records parity map `map` at counter
/// `counter`: that counter if the change clears a region (or starts a map), else as it was.
fn cleared_at(old: &DurableState, map: Option<&DirtyRegions>, counter: u64) -> Option<u64> {
    match (old.map.as_ref(), map) {
        (_, None) => old.map_cleared_at,
        (None, Some(_)) => Some(counter),
        (Some(o), Some(n)) => {
            let mut union = n.regions.clone();
            union.union_with(&o.regions);
            if o.region_stripes != n.region_stripes || union != n.regions {
                Some(counter)
            } else {
                old.map_cleared_at
            }
        }
    }
}

/// The columns the tolerance counts: every column not current everywhere (failed or
/// recovering), so a label failure never records more missing columns than the layout survives.
fn failed_columns(states: &[ComponentState]) -> ColumnSet {
    states
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_current())
        .map(|(c, _)| c)
        .collect()
}

impl StateRecorder for VolumeStates {
    fn record<'a>(&'a self, states: &'a ComponentStates) -> BoxFuture<'a, Result<(), String>> {
        let generation = states.generation();
        let proposed = Proposed::of(states);
        Box::pin(async move {
            {
                let mut p = self.persisted.lock().await;
                self.settle(&mut p, &proposed.states);
            }
            let crash = ArmedCrash::take(self.crash.labels.as_ref());
            self.persist(
                proposed,
                MapChange::Keep,
                Some(generation),
                None,
                true,
                crash,
            )
            .await
            .map(drop)
        })
    }

    fn record_map<'a>(&'a self, map: &'a MapSnapshot) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.persist_map(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(r: std::ops::Range<u64>) -> DirtyRegions {
        DirtyRegions {
            region_stripes: 4,
            regions: LostSet::from_ranges(std::iter::once(r)),
        }
    }

    #[test]
    fn cleared_at_moves_only_when_a_change_clears_a_region() {
        let mut old = DurableState::new(5, 1, false, vec![ComponentState::Optimal; 3]);
        // The first map of a volume that kept none: nothing before it can be trusted.
        assert_eq!(cleared_at(&old, Some(&regions(0..2)), 6), Some(6));
        old.map = Some(regions(0..2));
        old.map_cleared_at = Some(3);
        // A mark (a superset) keeps it; no map change keeps it.
        assert_eq!(cleared_at(&old, Some(&regions(0..4)), 6), Some(3));
        assert_eq!(cleared_at(&old, Some(&regions(0..2)), 6), Some(3));
        assert_eq!(cleared_at(&old, None, 6), Some(3));
        // A clear, or another region size, moves it to the change's counter.
        assert_eq!(cleared_at(&old, Some(&regions(1..2)), 6), Some(6));
        let mut other = regions(0..2);
        other.region_stripes = 8;
        assert_eq!(cleared_at(&old, Some(&other), 7), Some(7));
    }
}
