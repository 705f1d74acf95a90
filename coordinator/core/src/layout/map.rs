//! Access maps: a volume byte range cut into per-stripe, per-unit pieces with their component
//! addresses, and the failure analysis selection runs on them.

use std::ops::Range;

use super::{ColumnSet, Layout, LayoutError, RaidLevel, StripeLayout, UnitRole};

/// A run of whole blocks on one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRange {
    /// First block.
    pub first: u64,
    /// Number of blocks (at least 1 in every range a layout hands out).
    pub count: u64,
}

impl BlockRange {
    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.first + self.count
    }

    /// The component bytes of these blocks.
    pub fn bytes(&self, block_size: u64) -> Range<u64> {
        self.first * block_size..self.end() * block_size
    }

    /// The smallest run of whole blocks that holds `bytes` (assumed non-empty).
    pub fn covering(bytes: &Range<u64>, block_size: u64) -> BlockRange {
        let first = bytes.start / block_size;
        let end = bytes.end.div_ceil(block_size);
        BlockRange {
            first,
            count: end - first,
        }
    }
}

/// The part of an access that falls in one data unit of one stripe.
///
/// The user bytes are `component_bytes` on `column`; I/O goes by whole blocks, so `blocks`
/// rounds them out, and the user bytes start `offset_in_blocks` bytes into those blocks. A
/// builder reads `blocks` first when [`UnitAccess::is_whole_blocks`] is false (read-modify-write
/// of the partial head or tail block).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitAccess {
    /// Logical data index of the unit in its stripe (the order of units in the volume).
    pub data_index: usize,
    /// Column holding the unit (RAID 1: the primary copy).
    pub column: usize,
    /// RAID 1: the column of the secondary copy.
    pub mirror_column: Option<usize>,
    /// RAID 6: the exponent `i` of the unit's Q coefficient `g^i`, its logical data index.
    pub q_exponent: Option<u8>,
    /// Volume offset of the first user byte.
    pub volume_offset: u64,
    /// Offset of the first user byte in the caller's buffer (0 for the access's first byte).
    pub buffer_offset: u64,
    /// Number of user bytes.
    pub len: u64,
    /// Offset of the first user byte within the stripe unit.
    pub unit_offset: u64,
    /// The user bytes on the component: `len` bytes.
    pub component_bytes: Range<u64>,
    /// The component blocks holding them, rounded out.
    pub blocks: BlockRange,
    /// Where the user bytes start within `blocks` (bytes from the start of `blocks.first`).
    pub offset_in_blocks: u64,
}

impl UnitAccess {
    /// The user bytes' place in the caller's buffer.
    pub fn buffer_bytes(&self) -> Range<u64> {
        self.buffer_offset..self.buffer_offset + self.len
    }

    /// Whether the user bytes are exactly `blocks` (no read-modify-write needed to write them).
    pub fn is_whole_blocks(&self, block_size: u64) -> bool {
        self.offset_in_blocks == 0 && self.blocks.count * block_size == self.len
    }

    /// The user bytes relative to the start of the stripe unit.
    pub fn unit_bytes(&self) -> Range<u64> {
        self.unit_offset..self.unit_offset + self.len
    }
}

/// Which parity unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParityKind {
    /// XOR parity.
    P,
    /// RAID 6 Reed-Solomon syndrome.
    Q,
}

/// A parity unit an access to a stripe would read or update.
///
/// Its range is the hull of the data units' in-unit ranges ([`StripeAccess::unit_range`]): the
/// parity bytes any of the touched data bytes contribute to, as one contiguous run. With more
/// than one data unit touched that is the whole unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParityUnit {
    /// P or Q.
    pub kind: ParityKind,
    /// Column holding it in this stripe.
    pub column: usize,
    /// Exact component bytes (the hull).
    pub component_bytes: Range<u64>,
    /// The hull rounded out to whole blocks: what a parity read or write moves.
    pub blocks: BlockRange,
}

/// The part of an access that falls in one stripe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StripeAccess {
    /// The stripe.
    pub stripe: u64,
    /// Columns of all the stripe's units, touched or not.
    pub layout: StripeLayout,
    /// Data units touched, in logical (and volume) order; consecutive data indices.
    pub units: Vec<UnitAccess>,
    /// Parity units of the stripe (none for RAID 0/1; P for RAID 4/5; P then Q for RAID 6).
    pub parity: Vec<ParityUnit>,
    /// Hull of the touched in-unit byte ranges, relative to the start of a stripe unit.
    pub unit_range: Range<u64>,
    /// `unit_range` rounded out to whole blocks, in blocks relative to the start of a stripe
    /// unit: the stripe lock's range.
    pub unit_blocks: Range<u64>,
    /// The volume bytes of this piece.
    pub volume_range: Range<u64>,
    /// Their place in the caller's buffer.
    pub buffer_range: Range<u64>,
}

