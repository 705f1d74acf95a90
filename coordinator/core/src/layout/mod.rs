//! RAID layouts: where every volume byte lives on the components, and which columns carry the
//! redundancy of each stripe.
//!
//! A layout knows only addresses (an invariant of `ARCHITECTURE.md`): it never reads or writes,
//! never looks at component states. Selection and the builders ask it three things:
//! - [`Layout::map`]: a byte range of the volume as per-stripe [`StripeAccess`]es, each with the
//!   data units it touches, the parity units it would update and the block ranges rounded out;
//! - [`Layout::stripe`]: the column of every unit of one stripe ([`StripeLayout`]), including the
//!   units the access does not touch (a large write reads them);
//! - [`Layout::failures`]: given the failed columns, which units of a stripe access are gone and
//!   whether the layout still tolerates it.
//!
//! One file per level holds that level's column arithmetic and its pinned first stripes:
//! [`raid0`], [`raid1`], [`raid4`], [`raid5`], [`raid6`]. `docs/LAYOUTS.md` draws them.
//!
//! Terms (RAIDframe's): a *stripe unit* is `stripe_unit_blocks` consecutive blocks of one column;
//! a *stripe* is the row of units at the same component offset on every column; every unit of
//! stripe `s` starts at component byte `s * unit_bytes` on its column, for every level.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

mod map;
pub mod raid0;
pub mod raid1;
pub mod raid4;
pub mod raid5;
pub mod raid6;
#[cfg(test)]
mod tests;

pub use map::{
    AccessMap, BlockRange, FailedUnit, ParityKind, ParityUnit, StripeAccess, StripeFailures,
    UnitAccess,
};

/// The most columns any layout accepts: bounds the per-stripe vectors an access allocates, and
/// keeps a bad configuration from asking for gigabytes of them.
pub const MAX_COLUMNS: usize = 1024;

/// RAID levels dagraid lays out.
///
/// The per-level modules ([`raid0`] ... [`raid6`]) document each arrangement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaidLevel {
    /// Striping, no redundancy.
    Raid0,
    /// Mirrored pairs (columns `2k`, `2k + 1`), striped across the pairs.
    Raid1,
    /// Dedicated parity on the last column.
    Raid4,
    /// Rotating parity, left-symmetric (Linux md's default).
    Raid5,
    /// Rotating P (XOR) and Q (Reed-Solomon over GF(2^8)); see [`raid6`] for the conventions.
    Raid6,
}

impl RaidLevel {
    /// Every level, for tests and for listing in a CLI.
    pub const ALL: [RaidLevel; 5] = [
        RaidLevel::Raid0,
        RaidLevel::Raid1,
        RaidLevel::Raid4,
        RaidLevel::Raid5,
        RaidLevel::Raid6,
    ];

    /// The fewest columns the level accepts. RAID 4/5 with two columns and RAID 6 with three
    /// would be mirrors in disguise; refusing them keeps selection's cases meaningful.
    pub fn min_columns(self) -> usize {
        match self {
            RaidLevel::Raid0 => raid0::MIN_COLUMNS,
            RaidLevel::Raid1 => raid1::MIN_COLUMNS,
            RaidLevel::Raid4 => raid4::MIN_COLUMNS,
            RaidLevel::Raid5 => raid5::MIN_COLUMNS,
            RaidLevel::Raid6 => raid6::MIN_COLUMNS,
        }
    }

    /// The most columns the level accepts. RAID 6 is bounded by GF(2^8): the Q coefficients
    /// `g^i` are distinct only for `i < 255`, so at most 255 data units (257 columns).
    pub fn max_columns(self) -> usize {
        match self {
            RaidLevel::Raid6 => raid6::MAX_COLUMNS,
            _ => MAX_COLUMNS,
        }
    }

    /// Redundancy units per stripe that hold parity: 0 (RAID 0, RAID 1: a mirror copy is not
    /// parity), 1 (RAID 4, RAID 5), 2 (RAID 6).
    pub fn parity_units(self) -> usize {
        match self {
            RaidLevel::Raid0 | RaidLevel::Raid1 => 0,
            RaidLevel::Raid4 | RaidLevel::Raid5 => 1,
            RaidLevel::Raid6 => 2,
        }
    }

