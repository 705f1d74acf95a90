//! Parity math throughput next to memcpy, measured in one run.
//!
//! `cargo bench -p dagraid-core --bench parity`. Every case runs in each of several rounds,
//! interleaved, and keeps its best round, so a burst of other load on the machine hurts all
//! cases alike instead of one. GB/s counts the bytes of input data per call (column "counted"):
//! for memcpy the bytes copied, for XOR the bytes of all sources, for encode and decode the
//! stripe's data units (k x unit), for a small-write update the unit's old data.

use std::hint::black_box;
use std::time::{Duration, Instant};

use dagraid_core::parity::{
    gf256, mul_slice_xor, pq_encode, pq_update, q_encode, recover_data_from_q, recover_two_data,
    xor_into, xor_many,
};

const MIB: usize = 1 << 20;
const ROUNDS: usize = 12;
/// Minimum wall time of one round's batch of calls of one case.
const BATCH: Duration = Duration::from_millis(15);

struct Case<'a> {
    name: &'static str,
    counted: usize,
    run: Box<dyn FnMut() + 'a>,
    iters: u32,
    best: f64,
}

impl<'a> Case<'a> {
    fn new(name: &'static str, counted: usize, run: impl FnMut() + 'a) -> Self {
        Case {
            name,
            counted,
            run: Box::new(run),
            iters: 1,
            best: f64::MAX,
        }
    }

    /// Picks a batch size that takes at least [`BATCH`].
    fn calibrate(&mut self) {
        (self.run)();
        loop {
            let t = Instant::now();
            for _ in 0..self.iters {
                (self.run)();
            }
            if t.elapsed() >= BATCH {
                break;
            }
            self.iters *= 2;
        }
    }

    fn round(&mut self) {
        let t = Instant::now();
        for _ in 0..self.iters {
            (self.run)();
        }
        let per_call = t.elapsed().as_secs_f64() / f64::from(self.iters);
        self.best = self.best.min(per_call);
    }

    fn gbps(&self) -> f64 {
        self.counted as f64 / self.best / 1e9
    }
}