impl StripeAccess {
    /// The touched part of data unit `index`, if the access touches it.
    pub fn unit(&self, index: usize) -> Option<&UnitAccess> {
        let first = self.units.first()?.data_index;
        self.units
            .get(index.checked_sub(first)?)
            .filter(|u| u.data_index == index)
    }

    /// Number of data units touched.
    pub fn data_units_touched(&self) -> usize {
        self.units.len()
    }

    /// Logical indices of the data units the access does not touch at all (a large write reads
    /// them over [`StripeAccess::unit_blocks`]).
    pub fn untouched_data(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.layout.data_units()).filter(|&i| self.unit(i).is_none())
    }

    /// Whether the access overwrites every data byte of the stripe (a full-stripe write needs
    /// no reads to compute parity).
    pub fn is_full_stripe(&self, unit_bytes: u64) -> bool {
        self.units.len() == self.layout.data_units()
            && self.units.iter().all(|u| u.len == unit_bytes)
    }

    /// The P unit, if the level has one.
    pub fn p(&self) -> Option<&ParityUnit> {
        self.parity.iter().find(|p| p.kind == ParityKind::P)
    }

    /// The Q unit (RAID 6).
    pub fn q(&self) -> Option<&ParityUnit> {
        self.parity.iter().find(|p| p.kind == ParityKind::Q)
    }
}

/// A volume access cut into stripes, in increasing stripe order (the order stripe locks are
/// taken in).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessMap {
    /// Volume offset of the access.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// One entry per stripe touched.
    pub stripes: Vec<StripeAccess>,
}

/// A unit of a stripe whose column has failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailedUnit {
    /// The failed column.
    pub column: usize,
    /// What it holds in this stripe.
    pub role: UnitRole,
    /// Whether the access touches it: a data unit (or its RAID 1 mirror) whose data the access
    /// reads or writes. Parity units are never marked touched; every redundant write uses them.
    pub touched: bool,
}

/// What a set of failed columns means for one stripe (of an access): the input of selection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StripeFailures {
    /// The stripe.
    pub stripe: u64,
    /// Every unit of the stripe on a failed column, in column order.
    pub failed: Vec<FailedUnit>,
    /// Whether the access can still be served with the layout's redundancy:
    /// - RAID 0: no touched unit failed (units of other columns do not matter to this access);
    /// - RAID 1: no touched data unit lost both copies;
    /// - RAID 4/5/6: at most `parity_units` units of the stripe failed (every unit of a
    ///   stripe takes part in its parity, touched or not).
    pub tolerated: bool,
}

impl StripeFailures {
    /// No unit of the stripe failed.
    pub fn is_fault_free(&self) -> bool {
        self.failed.is_empty()
    }

    /// Whether the unit in `role` failed.
    pub fn role_failed(&self, role: UnitRole) -> bool {
        self.failed.iter().any(|f| f.role == role)
    }

    /// Whether parity P failed.
    pub fn p_failed(&self) -> bool {
        self.role_failed(UnitRole::P)
    }

    /// Whether syndrome Q failed.
    pub fn q_failed(&self) -> bool {
        self.role_failed(UnitRole::Q)
    }

    /// Whether `column` failed.
    pub fn column_failed(&self, column: usize) -> bool {
        self.failed.iter().any(|f| f.column == column)
    }

    /// Logical indices of data units whose (primary) column failed, touched or not.
    pub fn failed_data(&self) -> impl Iterator<Item = usize> + '_ {
        self.failed.iter().filter_map(|f| match f.role {
            UnitRole::Data { index } => Some(index),
            _ => None,
        })
    }

    /// Logical indices of data units the access touches whose (primary) column failed.
    pub fn touched_failed_data(&self) -> impl Iterator<Item = usize> + '_ {
        self.failed.iter().filter_map(|f| match f.role {
            UnitRole::Data { index } if f.touched => Some(index),
            _ => None,
        })
    }
}