    /// Component failures the level survives: 0, 1 (RAID 1: one per mirror pair; more pairs may
    /// each lose one), 1, 1, 2.
    pub fn fault_tolerance(self) -> usize {
        match self {
            RaidLevel::Raid0 => 0,
            RaidLevel::Raid1 | RaidLevel::Raid4 | RaidLevel::Raid5 => 1,
            RaidLevel::Raid6 => 2,
        }
    }
}

impl fmt::Display for RaidLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self {
            RaidLevel::Raid0 => 0,
            RaidLevel::Raid1 => 1,
            RaidLevel::Raid4 => 4,
            RaidLevel::Raid5 => 5,
            RaidLevel::Raid6 => 6,
        };
        write!(f, "RAID {n}")
    }
}

impl FromStr for RaidLevel {
    type Err = LayoutError;

    /// Accepts `raid5`, `RAID5`, `RAID 5`, `5` (configuration files and CLI flags).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let digits = t.strip_prefix("raid").unwrap_or(&t).trim_start();
        match digits {
            "0" => Ok(RaidLevel::Raid0),
            "1" => Ok(RaidLevel::Raid1),
            "4" => Ok(RaidLevel::Raid4),
            "5" => Ok(RaidLevel::Raid5),
            "6" => Ok(RaidLevel::Raid6),
            _ => Err(LayoutError::UnknownLevel { name: s.to_owned() }),
        }
    }
}

/// Errors of the layout layer: a bad geometry, or an access the volume cannot hold.
///
/// Every variant carries the numbers that were wrong, so the message names them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The level name is not one dagraid knows.
    #[error("unknown RAID level {name:?} (expected raid0, raid1, raid4, raid5 or raid6)")]
    UnknownLevel {
        /// What was given.
        name: String,
    },
    /// Fewer columns than the level needs.
    #[error("{level} needs at least {min} columns, got {columns}")]
    TooFewColumns {
        /// The level asked for.
        level: RaidLevel,
        /// Columns given.
        columns: usize,
        /// The level's minimum.
        min: usize,
    },
    /// More columns than the level supports.
    #[error("{level} supports at most {max} columns, got {columns}")]
    TooManyColumns {
        /// The level asked for.
        level: RaidLevel,
        /// Columns given.
        columns: usize,
        /// The level's maximum.
        max: usize,
    },
    /// RAID 1 pairs columns, so their number must be even.
    #[error("RAID 1 needs an even number of columns (mirrored pairs), got {columns}")]
    OddMirrorColumns {
        /// Columns given.
        columns: usize,
    },
    /// The block size is zero.
    #[error("block size must be at least 1 byte")]
    ZeroBlockSize,
    /// The stripe unit is zero blocks.
    #[error("stripe unit must be at least 1 block")]
    ZeroStripeUnit,
    /// The components hold zero blocks.
    #[error("components must hold at least 1 block")]
    ZeroComponentBlocks,
    /// A component is smaller than one stripe unit, so the volume would be empty.
    #[error(
        "components of {blocks_per_column} blocks cannot hold one stripe unit of {stripe_unit_blocks} blocks"
    )]
    ComponentTooSmall {
        /// Blocks per component.
        blocks_per_column: u64,
        /// Blocks per stripe unit.
        stripe_unit_blocks: u64,
    },
    /// A size computed from the geometry does not fit in 64 bits.
    #[error("geometry too large: {what} overflows 64 bits")]
    SizeOverflow {
        /// Which size overflowed.
        what: &'static str,
    },
    /// A zero-length access: nothing to map, and most likely a caller bug.
    #[error("zero-length access at volume offset {offset}")]
    EmptyAccess {
        /// Where it was asked for.
        offset: u64,
    },
    /// The access reaches past the end of the volume.
    #[error("access of {len} bytes at offset {offset} is beyond the volume's {capacity} bytes")]
    OutOfRange {
        /// Start of the access.
        offset: u64,
        /// Its length.
        len: u64,
        /// The volume's capacity in bytes.
        capacity: u64,
    },
    /// A column index beyond the layout's columns.
    #[error("column {column} does not exist (the layout has {columns} columns)")]
    NoSuchColumn {
        /// Column asked for.
        column: usize,
        /// Columns of the layout.
        columns: usize,
    },
    /// A component byte beyond the component's size.
    #[error("component byte {offset} is beyond the component's {size} bytes")]
    ComponentOffsetOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Bytes per component.
        size: u64,
    },
}

