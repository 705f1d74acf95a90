//! Golden vectors and property tests of the P+Q conventions and every loss pattern.
//!
//! The reference here multiplies bit by bit (carry-less product, then reduction by 0x11d) and
//! never touches the crate's tables or kernels, so a wrong table, kernel or convention fails.

use proptest::prelude::*;

use super::gf256::POLYNOMIAL;
use super::*;

/// Carry-less product of `a` and `b`, reduced modulo x^8 + x^4 + x^3 + x^2 + 1.
fn ref_mul(a: u8, b: u8) -> u8 {
    let mut acc: u16 = 0;
    for k in 0..8 {
        if b >> k & 1 == 1 {
            acc ^= (a as u16) << k;
        }
    }
    for k in (8..16).rev() {
        if acc >> k & 1 == 1 {
            acc ^= POLYNOMIAL << (k - 8);
        }
    }
    acc as u8
}

fn ref_gen_pow(i: usize) -> u8 {
    (0..i).fold(1, |v, _| ref_mul(v, 2))
}

/// P and Q straight from their definitions.
fn ref_pq(data: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    let len = data.first().map_or(0, Vec::len);
    let (mut p, mut q) = (vec![0u8; len], vec![0u8; len]);
    for (i, d) in data.iter().enumerate() {
        let c = ref_gen_pow(i);
        for j in 0..len {
            p[j] ^= d[j];
            q[j] ^= ref_mul(c, d[j]);
        }
    }
    (p, q)
}

fn refs(data: &[Vec<u8>]) -> Vec<&[u8]> {
    data.iter().map(Vec::as_slice).collect()
}

/// Stripe 1: four data units of four bytes. Worked by hand (see `docs/PARITY.md`):
/// byte 0: P = 0^1^2^3 = 0, Q = 1*2 ^ 2*4 ^ 3*8 = 0x02^0x08^0x18 = 0x12;
/// byte 2: P = 0, Q = 0x80 * (1^2^4^8) = 0x80^0x1d^0x3a^0x74 = 0xd3.
const GOLDEN_4: ([[u8; 4]; 4], [u8; 4], [u8; 4]) = (
    [
        [0x00, 0x01, 0x80, 0xff],
        [0x01, 0x02, 0x80, 0xff],
        [0x02, 0x04, 0x80, 0xff],
        [0x03, 0x08, 0x80, 0x10],
    ],
    [0x00, 0x0f, 0x00, 0xef],
    [0x12, 0x55, 0xd3, 0x47],
);

/// Stripe 2: six data units of three bytes, so g^4 and g^5 appear.
const GOLDEN_6: ([[u8; 3]; 6], [u8; 3], [u8; 3]) = (
    [
        [0x5a, 0xc3, 0x11],
        [0x9e, 0x00, 0x27],
        [0xff, 0x6b, 0x80],
        [0x13, 0xd4, 0x01],
        [0x42, 0x42, 0xee],
        [0x01, 0x77, 0x3c],
    ],
    [0x6b, 0x49, 0x65],
    [0x4c, 0x8e, 0xf8],
);

fn check_golden(data: &[&[u8]], want_p: &[u8], want_q: &[u8]) {
    let owned: Vec<Vec<u8>> = data.iter().map(|d| d.to_vec()).collect();
    // The literal vectors agree with the bitwise reference ...
    assert_eq!(ref_pq(&owned), (want_p.to_vec(), want_q.to_vec()));
    // ... and with every encoder.
    let (mut p, mut q) = (vec![0xaa; want_p.len()], vec![0xaa; want_q.len()]);
    pq_encode(data, &mut p, &mut q).unwrap();
    assert_eq!((&p[..], &q[..]), (want_p, want_q));
    let (mut p, mut q) = (vec![0x55; want_p.len()], vec![0x55; want_q.len()]);
    p_encode(data, &mut p).unwrap();
    q_encode(data, &mut q).unwrap();
    assert_eq!((&p[..], &q[..]), (want_p, want_q));
}

#[test]
fn golden_vector_four_data_units() {
    let (data, p, q) = GOLDEN_4;
    let data: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
    check_golden(&data, &p, &q);
}

