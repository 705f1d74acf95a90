//! RAID 6 P+Q: encode, small-write updates, and recovery of every loss of up to two columns.
//!
//! Notation (derivations in `docs/PARITY.md`): `D_i` is the data unit with logical index `i`,
//! `n` data units, `+` and `^` are both XOR, products are in GF(2^8) (poly 0x11d, g = 2).
//!
//! ```text
//! P = D_0 ^ D_1 ^ ... ^ D_{n-1}
//! Q = g^0 D_0 ^ g^1 D_1 ^ ... ^ g^{n-1} D_{n-1}
//!   = ((D_{n-1} g ^ D_{n-2}) g ^ ...) g ^ D_0          (Horner's rule: only doublings)
//! ```
//!
//! Recovery works on *partial syndromes*: `P_S` and `Q_S` computed like P and Q but over the
//! present data units only (absent ones count as zero), so `P ^ P_S` and `Q ^ Q_S` are the
//! contributions of the lost units alone.
//!
//! Long units are processed in blocks of 8 KiB: every pass over one block (one per
//! data unit, then the final combination) runs while the block's outputs are still in L1.

use std::ops::Range;

use super::gf256::{self, BitMultiples, horner_skip, horner_step, horner_step2, pq_step, pq_step2};
use super::xor::{xor_kernel, xor_many};
use super::{Column, Operand, ParityError, check_len};

/// The largest number of data units in one P+Q stripe: g has order 255, so beyond that two units
/// would share a Q coefficient and a two-data loss could not be solved.
pub const MAX_DATA_UNITS: usize = gf256::ORDER;

/// Bytes per block of the blocked loops.
const BLOCK: usize = 8 * 1024;

/// The byte ranges of the blocks covering `0..len`.
fn blocks(len: usize) -> impl Iterator<Item = Range<usize>> {
    (0..len).step_by(BLOCK).map(move |s| s..len.min(s + BLOCK))
}

fn check_count(n: usize) -> Result<(), ParityError> {
    match n {
        0 => Err(ParityError::NoDataUnits),
        n if n > MAX_DATA_UNITS => Err(ParityError::TooManyDataUnits { count: n }),
        _ => Ok(()),
    }
}

/// Checks a full stripe's data units against the common length.
fn check_data(data: &[&[u8]], len: usize) -> Result<(), ParityError> {
    check_count(data.len())?;
    for (i, d) in data.iter().enumerate() {
        check_len(Operand::Data(i), len, d.len())?;
    }
    Ok(())
}

/// Checks a stripe with absent units: count, lengths of the present ones, and that exactly
/// `missing` are absent. Returns the absent indexes in increasing order.
fn check_partial(
    data: &[Option<&[u8]>],
    len: usize,
    missing: usize,
) -> Result<Vec<usize>, ParityError> {
    check_count(data.len())?;
    let mut absent = Vec::with_capacity(missing);
    for (i, d) in data.iter().enumerate() {
        match d {
            Some(d) => check_len(Operand::Data(i), len, d.len())?,
            None => absent.push(i),
        }
    }
    if absent.len() != missing {
        return Err(ParityError::MissingCount {
            expected: missing,
            found: absent.len(),
        });
    }
    Ok(absent)
}

/// P of a full stripe: `p = D_0 ^ ... ^ D_{n-1}`.
///
/// # Errors
/// [`ParityError::NoDataUnits`], [`ParityError::TooManyDataUnits`], or
/// [`ParityError::LengthMismatch`] if a data unit's length differs from `p`'s.
pub fn p_encode(data: &[&[u8]], p: &mut [u8]) -> Result<(), ParityError> {
    check_data(data, p.len())?;
    xor_many(p, data)
}

/// Q of a full stripe: `q = sum of g^i D_i`, by Horner's rule from the highest index down.
///
/// # Errors
/// As [`p_encode`], with lengths compared to `q`'s.
pub fn q_encode(data: &[&[u8]], q: &mut [u8]) -> Result<(), ParityError> {
    check_data(data, q.len())?;
    let Some((last, rest)) = data.split_last() else {
        return Ok(());
    };
    for r in blocks(q.len()) {
        let qb = &mut q[r.clone()];
        qb.copy_from_slice(&last[r.clone()]);
        let mut pairs = rest.rchunks_exact(2);
        for pair in &mut pairs {
            horner_step2(qb, &pair[1][r.clone()], &pair[0][r.clone()]);
        }
        if let [d] = pairs.remainder() {
            horner_step(qb, &d[r.clone()]);
        }
    }
    Ok(())
}

