//! Component labels: the record every component of a volume carries in its node's two-slot label
//! area (RAIDframe's component label, Linux md's superblock).
//!
//! A label says which volume the component belongs to, where (column, geometry), and the array's
//! state as of its modification counter: every column's member (node, component id) and state,
//! and whether the volume was shut down cleanly. The node stores the bytes in two alternating
//! slots with a checksum and a sequence number, so an update is atomic; this module only encodes
//! and checks the content. The encoding is JSON with a magic string and a format version, so a
//! label can be read by an operator and migrated by a later version.
//!
//! Version 2 (this code) spells every state of the state model ([`ComponentState`]), carries a
//! recovering member's watermark, and a summary of the lost set ([`LostSummary`]: the counter
//! of its last change; the ranges themselves live in the metadata record,
//! [`super::record`]). Version 1 labels (optimal and failed only, no lost set) are read and
//! taken as version 2 with nothing lost; a label newer than 2 is refused. `docs/STATE.md` has
//! the whole format.

use serde::{Deserialize, Serialize};

use crate::array::ComponentState;
use crate::layout::{Geometry, Layout, LayoutError, RaidLevel};

/// Marks the bytes as a dagraid label.
pub const LABEL_MAGIC: &str = "dagraid-component-label";

/// The label format this code writes; it reads this version and version 1 (a newer one is
/// refused with [`LabelError::NewerVersion`], never guessed at).
pub const LABEL_VERSION: u32 = 2;

/// The geometry of the volume, as labels and the store record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelGeometry {
    /// `raid0`, `raid1`, `raid4`, `raid5` or `raid6`.
    pub level: String,
    /// Columns.
    pub columns: u32,
    /// Blocks per stripe unit.
    pub stripe_unit_blocks: u64,
    /// Bytes per block.
    pub block_size: u64,
    /// Blocks per component.
    pub blocks_per_column: u64,
}

impl LabelGeometry {
    /// The geometry of `layout`.
    pub fn of(layout: &Layout) -> LabelGeometry {
        let g = layout.geometry();
        LabelGeometry {
            level: level_name(layout.level()).to_owned(),
            columns: g.columns() as u32,
            stripe_unit_blocks: g.stripe_unit_blocks(),
            block_size: g.block_size(),
            blocks_per_column: g.blocks_per_column(),
        }
    }

    /// The layout it describes.
    pub fn layout(&self) -> Result<Layout, LabelError> {
        let level: RaidLevel = self.level.parse().map_err(LabelError::Layout)?;
        let g = Geometry::new(
            self.columns as usize,
            self.stripe_unit_blocks,
            self.block_size,
            self.blocks_per_column,
        )
        .map_err(LabelError::Layout)?;
        Layout::new(level, g).map_err(LabelError::Layout)
    }
}

/// The stable lowercase name of a level (`raid5`).
pub fn level_name(level: RaidLevel) -> &'static str {
    match level {
        RaidLevel::Raid0 => "raid0",
        RaidLevel::Raid1 => "raid1",
        RaidLevel::Raid4 => "raid4",
        RaidLevel::Raid5 => "raid5",
        RaidLevel::Raid6 => "raid6",
    }
}

/// A component state as labels (and the store) spell it: every state of [`ComponentState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelState {
    /// In use.
    Optimal,
    /// Out of use until rebuilt or re-added.
    Failed,
    /// A hot spare.
    Spare,
    /// Being rebuilt.
    Reconstructing,
    /// Being re-added.
    Stale,
    /// Being copied back.
    Copyback,
}

impl From<ComponentState> for LabelState {
    fn from(s: ComponentState) -> Self {
        match s {
            ComponentState::Optimal => LabelState::Optimal,
            ComponentState::Failed => LabelState::Failed,
            ComponentState::Spare => LabelState::Spare,
            ComponentState::Reconstructing => LabelState::Reconstructing,
            ComponentState::Stale => LabelState::Stale,
            ComponentState::Copyback => LabelState::Copyback,
        }
    }
}