/// The shape of an array: how many columns, and how they are cut into blocks and stripe units.
///
/// Validated at construction ([`Geometry::new`]) for what every level needs; [`Layout::new`] adds
/// the level's own rules. Components larger than a whole number of stripe units leave their tail
/// unused ([`Geometry::used_blocks_per_column`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    columns: usize,
    stripe_unit_blocks: u64,
    block_size: u64,
    blocks_per_column: u64,
}

impl Geometry {
    /// Checks that no size is zero, that a component holds at least one stripe unit and that
    /// every byte address of a component fits in 64 bits.
    pub fn new(
        columns: usize,
        stripe_unit_blocks: u64,
        block_size: u64,
        blocks_per_column: u64,
    ) -> Result<Geometry, LayoutError> {
        if block_size == 0 {
            return Err(LayoutError::ZeroBlockSize);
        }
        if stripe_unit_blocks == 0 {
            return Err(LayoutError::ZeroStripeUnit);
        }
        if blocks_per_column == 0 {
            return Err(LayoutError::ZeroComponentBlocks);
        }
        if blocks_per_column < stripe_unit_blocks {
            return Err(LayoutError::ComponentTooSmall {
                blocks_per_column,
                stripe_unit_blocks,
            });
        }
        blocks_per_column
            .checked_mul(block_size)
            .ok_or(LayoutError::SizeOverflow {
                what: "bytes per component",
            })?;
        Ok(Geometry {
            columns,
            stripe_unit_blocks,
            block_size,
            blocks_per_column,
        })
    }

    /// Number of components.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Blocks per stripe unit.
    pub fn stripe_unit_blocks(&self) -> u64 {
        self.stripe_unit_blocks
    }

    /// Bytes per block: the unit of component I/O and of checksums.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Blocks per component as configured.
    pub fn blocks_per_column(&self) -> u64 {
        self.blocks_per_column
    }

    /// Bytes per stripe unit.
    pub fn unit_bytes(&self) -> u64 {
        // Cannot overflow: stripe_unit_blocks <= blocks_per_column, whose bytes were checked.
        self.stripe_unit_blocks * self.block_size
    }

    /// Whole stripes per component (the tail beyond the last whole unit is unused).
    pub fn stripes(&self) -> u64 {
        self.blocks_per_column / self.stripe_unit_blocks
    }

    /// Blocks per component that hold stripe units.
    pub fn used_blocks_per_column(&self) -> u64 {
        self.stripes() * self.stripe_unit_blocks
    }

    /// Bytes per component that hold stripe units.
    pub fn used_bytes_per_column(&self) -> u64 {
        self.used_blocks_per_column() * self.block_size
    }
}

/// What one unit of a stripe holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnitRole {
    /// Logical data unit `index` of the stripe (RAID 1: its primary copy). The index is the order
    /// of the unit in the volume, and RAID 6's Q coefficient exponent.
    Data {
        /// Logical data index in the stripe, `0..data_units`.
        index: usize,
    },
    /// RAID 1's secondary copy of data unit `index`.
    Mirror {
        /// Logical data index in the stripe.
        index: usize,
    },
    /// The XOR parity unit (RAID 4, 5, 6).
    P,
    /// RAID 6's Reed-Solomon syndrome unit.
    Q,
}

impl fmt::Display for UnitRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitRole::Data { index } => write!(f, "data unit {index}"),
            UnitRole::Mirror { index } => write!(f, "mirror of data unit {index}"),
            UnitRole::P => f.write_str("parity P"),
            UnitRole::Q => f.write_str("syndrome Q"),
        }
    }
}

/// A set of columns, typically the failed ones. Grows as needed, so any column fits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ColumnSet {
    words: Vec<u64>,
}