#[test]
fn golden_vector_six_data_units() {
    let (data, p, q) = GOLDEN_6;
    let data: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
    check_golden(&data, &p, &q);
}

#[test]
fn golden_vector_recovers_each_pair_of_lost_columns() {
    let (data, p, q) = GOLDEN_4;
    for lost in all_loss_patterns(4) {
        let mut stripe: Vec<Vec<u8>> = data.iter().map(|d| d.to_vec()).collect();
        let (mut pp, mut qq) = (p.to_vec(), q.to_vec());
        garble_and_reconstruct(&mut stripe, &mut pp, &mut qq, &lost);
        assert_eq!(stripe, data.map(|d| d.to_vec()), "{lost:?}");
        assert_eq!((&pp[..], &qq[..]), (&p[..], &q[..]), "{lost:?}");
    }
}

#[test]
fn reference_field_facts() {
    assert_eq!(ref_gen_pow(8), 0x1d);
    assert_eq!(ref_gen_pow(255), 1);
    assert_eq!(ref_mul(2, 0x8e), 1);
    assert_eq!(gf256::gen_pow(8), ref_gen_pow(8));
    assert_eq!(gf256::inv(2), Some(0x8e));
    for i in 0..300 {
        assert_eq!(gf256::gen_pow(i), ref_gen_pow(i), "g^{i}");
    }
}

/// Every set of at most two columns of a stripe with `n` data units, P and Q included.
fn all_loss_patterns(n: usize) -> Vec<Vec<Column>> {
    let cols: Vec<Column> = (0..n)
        .map(Column::Data)
        .chain([Column::P, Column::Q])
        .collect();
    let mut out = vec![vec![]];
    for (a, &ca) in cols.iter().enumerate() {
        out.push(vec![ca]);
        for &cb in &cols[a + 1..] {
            out.push(vec![ca, cb]);
        }
    }
    out
}

/// Overwrites the lost columns with junk, then rebuilds them with [`reconstruct`].
fn garble_and_reconstruct(data: &mut [Vec<u8>], p: &mut [u8], q: &mut [u8], lost: &[Column]) {
    for c in lost {
        let buf = match c {
            Column::Data(i) => &mut data[*i][..],
            Column::P => &mut *p,
            Column::Q => &mut *q,
        };
        buf.iter_mut()
            .enumerate()
            .for_each(|(j, b)| *b = 0xa5 ^ j as u8);
    }
    let mut views: Vec<&mut [u8]> = data.iter_mut().map(Vec::as_mut_slice).collect();
    reconstruct(&mut views, p, q, lost).unwrap();
}

/// Recovers through the single-purpose functions (not the dispatcher), checking their outputs.
fn recover_directly(data: &[Vec<u8>], p: &[u8], q: &[u8], lost: &[Column]) {
    let len = p.len();
    let present = |gone: &[usize]| -> Vec<Option<&[u8]>> {
        data.iter()
            .enumerate()
            .map(|(i, d)| (!gone.contains(&i)).then_some(&d[..]))
            .collect()
    };
    let mut out = vec![0x11u8; len];
    let mut out2 = vec![0x22u8; len];
    match lost {
        [Column::Data(x)] => {
            recover_data_from_p(&present(&[*x]), p, &mut out).unwrap();
            assert_eq!(out, data[*x]);
            recover_data_from_q(&present(&[*x]), q, &mut out2).unwrap();
            assert_eq!(out2, data[*x]);
        }
        [Column::Data(x), Column::P] => {
            recover_data_and_p(&present(&[*x]), q, &mut out, &mut out2).unwrap();
            assert_eq!((&out[..], &out2[..]), (&data[*x][..], p));
        }
        [Column::Data(x), Column::Q] => {
            recover_data_and_q(&present(&[*x]), p, &mut out, &mut out2).unwrap();
            assert_eq!((&out[..], &out2[..]), (&data[*x][..], q));
        }
        [Column::Data(x), Column::Data(y)] => {
            recover_two_data(&present(&[*x, *y]), p, q, &mut out, &mut out2).unwrap();
            assert_eq!((&out[..], &out2[..]), (&data[*x][..], &data[*y][..]));
        }
        _ => {}
    }
}