impl From<LabelState> for ComponentState {
    fn from(s: LabelState) -> Self {
        match s {
            LabelState::Optimal => ComponentState::Optimal,
            LabelState::Failed => ComponentState::Failed,
            LabelState::Spare => ComponentState::Spare,
            LabelState::Reconstructing => ComponentState::Reconstructing,
            LabelState::Stale => ComponentState::Stale,
            LabelState::Copyback => ComponentState::Copyback,
        }
    }
}

/// What a label says of the lost set: enough to find the copy that holds the ranges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostSummary {
    /// The modification counter of the change that last changed the lost set (0: never).
    pub counter: u64,
    /// Lost blocks.
    pub blocks: u64,
}

/// One column of the volume, as a label records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The storage node holding the column's component.
    pub node_id: String,
    /// The component's id on that node.
    pub component_id: String,
    /// Its state.
    pub state: LabelState,
    /// While recovering: the first stripe not yet recovered (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recovered: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The label of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentLabel {
    /// [`LABEL_MAGIC`].
    pub magic: String,
    /// [`LABEL_VERSION`].
    pub version: u32,
    /// The cluster the volume belongs to.
    pub cluster_id: String,
    /// The volume's id (fixed at creation; names can be reused, ids cannot).
    pub volume_id: String,
    /// The volume's name.
    pub volume_name: String,
    /// This component's column.
    pub column: u32,
    /// This component's serial (the node's, which also seeds its block checksums).
    pub serial: u64,
    /// The volume's geometry.
    pub geometry: LabelGeometry,
    /// Bumped on every label update; the highest counter found is the volume's current record.
    pub mod_counter: u64,
    /// Bumped when membership or a component state changes.
    pub config_epoch: u64,
    /// Whether the volume was shut down cleanly (no write can be half done).
    pub clean: bool,
    /// Every column's member and state, as of `mod_counter`.
    pub members: Vec<Member>,
    /// The lost set as of `mod_counter` (version 1: none).
    #[serde(default)]
    pub lost: LostSummary,
    /// The partial-parity log's period as of `mod_counter` (`crate::ppl`; 0: every column
    /// current, or a label written before the log). An additive field: a coordinator that
    /// predates it ignores it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_period: u64,
}

/// Why label bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// Not JSON of a label.
    #[error("not a dagraid label: {0}")]
    Malformed(String),
    /// A label of a newer format.
    #[error("label format version {found} is newer than this dagraid's {LABEL_VERSION}")]
    NewerVersion {
        /// The version found.
        found: u32,
    },
    /// The label's fields contradict each other.
    #[error("inconsistent label: {0}")]
    Inconsistent(String),
    /// The geometry is not a valid layout.
    #[error("label geometry: {0}")]
    Layout(LayoutError),
}

impl ComponentLabel {
    /// The bytes stored in the label area.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses and checks label bytes.
    pub fn decode(bytes: &[u8]) -> Result<ComponentLabel, LabelError> {
        #[derive(Deserialize)]
        struct Head {
            magic: String,
            version: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| LabelError::Malformed(e.to_string()))?;
        if head.magic != LABEL_MAGIC {
            return Err(LabelError::Malformed(format!("magic {:?}", head.magic)));
        }
        if head.version > LABEL_VERSION {
            return Err(LabelError::NewerVersion {
                found: head.version,
            });
        }
        let mut label: ComponentLabel =
            serde_json::from_slice(bytes).map_err(|e| LabelError::Malformed(e.to_string()))?;
        label.check()?;
        // Version 1 migrates to 2 as read: its fields are a subset, nothing is lost.
        label.version = LABEL_VERSION;
        Ok(label)
    }

    /// Checks that the fields agree: a member per column, the column within them, a valid layout.
    pub fn check(&self) -> Result<(), LabelError> {
        let layout = self.geometry.layout()?;
        if self.members.len() != layout.columns() {
            return Err(LabelError::Inconsistent(format!(
                "{} members for {} columns",
                self.members.len(),
                layout.columns()
            )));
        }
        if self.column as usize >= layout.columns() {
            return Err(LabelError::Inconsistent(format!(
                "column {} of {}",
                self.column,
                layout.columns()
            )));
        }
        Ok(())
    }