/// P and Q of a full stripe in one pass over the data (a large write, or both parities lost).
///
/// # Errors
/// As [`p_encode`], with lengths compared to `p`'s, then `q`'s compared to `p`'s.
pub fn pq_encode(data: &[&[u8]], p: &mut [u8], q: &mut [u8]) -> Result<(), ParityError> {
    check_data(data, p.len())?;
    check_len(Operand::Q, p.len(), q.len())?;
    let Some((last, rest)) = data.split_last() else {
        return Ok(());
    };
    for r in blocks(p.len()) {
        let (pb, qb) = (&mut p[r.clone()], &mut q[r.clone()]);
        pb.copy_from_slice(&last[r.clone()]);
        qb.copy_from_slice(&last[r.clone()]);
        let mut pairs = rest.rchunks_exact(2);
        for pair in &mut pairs {
            pq_step2(pb, qb, &pair[1][r.clone()], &pair[0][r.clone()]);
        }
        if let [d] = pairs.remainder() {
            pq_step(pb, qb, &d[r.clone()]);
        }
    }
    Ok(())
}

fn check_update(len: usize, old_d: &[u8], new_d: &[u8], i: usize) -> Result<(), ParityError> {
    check_len(Operand::OldData, len, old_d.len())?;
    check_len(Operand::NewData, len, new_d.len())?;
    if i >= MAX_DATA_UNITS {
        return Err(ParityError::DataIndexOutOfRange {
            index: i,
            count: MAX_DATA_UNITS,
        });
    }
    Ok(())
}

/// Small-write update of P when one data unit changes: `p ^= old_d ^ new_d`.
///
/// # Errors
/// [`ParityError::LengthMismatch`] if `old_d` or `new_d` differs from `p` in length.
pub fn p_update(p: &mut [u8], old_d: &[u8], new_d: &[u8]) -> Result<(), ParityError> {
    check_update(p.len(), old_d, new_d, 0)?;
    for ((p, o), n) in p.iter_mut().zip(old_d).zip(new_d) {
        *p ^= o ^ n;
    }
    Ok(())
}

/// Small-write update of Q when data unit `i` changes: `q ^= g^i (old_d ^ new_d)`, since Q is
/// linear in each `D_i`.
///
/// # Errors
/// [`ParityError::LengthMismatch`] as [`p_update`];
/// [`ParityError::DataIndexOutOfRange`] if `i >= MAX_DATA_UNITS`.
pub fn q_update(q: &mut [u8], old_d: &[u8], new_d: &[u8], i: usize) -> Result<(), ParityError> {
    check_update(q.len(), old_d, new_d, i)?;
    let t = BitMultiples::new(gf256::gen_pow(i));
    for ((q, o), n) in q.iter_mut().zip(old_d).zip(new_d) {
        *q ^= t.mul(o ^ n);
    }
    Ok(())
}

/// [`p_update`] and [`q_update`] in one pass over the old and new data.
///
/// # Errors
/// As [`q_update`], with `q`'s length compared to `p`'s first.
pub fn pq_update(
    p: &mut [u8],
    q: &mut [u8],
    old_d: &[u8],
    new_d: &[u8],
    i: usize,
) -> Result<(), ParityError> {
    check_len(Operand::Q, p.len(), q.len())?;
    check_update(p.len(), old_d, new_d, i)?;
    let t = BitMultiples::new(gf256::gen_pow(i));
    for (((p, q), o), n) in p.iter_mut().zip(q.iter_mut()).zip(old_d).zip(new_d) {
        let delta = o ^ n;
        *p ^= delta;
        *q ^= t.mul(delta);
    }
    Ok(())
}

/// Writes the partial syndromes of the present units over byte range `r`: `P_S` into `p` and
/// `Q_S` into `q` (either may be skipped). Absent units count as zero.
fn partial_syndromes(
    data: &[Option<&[u8]>],
    r: Range<usize>,
    mut p: Option<&mut [u8]>,
    mut q: Option<&mut [u8]>,
) {
    let top = data
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, d)| d.map(|d| (i, d)));
    let Some((top, d)) = top else {
        // No present unit: both syndromes are zero.
        p.into_iter().chain(q).for_each(|b| b.fill(0));
        return;
    };
    for b in [p.as_deref_mut(), q.as_deref_mut()].into_iter().flatten() {
        b.copy_from_slice(&d[r.clone()]);
    }
    for d in data[..top].iter().rev() {
        match (d, p.as_deref_mut(), q.as_deref_mut()) {
            (Some(d), Some(p), Some(q)) => pq_step(p, q, &d[r.clone()]),
            (Some(d), Some(p), None) => xor_kernel(p, &d[r.clone()]),
            (Some(d), None, Some(q)) => horner_step(q, &d[r.clone()]),
            (None, _, Some(q)) => horner_skip(q),
            (_, _, None) => {}
        }
    }
}