impl ColumnSet {
    /// The empty set.
    pub fn new() -> ColumnSet {
        ColumnSet::default()
    }

    /// Adds `column`; returns whether it was new.
    pub fn insert(&mut self, column: usize) -> bool {
        let (w, b) = (column / 64, column % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        !was
    }

    /// Removes `column`; returns whether it was present.
    pub fn remove(&mut self, column: usize) -> bool {
        let (w, b) = (column / 64, column % 64);
        match self.words.get_mut(w) {
            Some(word) if *word & (1 << b) != 0 => {
                *word &= !(1 << b);
                true
            }
            _ => false,
        }
    }

    /// Whether `column` is in the set.
    pub fn contains(&self, column: usize) -> bool {
        self.words
            .get(column / 64)
            .is_some_and(|w| w & (1 << (column % 64)) != 0)
    }

    /// Number of columns in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The columns in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            (0..64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| wi * 64 + b)
        })
    }
}

impl FromIterator<usize> for ColumnSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut set = ColumnSet::new();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

/// Where one volume byte lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// Stripe holding the byte.
    pub stripe: u64,
    /// Logical data index of its unit in the stripe.
    pub data_index: usize,
    /// Column of the unit (RAID 1: the primary copy).
    pub column: usize,
    /// Byte offset on that column's component.
    pub component_offset: u64,
}

/// What one component byte holds: the inverse of the mapping, for rebuild, verification and
/// error reports ("which volume bytes did column 3, block 17 carry?").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComponentContent {
    /// A volume byte (RAID 1: its primary copy).
    Data {
        /// Its volume offset.
        volume_offset: u64,
    },
    /// RAID 1's secondary copy of a volume byte.
    Mirror {
        /// Its volume offset.
        volume_offset: u64,
    },
    /// Parity P of a stripe.
    P {
        /// The stripe.
        stripe: u64,
    },
    /// Syndrome Q of a stripe.
    Q {
        /// The stripe.
        stripe: u64,
    },
    /// Beyond the last whole stripe unit: holds nothing.
    Unused,
}

/// The columns of one stripe's units: computed once per stripe, cheap to copy.
///
/// Every unit of the stripe lies at component bytes [`StripeLayout::component_bytes`] of its
/// column; only the columns differ between units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StripeLayout {
    level: RaidLevel,
    stripe: u64,
    columns: usize,
    /// Where the rotation puts this stripe: P's column for RAID 5/6, unused otherwise.
    p: usize,
    unit_bytes: u64,
    block_size: u64,
}

impl StripeLayout {
    /// The stripe number.
    pub fn stripe(&self) -> u64 {
        self.stripe
    }

    /// Data units in the stripe.
    pub fn data_units(&self) -> usize {
        data_units(self.level, self.columns)
    }

    /// Column of logical data unit `index` (RAID 1: its primary copy); `None` if there is no
    /// such unit.
    pub fn data_column(&self, index: usize) -> Option<usize> {
        if index >= self.data_units() {
            return None;
        }
        let n = self.columns;
        Some(match self.level {
            RaidLevel::Raid0 => raid0::data_column(index),
            RaidLevel::Raid1 => raid1::primary_column(index),
            RaidLevel::Raid4 => raid4::data_column(index),
            RaidLevel::Raid5 => raid5::data_column(n, self.p, index),
            RaidLevel::Raid6 => raid6::data_column(n, self.p, index),
        })
    }

    /// RAID 1: the column of the secondary copy of data unit `index`; `None` for other levels.
    pub fn mirror_column(&self, index: usize) -> Option<usize> {
        match self.level {
            RaidLevel::Raid1 if index < self.data_units() => Some(raid1::secondary_column(index)),
            _ => None,
        }
    }

    /// Column of parity P, for RAID 4/5/6.
    pub fn p_column(&self) -> Option<usize> {
        match self.level {
            RaidLevel::Raid0 | RaidLevel::Raid1 => None,
            RaidLevel::Raid4 => Some(raid4::p_column(self.columns)),
            RaidLevel::Raid5 | RaidLevel::Raid6 => Some(self.p),
        }
    }