/// Deterministic, incompressible-looking bytes.
fn fill(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn human(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

// Alternative kernels, kept here only to show why the library's loops were chosen.

fn xor_u64_chunks(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
        let (Ok(dw), Ok(sw)) = (<[u8; 8]>::try_from(&*d), <[u8; 8]>::try_from(s)) else {
            continue;
        };
        d.copy_from_slice(&(u64::from_ne_bytes(dw) ^ u64::from_ne_bytes(sw)).to_ne_bytes());
    }
}

fn xor_u128_chunks(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.chunks_exact_mut(16).zip(src.chunks_exact(16)) {
        let (Ok(dw), Ok(sw)) = (<[u8; 16]>::try_from(&*d), <[u8; 16]>::try_from(s)) else {
            continue;
        };
        d.copy_from_slice(&(u128::from_ne_bytes(dw) ^ u128::from_ne_bytes(sw)).to_ne_bytes());
    }
}

/// `dst ^= c * src` by a 256-entry product table per constant.
fn mul_xor_table(c: u8, src: &[u8], dst: &mut [u8]) {
    let mut t = [0u8; 256];
    for (x, e) in t.iter_mut().enumerate() {
        *e = gf256::mul(c, x as u8);
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= t[*s as usize];
    }
}

/// `dst ^= c * src` by 16-entry low and high nibble tables.
fn mul_xor_nibbles(c: u8, src: &[u8], dst: &mut [u8]) {
    let (mut lo, mut hi) = ([0u8; 16], [0u8; 16]);
    for x in 0..16u8 {
        lo[x as usize] = gf256::mul(c, x);
        hi[x as usize] = gf256::mul(c, x << 4);
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= lo[(*s & 15) as usize] ^ hi[(*s >> 4) as usize];
    }
}

/// `dst ^= c * src` on eight bytes at a time in a `u64` (SWAR masks).
fn mul_xor_swar_u64(c: u8, src: &[u8], dst: &mut [u8]) {
    const LANES: u64 = 0x0101_0101_0101_0101;
    let mut ck = [0u64; 8];
    let mut v = c;
    for k in &mut ck {
        *k = LANES * u64::from(v);
        v = gf256::mul(v, 2);
    }
    for (d, s) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
        let (Ok(dw), Ok(sw)) = (<[u8; 8]>::try_from(&*d), <[u8; 8]>::try_from(s)) else {
            continue;
        };
        let x = u64::from_ne_bytes(sw);
        let mut acc = u64::from_ne_bytes(dw);
        for (k, ck) in ck.iter().enumerate() {
            let bit = (x >> k) & LANES;
            acc ^= ((bit << 8).wrapping_sub(bit)) & ck;
        }
        d.copy_from_slice(&acc.to_ne_bytes());
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is ignored.
    let unit = MIB;
    let data: Vec<Vec<u8>> = (0..4).map(|i| fill(unit, i + 1)).collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let (mut p, mut q) = (vec![0u8; unit], vec![0u8; unit]);
    pq_encode(&refs, &mut p, &mut q).expect("equal lengths");
    let new_d1 = fill(unit, 99);

    let small = 4096;
    let sdata: Vec<Vec<u8>> = (0..4).map(|i| fill(small, i + 11)).collect();
    let srefs: Vec<&[u8]> = sdata.iter().map(Vec::as_slice).collect();
    let (mut sp, mut sq) = (vec![0u8; small], vec![0u8; small]);
    pq_encode(&srefs, &mut sp, &mut sq).expect("equal lengths");

    let buf = |len: usize| vec![0u8; len];

    let two_lost: Vec<Option<&[u8]>> = vec![Some(&data[0]), None, Some(&data[2]), None];
    let one_lost: Vec<Option<&[u8]>> = vec![Some(&data[0]), None, Some(&data[2]), Some(&data[3])];
    let small_two_lost: Vec<Option<&[u8]>> = vec![Some(&sdata[0]), None, Some(&sdata[2]), None];

    // Shared, read-only inputs: the `move` closures below copy these references.
    let (data, refs): (&[Vec<u8>], &[&[u8]]) = (&data, &refs);
    let (p, q, new_d1): (&[u8], &[u8], &[u8]) = (&p, &q, &new_d1);
    let (sp, sq): (&[u8], &[u8]) = (&sp, &sq);
    let two_lost: &[Option<&[u8]>] = &two_lost;
    let one_lost: &[Option<&[u8]>] = &one_lost;
    let small_two_lost: &[Option<&[u8]>] = &small_two_lost;

    let mut cases = vec![
        Case::new("memcpy", unit, {
            let mut dst = buf(unit);
            move || {
                dst.copy_from_slice(black_box(&data[0]));
                black_box(&dst);
            }
        }),
        Case::new("xor_into (dst ^= src)", unit, {
            let mut dst2 = buf(unit);
            move || {
                xor_into(&mut dst2, black_box(&data[0])).expect("equal lengths");
                black_box(&dst2);
            }
        }),
        Case::new("xor_many, 2 sources", 2 * unit, {
            let mut pw = buf(unit);
            move || {
                xor_many(&mut pw, black_box(&refs[..2])).expect("equal lengths");
                black_box(&pw);
            }
        }),
        Case::new("xor_many, 4 sources", 4 * unit, {
            let mut qw = buf(unit);
            move || {
                xor_many(&mut qw, black_box(refs)).expect("equal lengths");
                black_box(&qw);
            }
        }),
        Case::new("mul_slice_xor (dst ^= c*src)", unit, {
            let mut out_x = buf(unit);
            move || {
                mul_slice_xor(black_box(0x8e), black_box(&data[1]), &mut out_x).expect("lengths");
                black_box(&out_x);
            }
        }),
        Case::new("pq_encode 4+2 (P and Q)", 4 * unit, {
            let (mut out_x, mut out_y) = (buf(unit), buf(unit));
            move || {
                pq_encode(black_box(refs), &mut out_x, &mut out_y).expect("equal lengths");
                black_box((&out_x, &out_y));
            }
        }),
        Case::new("q_encode 4+2", 4 * unit, {
            let mut out_x = buf(unit);
            move || {
                q_encode(black_box(refs), &mut out_x).expect("equal lengths");
                black_box(&out_x);
            }
        }),
        Case::new("pq_update, one unit of 4+2", unit, {
            let (mut out_x, mut out_y) = (p.to_vec(), q.to_vec());
            move || {
                pq_update(
                    &mut out_x,
                    &mut out_y,
                    black_box(&data[1]),
                    black_box(new_d1),
                    1,
                )
                .expect("equal lengths");
                black_box((&out_x, &out_y));
            }
        }),
        Case::new("recover_data_from_q 4+2", 4 * unit, {
            let mut out_x = buf(unit);
            move || {
                recover_data_from_q(black_box(one_lost), black_box(q), &mut out_x)
                    .expect("one lost");
                black_box(&out_x);
            }
        }),
        Case::new("recover_two_data 4+2 (D1+D3)", 4 * unit, {
            let (mut out_x, mut out_y) = (buf(unit), buf(unit));
            move || {
                recover_two_data(black_box(two_lost), p, q, &mut out_x, &mut out_y)
                    .expect("two lost");
                black_box((&out_x, &out_y));
            }
        }),
        Case::new("recover_two_data 4+2, 4 KiB units", 4 * small, {
            let (mut sx, mut sy) = (buf(small), buf(small));
            move || {
                recover_two_data(black_box(small_two_lost), sp, sq, &mut sx, &mut sy)
                    .expect("two lost");
                black_box((&sx, &sy));
            }
        }),
        Case::new("alt: xor dst ^= src, u64 chunks", unit, {
            let mut alt = buf(unit);
            move || {
                xor_u64_chunks(&mut alt, black_box(&data[0]));
                black_box(&alt);
            }
        }),
        Case::new("alt: xor dst ^= src, u128 chunks", unit, {
            let mut alt = buf(unit);
            move || {
                xor_u128_chunks(&mut alt, black_box(&data[0]));
                black_box(&alt);
            }
        }),
        Case::new("alt: c*src, 256-entry table", unit, {
            let mut alt = buf(unit);
            move || {
                mul_xor_table(black_box(0x8e), black_box(&data[1]), &mut alt);
                black_box(&alt);
            }
        }),
        Case::new("alt: c*src, nibble tables", unit, {
            let mut alt = buf(unit);
            move || {
                mul_xor_nibbles(black_box(0x8e), black_box(&data[1]), &mut alt);
                black_box(&alt);
            }
        }),
        Case::new("alt: c*src, u64 SWAR masks", unit, {
            let mut alt = buf(unit);
            move || {
                mul_xor_swar_u64(black_box(0x8e), black_box(&data[1]), &mut alt);
                black_box(&alt);
            }
        }),
    ];

    let start = Instant::now();
    for c in &mut cases {
        c.calibrate();
    }
    for _ in 0..ROUNDS {
        for c in &mut cases {
            c.round();
        }
    }
    let elapsed = start.elapsed();

    let memcpy = cases[0].gbps();
    println!(
        "parity math, best of {ROUNDS} interleaved rounds ({:.1} s)",
        elapsed.as_secs_f64()
    );
    println!("| case | counted per call | GB/s | x memcpy |");
    println!("|---|---|---|---|");
    for c in &cases {
        println!(
            "| {} | {} | {:.2} | {:.2} |",
            c.name,
            human(c.counted),
            c.gbps(),
            c.gbps() / memcpy
        );
    }
}