/// Recovers the one absent data unit from P: `D_x = P ^ P_S` (RAID 5's reconstruction).
///
/// `data` is the stripe by logical index with the lost unit as `None`; the result goes to `out`.
///
/// # Errors
/// [`ParityError::MissingCount`] unless exactly one unit is `None`; count and length errors as
/// [`p_encode`], lengths compared to `p`'s.
pub fn recover_data_from_p(
    data: &[Option<&[u8]>],
    p: &[u8],
    out: &mut [u8],
) -> Result<(), ParityError> {
    let absent = check_partial(data, p.len(), 1)?;
    check_len(
        Operand::Recovered(Column::Data(absent[0])),
        p.len(),
        out.len(),
    )?;
    recover_from_p_unchecked(data, p, out);
    Ok(())
}

fn recover_from_p_unchecked(data: &[Option<&[u8]>], p: &[u8], out: &mut [u8]) {
    let sources: Vec<&[u8]> = std::iter::once(p)
        .chain(data.iter().flatten().copied())
        .collect();
    // Lengths were checked by the caller, so this cannot fail.
    let _ = xor_many(out, &sources);
}

/// Recovers the one absent data unit `x` from Q, for when P is lost too:
/// `D_x = g^-x (Q ^ Q_S)`.
///
/// # Errors
/// As [`recover_data_from_p`], lengths compared to `q`'s.
pub fn recover_data_from_q(
    data: &[Option<&[u8]>],
    q: &[u8],
    out: &mut [u8],
) -> Result<(), ParityError> {
    let absent = check_partial(data, q.len(), 1)?;
    check_len(
        Operand::Recovered(Column::Data(absent[0])),
        q.len(),
        out.len(),
    )?;
    recover_from_q_unchecked(data, absent[0], q, out);
    Ok(())
}

fn recover_from_q_unchecked(data: &[Option<&[u8]>], x: usize, q: &[u8], out: &mut [u8]) {
    // g^-x = g^(255 - x); x < 255.
    let t = BitMultiples::new(gf256::gen_pow(MAX_DATA_UNITS - x));
    for r in blocks(q.len()) {
        let ob = &mut out[r.clone()];
        partial_syndromes(data, r.clone(), None, Some(&mut *ob));
        for (o, q) in ob.iter_mut().zip(&q[r.clone()]) {
            *o = t.mul(*o ^ q);
        }
    }
}

/// Recovers two absent data units `x < y` from P and Q (Anvin, section 4):
///
/// ```text
/// Pd = P ^ P_S = D_x ^ D_y          Qd = Q ^ Q_S = g^x D_x ^ g^y D_y
/// D_x = A Pd ^ B Qd   with  A = g^(y-x) / (g^(y-x) ^ 1),  B = g^-x / (g^(y-x) ^ 1)
/// D_y = Pd ^ D_x
/// ```
///
/// `out_x` receives the lower-indexed absent unit, `out_y` the higher.
///
/// # Errors
/// [`ParityError::MissingCount`] unless exactly two units are `None`; count and length errors
/// as [`p_encode`], lengths compared to `p`'s.
pub fn recover_two_data(
    data: &[Option<&[u8]>],
    p: &[u8],
    q: &[u8],
    out_x: &mut [u8],
    out_y: &mut [u8],
) -> Result<(), ParityError> {
    let absent = check_partial(data, p.len(), 2)?;
    check_len(Operand::Q, p.len(), q.len())?;
    check_len(
        Operand::Recovered(Column::Data(absent[0])),
        p.len(),
        out_x.len(),
    )?;
    check_len(
        Operand::Recovered(Column::Data(absent[1])),
        p.len(),
        out_y.len(),
    )?;
    recover_two_data_unchecked(data, (absent[0], absent[1]), p, q, out_x, out_y);
    Ok(())
}