fn check_every_loss(data: &[Vec<u8>]) {
    let (p, q) = ref_pq(data);
    let (mut ep, mut eq) = (vec![0u8; p.len()], vec![0u8; q.len()]);
    pq_encode(&refs(data), &mut ep, &mut eq).unwrap();
    assert_eq!((&ep, &eq), (&p, &q), "encode");
    for lost in all_loss_patterns(data.len()) {
        let mut stripe = data.to_vec();
        let (mut rp, mut rq) = (p.clone(), q.clone());
        garble_and_reconstruct(&mut stripe, &mut rp, &mut rq, &lost);
        assert!(stripe == data && rp == p && rq == q, "reconstruct {lost:?}");
        recover_directly(data, &p, &q, &lost);
    }
}

#[test]
fn every_loss_recovered_across_block_boundaries() {
    // Longer than the blocked loops' block and not a multiple of it.
    let len = 3 * 8192 + 77;
    let data: Vec<Vec<u8>> = (0..5u32)
        .map(|i| {
            (0..len as u32)
                .map(|j| (j.wrapping_mul(2654435761) >> (i + 3)) as u8)
                .collect()
        })
        .collect();
    check_every_loss(&data);
}

#[test]
fn full_size_stripe_recovers_the_last_two_units() {
    // 255 data units: the largest stripe; x and y far apart exercise g^(y-x) near the order.
    let data: Vec<Vec<u8>> = (0..MAX_DATA_UNITS)
        .map(|i| vec![i as u8, (i * 7) as u8 ^ 0x5a, 0xff])
        .collect();
    let (p, q) = ref_pq(&data);
    for lost in [
        vec![Column::Data(0), Column::Data(254)],
        vec![Column::Data(253), Column::Data(254)],
        vec![Column::Data(254), Column::P],
    ] {
        let mut stripe = data.clone();
        let (mut rp, mut rq) = (p.clone(), q.clone());
        garble_and_reconstruct(&mut stripe, &mut rp, &mut rq, &lost);
        assert!(stripe == data && rp == p && rq == q, "{lost:?}");
    }
}

fn stripe() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (1usize..=16, 0usize..=300).prop_flat_map(|(n, len)| {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), len), n)
    })
}

proptest! {
    #[test]
    fn prop_every_loss_of_up_to_two_columns_is_recovered(data in stripe()) {
        check_every_loss(&data);
    }

    #[test]
    fn prop_delta_update_equals_reencode(
        (data, i, new) in stripe().prop_flat_map(|d| {
            let (n, len) = (d.len(), d[0].len());
            (Just(d), 0..n, proptest::collection::vec(any::<u8>(), len))
        }),
        range_seed in any::<(usize, usize)>(),
    ) {
        let (p, q) = ref_pq(&data);
        let mut after = data.clone();
        // Update a sub-range of the unit, as a byte-granular small write does.
        let len = new.len();
        let (a, b) = (range_seed.0 % (len + 1), range_seed.1 % (len + 1));
        let r = a.min(b)..a.max(b);
        after[i][r.clone()].copy_from_slice(&new[r.clone()]);
        let (want_p, want_q) = ref_pq(&after);

        let (mut p1, mut q1) = (p.clone(), q.clone());
        pq_update(&mut p1[r.clone()], &mut q1[r.clone()], &data[i][r.clone()], &new[r.clone()], i)
            .unwrap();
        prop_assert_eq!((&p1, &q1), (&want_p, &want_q));

        let (mut p2, mut q2) = (p.clone(), q.clone());
        p_update(&mut p2[r.clone()], &data[i][r.clone()], &new[r.clone()]).unwrap();
        q_update(&mut q2[r.clone()], &data[i][r.clone()], &new[r.clone()], i).unwrap();
        prop_assert_eq!((&p2, &q2), (&want_p, &want_q));
    }

    #[test]
    fn prop_mul_slice_matches_reference(c in any::<u8>(), src in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut dst = vec![0u8; src.len()];
        mul_slice(c, &src, &mut dst).unwrap();
        let want: Vec<u8> = src.iter().map(|&s| ref_mul(c, s)).collect();
        prop_assert_eq!(&dst, &want);
        mul_slice_xor(c, &src, &mut dst).unwrap();
        prop_assert!(dst.iter().all(|&b| b == 0));
    }
}