    /// Column of syndrome Q, for RAID 6.
    pub fn q_column(&self) -> Option<usize> {
        match self.level {
            RaidLevel::Raid6 => Some(raid6::q_column(self.columns, self.p)),
            _ => None,
        }
    }

    /// RAID 6: the exponent `i` of the Q coefficient `g^i` of data unit `index` (its logical
    /// index, never its column); `None` for other levels or a unit that does not exist.
    pub fn q_exponent(&self, index: usize) -> Option<u8> {
        match self.level {
            RaidLevel::Raid6 if index < self.data_units() => u8::try_from(index).ok(),
            _ => None,
        }
    }

    /// What `column` holds in this stripe; `None` if the column does not exist.
    pub fn role_of(&self, column: usize) -> Option<UnitRole> {
        let n = self.columns;
        if column >= n {
            return None;
        }
        Some(match self.level {
            RaidLevel::Raid0 => raid0::role_of(column),
            RaidLevel::Raid1 => raid1::role_of(column),
            RaidLevel::Raid4 => raid4::role_of(n, column),
            RaidLevel::Raid5 => raid5::role_of(n, self.p, column),
            RaidLevel::Raid6 => raid6::role_of(n, self.p, column),
        })
    }

    /// `(logical data index, column)` for every data unit, in logical order.
    pub fn data_columns(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.data_units()).filter_map(move |i| self.data_column(i).map(|c| (i, c)))
    }

    /// `(column, role)` for every column, in column order.
    pub fn units(&self) -> impl Iterator<Item = (usize, UnitRole)> + '_ {
        (0..self.columns).filter_map(move |c| self.role_of(c).map(|r| (c, r)))
    }

    /// The component bytes every unit of this stripe occupies on its column.
    pub fn component_bytes(&self) -> Range<u64> {
        let start = self.stripe * self.unit_bytes;
        start..start + self.unit_bytes
    }

    /// The component blocks every unit of this stripe occupies on its column.
    pub fn component_blocks(&self) -> BlockRange {
        let per_unit = self.unit_bytes / self.block_size;
        BlockRange {
            first: self.stripe * per_unit,
            count: per_unit,
        }
    }

    /// Component blocks of a range of blocks given relative to the start of the stripe unit
    /// (as in [`StripeAccess::unit_blocks`]); `None` if the range leaves the unit or is empty.
    pub fn component_blocks_of(&self, unit_blocks: Range<u64>) -> Option<BlockRange> {
        let unit = self.component_blocks();
        if unit_blocks.start >= unit_blocks.end || unit_blocks.end > unit.count {
            return None;
        }
        Some(BlockRange {
            first: unit.first + unit_blocks.start,
            count: unit_blocks.end - unit_blocks.start,
        })
    }
}

/// Data units per stripe for `columns` columns of `level`.
fn data_units(level: RaidLevel, columns: usize) -> usize {
    match level {
        RaidLevel::Raid1 => columns / 2,
        _ => columns - level.parity_units(),
    }
}

/// A RAID level over a geometry: the whole address arithmetic of one array.
///
/// Cheap to copy; every method is pure arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    level: RaidLevel,
    geometry: Geometry,
    data_units: usize,
    stripes: u64,
    capacity: u64,
}

impl Layout {
    /// Checks the level's rules on the geometry (column count, RAID 1 parity of the count) and
    /// that the volume's capacity fits in 64 bits.
    pub fn new(level: RaidLevel, geometry: Geometry) -> Result<Layout, LayoutError> {
        let columns = geometry.columns();
        let min = level.min_columns();
        if columns < min {
            return Err(LayoutError::TooFewColumns {
                level,
                columns,
                min,
            });
        }
        let max = level.max_columns();
        if columns > max {
            return Err(LayoutError::TooManyColumns {
                level,
                columns,
                max,
            });
        }
        if level == RaidLevel::Raid1 && !columns.is_multiple_of(2) {
            return Err(LayoutError::OddMirrorColumns { columns });
        }
        let data_units = data_units(level, columns);
        let stripes = geometry.stripes();
        let capacity = (data_units as u64)
            .checked_mul(geometry.unit_bytes())
            .and_then(|b| b.checked_mul(stripes))
            .ok_or(LayoutError::SizeOverflow {
                what: "volume capacity",
            })?;
        Ok(Layout {
            level,
            geometry,
            data_units,
            stripes,
            capacity,
        })
    }