fn recover_two_data_unchecked(
    data: &[Option<&[u8]>],
    (x, y): (usize, usize),
    p: &[u8],
    q: &[u8],
    out_x: &mut [u8],
    out_y: &mut [u8],
) {
    // 0 <= x < y < 255, so g^(y-x) != 1 and the denominator is nonzero.
    let gyx = gf256::gen_pow(y - x);
    let denom_inv = gf256::inv(gyx ^ 1).unwrap_or(0);
    let a = BitMultiples::new(gf256::mul(gyx, denom_inv));
    let b = BitMultiples::new(gf256::mul(gf256::gen_pow(MAX_DATA_UNITS - x), denom_inv));
    for r in blocks(p.len()) {
        let (xb, yb) = (&mut out_x[r.clone()], &mut out_y[r.clone()]);
        // Q_S into out_x, P_S into out_y, then combine in place.
        partial_syndromes(data, r.clone(), Some(&mut *yb), Some(&mut *xb));
        for (((dx, dy), p), q) in xb
            .iter_mut()
            .zip(yb.iter_mut())
            .zip(&p[r.clone()])
            .zip(&q[r])
        {
            let pd = *dy ^ p;
            let qd = *dx ^ q;
            let x = a.mul(pd) ^ b.mul(qd);
            *dx = x;
            *dy = pd ^ x;
        }
    }
}

/// Recovers an absent data unit and P: `D_x` from Q (P is gone), then P re-encoded.
///
/// # Errors
/// As [`recover_data_from_q`]; also a length mismatch of `out_p`.
pub fn recover_data_and_p(
    data: &[Option<&[u8]>],
    q: &[u8],
    out_d: &mut [u8],
    out_p: &mut [u8],
) -> Result<(), ParityError> {
    let absent = check_partial(data, q.len(), 1)?;
    check_len(
        Operand::Recovered(Column::Data(absent[0])),
        q.len(),
        out_d.len(),
    )?;
    check_len(Operand::Recovered(Column::P), q.len(), out_p.len())?;
    recover_from_q_unchecked(data, absent[0], q, out_d);
    let sources: Vec<&[u8]> = data.iter().map(|d| d.unwrap_or(&*out_d)).collect();
    xor_many(out_p, &sources)
}

/// Recovers an absent data unit and Q: `D_x` from P, then Q re-encoded.
///
/// # Errors
/// As [`recover_data_from_p`]; also a length mismatch of `out_q`.
pub fn recover_data_and_q(
    data: &[Option<&[u8]>],
    p: &[u8],
    out_d: &mut [u8],
    out_q: &mut [u8],
) -> Result<(), ParityError> {
    let absent = check_partial(data, p.len(), 1)?;
    check_len(
        Operand::Recovered(Column::Data(absent[0])),
        p.len(),
        out_d.len(),
    )?;
    check_len(Operand::Recovered(Column::Q), p.len(), out_q.len())?;
    recover_from_p_unchecked(data, p, out_d);
    let full: Vec<&[u8]> = data.iter().map(|d| d.unwrap_or(&*out_d)).collect();
    q_encode(&full, out_q)
}