impl Layout {
    /// Cuts `len` bytes at volume offset `offset` into per-stripe, per-unit pieces.
    ///
    /// Any offset and length are accepted (not only whole blocks); a zero length or a range
    /// past the end of the volume is an error. The pieces cover exactly the range, in order,
    /// and their buffer offsets run from 0 to `len`.
    pub fn map(&self, offset: u64, len: u64) -> Result<AccessMap, LayoutError> {
        if len == 0 {
            return Err(LayoutError::EmptyAccess { offset });
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.capacity())
            .ok_or(LayoutError::OutOfRange {
                offset,
                len,
                capacity: self.capacity(),
            })?;
        let unit = self.unit_bytes();
        let stripe_bytes = self.stripe_data_bytes();
        let block_size = self.geometry().block_size();
        let first_stripe = offset / stripe_bytes;
        let last_stripe = (end - 1) / stripe_bytes;
        let mut stripes = Vec::with_capacity((last_stripe - first_stripe + 1) as usize);
        let mut pos = offset;
        for stripe in first_stripe..=last_stripe {
            let sl = self.stripe_unchecked(stripe);
            let stripe_start = stripe * stripe_bytes;
            let stripe_end = (stripe_start + stripe_bytes).min(end);
            let volume_range = pos..stripe_end;
            let buffer_range = pos - offset..stripe_end - offset;
            let base = stripe * unit;
            let mut units = Vec::new();
            while pos < stripe_end {
                let within = pos - stripe_start;
                let data_index = (within / unit) as usize;
                let unit_offset = within % unit;
                let n = (unit - unit_offset).min(stripe_end - pos);
                let component_bytes = base + unit_offset..base + unit_offset + n;
                let blocks = BlockRange::covering(&component_bytes, block_size);
                units.push(UnitAccess {
                    data_index,
                    // data_index < data_units since within < stripe_bytes.
                    column: sl.data_column(data_index).unwrap_or(0),
                    mirror_column: sl.mirror_column(data_index),
                    q_exponent: sl.q_exponent(data_index),
                    volume_offset: pos,
                    buffer_offset: pos - offset,
                    len: n,
                    unit_offset,
                    offset_in_blocks: component_bytes.start - blocks.first * block_size,
                    component_bytes,
                    blocks,
                });
                pos += n;
            }
            // Units are in logical order: the first may start mid-unit, the last may end
            // mid-unit, the ones between are whole. So the hull is one unit's range, or the
            // whole unit as soon as two units are touched.
            let unit_range = match units.as_slice() {
                [only] => only.unit_bytes(),
                _ => 0..unit,
            };
            let unit_blocks = unit_range.start / block_size..unit_range.end.div_ceil(block_size);
            let parity_bytes = base + unit_range.start..base + unit_range.end;
            let parity_blocks = BlockRange::covering(&parity_bytes, block_size);
            let parity = [
                (ParityKind::P, sl.p_column()),
                (ParityKind::Q, sl.q_column()),
            ]
            .into_iter()
            .filter_map(|(kind, column)| {
                column.map(|column| ParityUnit {
                    kind,
                    column,
                    component_bytes: parity_bytes.clone(),
                    blocks: parity_blocks,
                })
            })
            .collect();
            stripes.push(StripeAccess {
                stripe,
                layout: sl,
                units,
                parity,
                unit_range,
                unit_blocks,
                volume_range,
                buffer_range,
            });
        }
        Ok(AccessMap {
            offset,
            len,
            stripes,
        })
    }

    /// Which units of `access`'s stripe sit on `failed` columns, and whether the access can
    /// still be served (see [`StripeFailures::tolerated`]).
    pub fn failures(&self, access: &StripeAccess, failed: &ColumnSet) -> StripeFailures {
        self.analyse(access.layout, failed, |index| access.unit(index).is_some())
    }

    /// The failures of a whole stripe, outside any access (rebuild, parity check): nothing is
    /// touched, and `tolerated` is the stripe-wide rule (RAID 0: no failure at all; RAID 1: no
    /// pair lost both copies). `None` beyond the last stripe.
    pub fn stripe_failures(&self, stripe: u64, failed: &ColumnSet) -> Option<StripeFailures> {
        let sl = self.stripe(stripe)?;
        let mut f = self.analyse(sl, failed, |_| true);
        for unit in &mut f.failed {
            unit.touched = false;
        }
        Some(f)
    }

    fn analyse(
        &self,
        sl: StripeLayout,
        failed: &ColumnSet,
        touched: impl Fn(usize) -> bool,
    ) -> StripeFailures {
        let failed_units: Vec<FailedUnit> = failed
            .iter()
            .take_while(|&c| c < self.columns())
            .filter_map(|column| {
                let role = sl.role_of(column)?;
                let touched = match role {
                    UnitRole::Data { index } | UnitRole::Mirror { index } => touched(index),
                    UnitRole::P | UnitRole::Q => false,
                };
                Some(FailedUnit {
                    column,
                    role,
                    touched,
                })
            })
            .collect();
        let tolerated = match self.level() {
            RaidLevel::Raid0 => !failed_units.iter().any(|f| f.touched),
            RaidLevel::Raid1 => !failed_units.iter().any(|f| match f.role {
                UnitRole::Data { index } if f.touched => failed_units
                    .iter()
                    .any(|g| g.role == UnitRole::Mirror { index }),
                _ => false,
            }),
            _ => failed_units.len() <= self.parity_units(),
        };
        StripeFailures {
            stripe: sl.stripe(),
            failed: failed_units,
            tolerated,
        }
    }
}