    /// The RAID level.
    pub fn level(&self) -> RaidLevel {
        self.level
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Number of columns.
    pub fn columns(&self) -> usize {
        self.geometry.columns
    }

    /// Data units per stripe (RAID 1: mirrored pairs).
    pub fn data_units(&self) -> usize {
        self.data_units
    }

    /// Parity units per stripe: 0, 1 or 2 (see [`RaidLevel::parity_units`]).
    pub fn parity_units(&self) -> usize {
        self.level.parity_units()
    }

    /// Failures survived (see [`RaidLevel::fault_tolerance`]).
    pub fn fault_tolerance(&self) -> usize {
        self.level.fault_tolerance()
    }

    /// Stripes in the volume.
    pub fn stripes(&self) -> u64 {
        self.stripes
    }

    /// Bytes per stripe unit.
    pub fn unit_bytes(&self) -> u64 {
        self.geometry.unit_bytes()
    }

    /// Volume bytes per stripe (data units only).
    pub fn stripe_data_bytes(&self) -> u64 {
        self.data_units as u64 * self.unit_bytes()
    }

    /// The volume's size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The columns of stripe `stripe`'s units; `None` beyond the last stripe.
    pub fn stripe(&self, stripe: u64) -> Option<StripeLayout> {
        (stripe < self.stripes).then(|| self.stripe_unchecked(stripe))
    }

    fn stripe_unchecked(&self, stripe: u64) -> StripeLayout {
        let n = self.columns();
        StripeLayout {
            level: self.level,
            stripe,
            columns: n,
            p: match self.level {
                RaidLevel::Raid5 => raid5::p_column(n, stripe),
                RaidLevel::Raid6 => raid6::p_column(n, stripe),
                _ => 0,
            },
            unit_bytes: self.unit_bytes(),
            block_size: self.geometry.block_size,
        }
    }

    /// Where volume byte `offset` lives.
    pub fn locate(&self, offset: u64) -> Result<Location, LayoutError> {
        if offset >= self.capacity {
            return Err(LayoutError::OutOfRange {
                offset,
                len: 1,
                capacity: self.capacity,
            });
        }
        let unit = self.unit_bytes();
        let stripe = offset / self.stripe_data_bytes();
        let within = offset % self.stripe_data_bytes();
        let data_index = (within / unit) as usize;
        let sl = self.stripe_unchecked(stripe);
        // data_index < data_units by construction of `within`.
        let column = sl.data_column(data_index).unwrap_or(0);
        Ok(Location {
            stripe,
            data_index,
            column,
            component_offset: stripe * unit + within % unit,
        })
    }

    /// What byte `component_offset` of column `column` holds: the inverse of [`Layout::locate`].
    pub fn resolve(
        &self,
        column: usize,
        component_offset: u64,
    ) -> Result<ComponentContent, LayoutError> {
        if column >= self.columns() {
            return Err(LayoutError::NoSuchColumn {
                column,
                columns: self.columns(),
            });
        }
        let size = self.geometry.blocks_per_column * self.geometry.block_size;
        if component_offset >= size {
            return Err(LayoutError::ComponentOffsetOutOfRange {
                offset: component_offset,
                size,
            });
        }
        let unit = self.unit_bytes();
        let stripe = component_offset / unit;
        if stripe >= self.stripes {
            return Ok(ComponentContent::Unused);
        }
        let sl = self.stripe_unchecked(stripe);
        let volume = |index: usize| {
            stripe * self.stripe_data_bytes() + index as u64 * unit + component_offset % unit
        };
        Ok(match sl.role_of(column) {
            Some(UnitRole::Data { index }) => ComponentContent::Data {
                volume_offset: volume(index),
            },
            Some(UnitRole::Mirror { index }) => ComponentContent::Mirror {
                volume_offset: volume(index),
            },
            Some(UnitRole::P) => ComponentContent::P { stripe },
            Some(UnitRole::Q) => ComponentContent::Q { stripe },
            // column < columns was checked above.
            None => ComponentContent::Unused,
        })
    }

    /// Whether the array survives these failed columns at all (every stripe spans every column,
    /// so this holds for every stripe): RAID 0 none; RAID 1 no pair with both copies failed;
    /// RAID 4/5 at most one; RAID 6 at most two. Columns beyond the layout are ignored.
    pub fn tolerates(&self, failed: &ColumnSet) -> bool {
        let n = self.columns();
        let count = failed.iter().take_while(|&c| c < n).count();
        match self.level {
            RaidLevel::Raid0 => count == 0,
            RaidLevel::Raid1 => (0..self.data_units).all(|i| {
                !(failed.contains(raid1::primary_column(i))
                    && failed.contains(raid1::secondary_column(i)))
            }),
            _ => count <= self.parity_units(),
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn level_names_parse_and_print() {
        for level in RaidLevel::ALL {
            let printed = level.to_string();
            assert_eq!(printed.parse::<RaidLevel>().unwrap(), level);
            let compact = printed.replace(' ', "").to_lowercase();
            assert_eq!(compact.parse::<RaidLevel>().unwrap(), level);
        }
        assert_eq!("5".parse::<RaidLevel>().unwrap(), RaidLevel::Raid5);
        assert_eq!(
            "raid3".parse::<RaidLevel>(),
            Err(LayoutError::UnknownLevel {
                name: "raid3".into()
            })
        );
    }

    #[test]
    fn geometry_rejects_zero_sizes_and_tiny_components() {
        assert_eq!(Geometry::new(4, 1, 0, 8), Err(LayoutError::ZeroBlockSize));
        assert_eq!(
            Geometry::new(4, 0, 512, 8),
            Err(LayoutError::ZeroStripeUnit)
        );
        assert_eq!(
            Geometry::new(4, 1, 512, 0),
            Err(LayoutError::ZeroComponentBlocks)
        );
        assert_eq!(
            Geometry::new(4, 16, 512, 8),
            Err(LayoutError::ComponentTooSmall {
                blocks_per_column: 8,
                stripe_unit_blocks: 16
            })
        );
        assert_eq!(
            Geometry::new(4, 1, 1 << 40, 1 << 30),
            Err(LayoutError::SizeOverflow {
                what: "bytes per component"
            })
        );
    }

    #[test]
    fn layout_rejects_bad_column_counts() {
        let g = |n| Geometry::new(n, 2, 512, 64).unwrap();
        assert_eq!(
            Layout::new(RaidLevel::Raid0, g(0)),
            Err(LayoutError::TooFewColumns {
                level: RaidLevel::Raid0,
                columns: 0,
                min: 1
            })
        );
        assert_eq!(
            Layout::new(RaidLevel::Raid1, g(1)),
            Err(LayoutError::TooFewColumns {
                level: RaidLevel::Raid1,
                columns: 1,
                min: 2
            })
        );
        assert_eq!(
            Layout::new(RaidLevel::Raid1, g(5)),
            Err(LayoutError::OddMirrorColumns { columns: 5 })
        );
        for (level, min) in [
            (RaidLevel::Raid4, 3),
            (RaidLevel::Raid5, 3),
            (RaidLevel::Raid6, 4),
        ] {
            assert_eq!(
                Layout::new(level, g(min - 1)),
                Err(LayoutError::TooFewColumns {
                    level,
                    columns: min - 1,
                    min
                })
            );
            assert!(Layout::new(level, g(min)).is_ok());
        }
        assert_eq!(
            Layout::new(RaidLevel::Raid6, g(258)),
            Err(LayoutError::TooManyColumns {
                level: RaidLevel::Raid6,
                columns: 258,
                max: 257
            })
        );
        assert!(Layout::new(RaidLevel::Raid6, g(257)).is_ok());
        assert_eq!(
            Layout::new(RaidLevel::Raid0, g(MAX_COLUMNS + 1)),
            Err(LayoutError::TooManyColumns {
                level: RaidLevel::Raid0,
                columns: MAX_COLUMNS + 1,
                max: MAX_COLUMNS
            })
        );
    }

    #[test]
    fn capacity_overflow_is_an_error() {
        let g = Geometry::new(MAX_COLUMNS, 1, 1 << 20, 1 << 43).unwrap();
        assert_eq!(
            Layout::new(RaidLevel::Raid0, g),
            Err(LayoutError::SizeOverflow {
                what: "volume capacity"
            })
        );
    }

    #[test]
    fn sizes_and_counts() {
        // 5 columns, 4-block units of 512 bytes, 42 blocks: 10 whole stripes, 2 blocks unused.
        let g = Geometry::new(5, 4, 512, 42).unwrap();
        assert_eq!(g.stripes(), 10);
        assert_eq!(g.used_blocks_per_column(), 40);
        let expect = [
            (RaidLevel::Raid0, 5, 0, 0),
            (RaidLevel::Raid4, 4, 1, 1),
            (RaidLevel::Raid5, 4, 1, 1),
            (RaidLevel::Raid6, 3, 2, 2),
        ];
        for (level, data, parity, tolerance) in expect {
            let l = Layout::new(level, g).unwrap();
            assert_eq!(l.data_units(), data, "{level}");
            assert_eq!(l.parity_units(), parity, "{level}");
            assert_eq!(l.fault_tolerance(), tolerance, "{level}");
            assert_eq!(l.capacity(), data as u64 * 2048 * 10, "{level}");
        }
        let mirror = Layout::new(RaidLevel::Raid1, Geometry::new(6, 4, 512, 42).unwrap()).unwrap();
        assert_eq!(
            (
                mirror.data_units(),
                mirror.parity_units(),
                mirror.fault_tolerance()
            ),
            (3, 0, 1)
        );
        assert_eq!(mirror.capacity(), 3 * 2048 * 10);
        assert_eq!(
            mirror.resolve(0, 40 * 512).unwrap(),
            ComponentContent::Unused
        );
        assert_eq!(
            mirror.resolve(0, 42 * 512),
            Err(LayoutError::ComponentOffsetOutOfRange {
                offset: 42 * 512,
                size: 42 * 512
            })
        );
        assert_eq!(
            mirror.resolve(6, 0),
            Err(LayoutError::NoSuchColumn {
                column: 6,
                columns: 6
            })
        );
        assert_eq!(
            mirror.locate(mirror.capacity()),
            Err(LayoutError::OutOfRange {
                offset: mirror.capacity(),
                len: 1,
                capacity: mirror.capacity()
            })
        );
    }

    #[test]
    fn tolerance_per_level() {
        let set = |cols: &[usize]| cols.iter().copied().collect::<ColumnSet>();
        let l = |level, n| Layout::new(level, Geometry::new(n, 1, 512, 8).unwrap()).unwrap();
        assert!(l(RaidLevel::Raid0, 3).tolerates(&set(&[])));
        assert!(!l(RaidLevel::Raid0, 3).tolerates(&set(&[1])));
        let r1 = l(RaidLevel::Raid1, 6);
        assert!(r1.tolerates(&set(&[0, 3, 5])));
        assert!(!r1.tolerates(&set(&[2, 3])));
        assert!(l(RaidLevel::Raid5, 4).tolerates(&set(&[2])));
        assert!(!l(RaidLevel::Raid4, 4).tolerates(&set(&[0, 3])));
        assert!(l(RaidLevel::Raid6, 5).tolerates(&set(&[0, 4])));
        assert!(!l(RaidLevel::Raid6, 5).tolerates(&set(&[0, 1, 4])));
    }

    #[test]
    fn column_set_basics() {
        let mut s = ColumnSet::new();
        assert!(s.is_empty());
        assert!(s.insert(3));
        assert!(!s.insert(3));
        assert!(s.insert(200));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 200]);
        assert_eq!(s.len(), 2);
        assert!(s.contains(200) && !s.contains(199) && !s.contains(5000));
        assert!(s.remove(3));
        assert!(!s.remove(3));
        assert!(!s.remove(5000));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![200]);
    }
}