/// Rewrites the `lost` columns of a whole stripe in place from the others, for any loss of up
/// to two columns: the dispatcher over the functions above (rebuild and scrub use it).
///
/// # Errors
/// [`ParityError::TooManyLost`], [`ParityError::DuplicateLost`],
/// [`ParityError::DataIndexOutOfRange`] for the loss list; count and length errors as
/// [`pq_encode`], lengths compared to `p`'s. Nothing is written on error.
pub fn reconstruct(
    data: &mut [&mut [u8]],
    p: &mut [u8],
    q: &mut [u8],
    lost: &[Column],
) -> Result<(), ParityError> {
    check_count(data.len())?;
    for (i, d) in data.iter().enumerate() {
        check_len(Operand::Data(i), p.len(), d.len())?;
    }
    check_len(Operand::Q, p.len(), q.len())?;
    if lost.len() > 2 {
        return Err(ParityError::TooManyLost { lost: lost.len() });
    }
    let mut lost_data = Vec::with_capacity(2);
    let (mut lost_p, mut lost_q) = (false, false);
    for (k, &c) in lost.iter().enumerate() {
        if lost[..k].contains(&c) {
            return Err(ParityError::DuplicateLost(c));
        }
        match c {
            Column::Data(i) if i >= data.len() => {
                return Err(ParityError::DataIndexOutOfRange {
                    index: i,
                    count: data.len(),
                });
            }
            Column::Data(i) => lost_data.push(i),
            Column::P => lost_p = true,
            Column::Q => lost_q = true,
        }
    }
    lost_data.sort_unstable();

    match lost_data[..] {
        [] => {
            let full: Vec<&[u8]> = data.iter().map(|d| &**d).collect();
            match (lost_p, lost_q) {
                (true, true) => pq_encode(&full, p, q),
                (true, false) => p_encode(&full, p),
                (false, true) => q_encode(&full, q),
                (false, false) => Ok(()),
            }
        }
        [x] => {
            let out = std::mem::take(&mut data[x]);
            let view: Vec<Option<&[u8]>> = data
                .iter()
                .enumerate()
                .map(|(i, d)| (i != x).then_some(&**d))
                .collect();
            let result = match (lost_p, lost_q) {
                (true, _) => recover_data_and_p(&view, q, out, p),
                (false, true) => recover_data_and_q(&view, p, out, q),
                (false, false) => recover_data_from_p(&view, p, out),
            };
            drop(view);
            data[x] = out;
            result
        }
        [x, y, ..] => {
            let out_y = std::mem::take(&mut data[y]);
            let out_x = std::mem::take(&mut data[x]);
            let view: Vec<Option<&[u8]>> = data
                .iter()
                .enumerate()
                .map(|(i, d)| (i != x && i != y).then_some(&**d))
                .collect();
            let result = recover_two_data(&view, p, q, out_x, out_y);
            drop(view);
            data[x] = out_x;
            data[y] = out_y;
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_write_update_on_a_hand_worked_stripe() {
        // D = [1, 1, 1, 1]: P = 0, Q = 1 ^ 2 ^ 4 ^ 8 = 0x0f.
        let (mut p, mut q) = ([0u8], [0u8]);
        pq_encode(&[&[1], &[1], &[1], &[1]], &mut p, &mut q).unwrap();
        assert_eq!((p, q), ([0x00], [0x0f]));
        // D_3: 1 -> 0x81. Delta 0x80; g^3 * 0x80 = 2^10 = 4 * 0x1d = 0x74.
        pq_update(&mut p, &mut q, &[1], &[0x81], 3).unwrap();
        assert_eq!((p, q), ([0x80], [0x0f ^ 0x74]));
    }

    #[test]
    fn recovery_rejects_wrong_absent_count() {
        let (d0, p, q) = ([1u8], [1u8], [1u8]);
        let mut out = [0u8];
        assert_eq!(
            recover_data_from_p(&[Some(&d0), Some(&d0)], &p, &mut out),
            Err(ParityError::MissingCount {
                expected: 1,
                found: 0
            })
        );
        assert_eq!(
            recover_data_from_q(&[None, None], &q, &mut out),
            Err(ParityError::MissingCount {
                expected: 1,
                found: 2
            })
        );
        let mut out2 = [0u8];
        assert_eq!(
            recover_two_data(&[Some(&d0), None], &p, &q, &mut out, &mut out2),
            Err(ParityError::MissingCount {
                expected: 2,
                found: 1
            })
        );
        assert_eq!((out, out2), ([0], [0]));
    }

    #[test]
    fn reconstruct_rejects_bad_loss_lists_and_writes_nothing() {
        let (mut a, mut b) = ([1u8, 2], [3u8, 4]);
        let (mut p, mut q) = ([9u8, 9], [9u8, 9]);
        let mut data: Vec<&mut [u8]> = vec![&mut a, &mut b];
        let cases = [
            (
                vec![Column::P, Column::Q, Column::Data(0)],
                ParityError::TooManyLost { lost: 3 },
            ),
            (
                vec![Column::P, Column::P],
                ParityError::DuplicateLost(Column::P),
            ),
            (
                vec![Column::Data(2)],
                ParityError::DataIndexOutOfRange { index: 2, count: 2 },
            ),
        ];
        for (lost, err) in cases {
            assert_eq!(reconstruct(&mut data, &mut p, &mut q, &lost), Err(err));
        }
        let mut short = [0u8; 1];
        assert_eq!(
            reconstruct(&mut data, &mut short, &mut q, &[Column::P]),
            Err(ParityError::LengthMismatch {
                operand: Operand::Data(0),
                expected: 1,
                actual: 2
            })
        );
        assert_eq!((a, b, p, q), ([1, 2], [3, 4], [9, 9], [9, 9]));
    }

    #[test]
    fn encode_rejects_empty_and_oversized_stripes() {
        let mut p = [0u8; 1];
        assert_eq!(p_encode(&[], &mut p), Err(ParityError::NoDataUnits));
        let unit = [0u8; 1];
        let many = vec![&unit[..]; MAX_DATA_UNITS + 1];
        assert_eq!(
            q_encode(&many, &mut p),
            Err(ParityError::TooManyDataUnits {
                count: MAX_DATA_UNITS + 1
            })
        );
        assert_eq!(
            q_update(&mut p, &unit, &unit, MAX_DATA_UNITS),
            Err(ParityError::DataIndexOutOfRange {
                index: MAX_DATA_UNITS,
                count: MAX_DATA_UNITS
            })
        );
    }
}