    /// Every column's state, in column order.
    pub fn states(&self) -> Vec<ComponentState> {
        self.members.iter().map(|m| m.state.into()).collect()
    }

    /// Every column's recovery watermark, in column order.
    pub fn recovered(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.recovered).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> ComponentLabel {
        ComponentLabel {
            log_period: 0,
            magic: LABEL_MAGIC.to_owned(),
            version: LABEL_VERSION,
            cluster_id: "dagraid".into(),
            volume_id: "v-1".into(),
            volume_name: "vol0".into(),
            column: 2,
            serial: 77,
            geometry: LabelGeometry {
                level: "raid5".into(),
                columns: 3,
                stripe_unit_blocks: 16,
                block_size: 4096,
                blocks_per_column: 1024,
            },
            mod_counter: 5,
            config_epoch: 2,
            clean: false,
            members: (0..3)
                .map(|c| Member {
                    node_id: format!("node{c}"),
                    component_id: format!("v-1-c{c}"),
                    state: if c == 1 {
                        LabelState::Failed
                    } else {
                        LabelState::Optimal
                    },
                    recovered: 0,
                })
                .collect(),
            lost: LostSummary::default(),
        }
    }

    #[test]
    fn labels_round_trip_and_bad_ones_are_refused() {
        let l = sample();
        let bytes = l.encode();
        assert_eq!(ComponentLabel::decode(&bytes).unwrap(), l);
        assert_eq!(
            l.states(),
            vec![
                ComponentState::Optimal,
                ComponentState::Failed,
                ComponentState::Optimal
            ]
        );
        assert!(matches!(
            ComponentLabel::decode(b"{}"),
            Err(LabelError::Malformed(_))
        ));
        let mut newer = l.clone();
        newer.version = LABEL_VERSION + 1;
        assert_eq!(
            ComponentLabel::decode(&newer.encode()),
            Err(LabelError::NewerVersion {
                found: LABEL_VERSION + 1
            })
        );
        let mut odd = l.clone();
        odd.members.pop();
        assert!(matches!(
            ComponentLabel::decode(&odd.encode()),
            Err(LabelError::Inconsistent(_))
        ));
        let mut wrong = l;
        wrong.magic = "md".into();
        assert!(matches!(
            ComponentLabel::decode(&wrong.encode()),
            Err(LabelError::Malformed(_))
        ));
        let geometry = LabelGeometry::of(&sample().geometry.layout().unwrap());
        assert_eq!(geometry, sample().geometry);
    }

    #[test]
    fn a_version_1_label_is_read_as_version_2_and_every_state_round_trips() {
        // What a version-1 coordinator wrote (no watermark, no lost summary).
        let v1 = br#"{"magic":"dagraid-component-label","version":1,"cluster_id":"dagraid",
            "volume_id":"v-1","volume_name":"vol0","column":0,"serial":7,
            "geometry":{"level":"raid5","columns":3,"stripe_unit_blocks":16,"block_size":4096,
            "blocks_per_column":1024},"mod_counter":4,"config_epoch":2,"clean":true,
            "members":[{"node_id":"n1","component_id":"c0","state":"optimal"},
            {"node_id":"n2","component_id":"c1","state":"failed"},
            {"node_id":"n3","component_id":"c2","state":"optimal"}]}"#;
        let l = ComponentLabel::decode(v1).unwrap();
        assert_eq!(l.version, LABEL_VERSION);
        assert_eq!(l.lost, LostSummary::default());
        assert_eq!(l.recovered(), vec![0, 0, 0]);
        assert_eq!(l.states()[1], ComponentState::Failed);
        let mut l = sample();
        for (i, s) in ComponentState::ALL.iter().enumerate() {
            l.members[i % 3].state = (*s).into();
            l.members[i % 3].recovered = i as u64;
            l.lost = LostSummary {
                counter: 9,
                blocks: 3,
            };
            let back = ComponentLabel::decode(&l.encode()).unwrap();
            assert_eq!(back, l);
            assert_eq!(back.states()[i % 3], *s);
        }
    }
}
