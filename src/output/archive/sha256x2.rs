//! SHA-256 of two byte streams side by side: an entry's body and the archive around it.
//!
//! Every byte of an archive is hashed twice, for its entry's sha256 (the manifest, the `files`
//! table) and for the archive's (`archive_sha256`): a third of a full-size transaction's CPU
//! (BENCHMARKS.md, sessions 6 and 7). The two hashes are separate streams and cannot be merged,
//! but the SHA-NI round instruction is bound by its latency: one stream leaves the unit idle
//! half the time. [`update_pair`] feeds the blocks of two streams through it interleaved, which
//! costs less CPU than the two one after the other (BENCHMARKS.md, session 7). Without SHA-NI
//! (or off x86-64) it hashes them one after the other with the `sha2` crate's compression
//! function.
//! The output is plain SHA-256: nothing about the archive or its manifest changes.
//!
//! Pure computation: no I/O.

use sha2::block_api::compress256;

/// One SHA-256 in progress.
#[derive(Clone, Debug)]
pub(super) struct Lane {
    state: [u32; 8],
    /// The bytes after the last whole block.
    block: [u8; 64],
    fill: usize,
    /// Bytes hashed so far.
    len: u64,
}

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

impl Default for Lane {
    fn default() -> Self {
        Lane {
            state: H0,
            block: [0; 64],
            fill: 0,
            len: 0,
        }
    }
}

impl Lane {
    /// Hashes `data` on its own.
    pub(super) fn update(&mut self, data: &[u8]) {
        let rest = self.top_up(data);
        let (blocks, tail) = rest.as_chunks::<64>();
        compress256(&mut self.state, blocks);
        self.stash(tail);
    }

    /// The digest, hex.
    pub(super) fn finalize_hex(mut self) -> String {
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        // The message ends 8 bytes before a block boundary, then its length in bits.
        let zeros = (55usize.wrapping_sub(self.fill)) % 64;
        let n = 1 + zeros;
        pad[n..n + 8].copy_from_slice(&bits.to_be_bytes());
        let len = self.len;
        self.update(&pad[..n + 8]);
        debug_assert_eq!(self.fill, 0);
        self.len = len;
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        hex::encode(out)
    }

    /// Completes the partial block from `data` (compressing it once whole); the rest of `data`.
    fn top_up<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        self.len += data.len() as u64;
        if self.fill == 0 {
            return data;
        }
        let take = (64 - self.fill).min(data.len());
        self.block[self.fill..self.fill + take].copy_from_slice(&data[..take]);
        self.fill += take;
        if self.fill == 64 {
            compress256(&mut self.state, std::slice::from_ref(&self.block));
            self.fill = 0;
        }
        &data[take..]
    }

    /// Keeps the bytes after the last whole block (fewer than 64; the partial block is empty).
    fn stash(&mut self, tail: &[u8]) {
        if tail.is_empty() {
            return;
        }
        debug_assert_eq!(self.fill, 0);
        self.block[..tail.len()].copy_from_slice(tail);
        self.fill = tail.len();
    }
}

/// Hashes `da` on `a` and `db` on `b`: the whole blocks they have in common interleaved, the
/// rest of each on its own. The same digests as `a.update(da); b.update(db)`.
pub(super) fn update_pair(a: &mut Lane, da: &[u8], b: &mut Lane, db: &[u8]) {
    let ra = a.top_up(da);
    let rb = b.top_up(db);
    let (ba, ta) = ra.as_chunks::<64>();
    let (bb, tb) = rb.as_chunks::<64>();
    let n = ba.len().min(bb.len());
    compress_pair(&mut a.state, &ba[..n], &mut b.state, &bb[..n]);
    compress256(&mut a.state, &ba[n..]);
    compress256(&mut b.state, &bb[n..]);
    // A lane whose partial block `top_up` could not complete took all its data into it: its
    // tail is empty.
    a.stash(ta);
    b.stash(tb);
}

/// The blocks `a[i]` on `sa` and `b[i]` on `sb`, for `i` in order (equal lengths).
fn compress_pair(sa: &mut [u32; 8], a: &[[u8; 64]], sb: &mut [u32; 8], b: &[[u8; 64]]) {
    debug_assert_eq!(a.len(), b.len());
    if a.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        // SAFETY: the CPU has the features `shani::compress_pair` is compiled for.
        unsafe { shani::compress_pair(sa, a, sb, b) };
        return;
    }
    compress256(sa, a);
    compress256(sb, b);
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub(super) fn available() -> bool {
        static SHANI: OnceLock<bool> = OnceLock::new();
        *SHANI.get_or_init(|| {
            std::arch::is_x86_feature_detected!("sha")
                && std::arch::is_x86_feature_detected!("sse2")
                && std::arch::is_x86_feature_detected!("ssse3")
                && std::arch::is_x86_feature_detected!("sse4.1")
        })
    }

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// The state as the round instruction wants it: (ABEF, CDGH).
    #[inline(always)]
    unsafe fn load_state(state: &[u32; 8]) -> (__m128i, __m128i) {
        // SAFETY (all of this module): unaligned loads and stores of 16 bytes within arrays of
        // 32 (the state), 64 (a block) and 256 (K) bytes; the caller checked the features.
        unsafe {
            let p = state.as_ptr() as *const __m128i;
            let dcba = _mm_loadu_si128(p);
            let efgh = _mm_loadu_si128(p.add(1));
            let cdab = _mm_shuffle_epi32(dcba, 0xB1);
            let efgh = _mm_shuffle_epi32(efgh, 0x1B);
            (
                _mm_alignr_epi8(cdab, efgh, 8),
                _mm_blend_epi16(efgh, cdab, 0xF0),
            )
        }
    }

    #[inline(always)]
    unsafe fn store_state(state: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
        unsafe {
            let feba = _mm_shuffle_epi32(abef, 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
            let hgef = _mm_alignr_epi8(dchg, feba, 8);
            let p = state.as_mut_ptr() as *mut __m128i;
            _mm_storeu_si128(p, dcba);
            _mm_storeu_si128(p.add(1), hgef);
        }
    }

    #[inline(always)]
    unsafe fn schedule(v0: __m128i, v1: __m128i, v2: __m128i, v3: __m128i) -> __m128i {
        unsafe {
            let t1 = _mm_sha256msg1_epu32(v0, v1);
            let t2 = _mm_alignr_epi8(v3, v2, 4);
            _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), v3)
        }
    }

    #[inline(always)]
    unsafe fn load_block(block: &[u8; 64], mask: __m128i) -> [__m128i; 4] {
        unsafe {
            let p = block.as_ptr() as *const __m128i;
            [
                _mm_shuffle_epi8(_mm_loadu_si128(p), mask),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), mask),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), mask),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), mask),
            ]
        }
    }

    /// Two SHA-256 compressions, their rounds interleaved (the schedule of Intel's SHA
    /// extensions paper, as in the `sha2` crate's x86 backend, once per stream).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_pair(
        sa: &mut [u32; 8],
        a: &[[u8; 64]],
        sb: &mut [u32; 8],
        b: &[[u8; 64]],
    ) {
        unsafe {
            let mask = _mm_set_epi64x(
                0x0C0D_0E0F_0809_0A0Bu64 as i64,
                0x0405_0607_0001_0203u64 as i64,
            );
            let (mut abef_a, mut cdgh_a) = load_state(sa);
            let (mut abef_b, mut cdgh_b) = load_state(sb);
            for (block_a, block_b) in a.iter().zip(b) {
                let saved = (abef_a, cdgh_a, abef_b, cdgh_b);
                let mut wa = load_block(block_a, mask);
                let mut wb = load_block(block_b, mask);
                for i in 0..16 {
                    let (ma, mb) = if i < 4 {
                        (wa[i], wb[i])
                    } else {
                        let j = i % 4;
                        wa[j] = schedule(wa[j], wa[(j + 1) % 4], wa[(j + 2) % 4], wa[(j + 3) % 4]);
                        wb[j] = schedule(wb[j], wb[(j + 1) % 4], wb[(j + 2) % 4], wb[(j + 3) % 4]);
                        (wa[j], wb[j])
                    };
                    let k = _mm_loadu_si128(K.as_ptr().add(4 * i) as *const __m128i);
                    let ta = _mm_add_epi32(ma, k);
                    let tb = _mm_add_epi32(mb, k);
                    cdgh_a = _mm_sha256rnds2_epu32(cdgh_a, abef_a, ta);
                    cdgh_b = _mm_sha256rnds2_epu32(cdgh_b, abef_b, tb);
                    abef_a = _mm_sha256rnds2_epu32(abef_a, cdgh_a, _mm_shuffle_epi32(ta, 0x0E));
                    abef_b = _mm_sha256rnds2_epu32(abef_b, cdgh_b, _mm_shuffle_epi32(tb, 0x0E));
                }
                abef_a = _mm_add_epi32(abef_a, saved.0);
                cdgh_a = _mm_add_epi32(cdgh_a, saved.1);
                abef_b = _mm_add_epi32(abef_b, saved.2);
                cdgh_b = _mm_add_epi32(cdgh_b, saved.3);
            }
            store_state(sa, abef_a, cdgh_a);
            store_state(sb, abef_b, cdgh_b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn reference(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// Deterministic bytes without a pattern that lines up with blocks.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn a_lane_is_sha256_at_every_length_around_the_padding_boundaries() {
        assert_eq!(
            Lane::default().finalize_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for n in (0..200).chain([1000, 4095, 4096, 4097]) {
            let data = bytes(n, n as u64);
            let mut lane = Lane::default();
            lane.update(&data);
            assert_eq!(lane.finalize_hex(), reference(&data), "{n} bytes");
        }
    }

    #[test]
    fn two_streams_hashed_side_by_side_in_uneven_pieces_give_each_its_own_sha256() {
        // Pieces of every alignment, paired unevenly and sometimes with nothing, as an entry's
        // chunks meet whatever of the archive is final at the time.
        let a = bytes(300_001, 1);
        let b = bytes(257_333, 2);
        let (mut la, mut lb) = (Lane::default(), Lane::default());
        let (mut ia, mut ib, mut step) = (0usize, 0usize, 0usize);
        while ia < a.len() || ib < b.len() {
            step += 1;
            let na = ((step * 7919) % 9000).min(a.len() - ia);
            let nb = ((step * 104_729) % 7000).min(b.len() - ib);
            if step % 11 == 0 {
                la.update(&a[ia..ia + na]);
                lb.update(&b[ib..ib + nb]);
            } else {
                update_pair(&mut la, &a[ia..ia + na], &mut lb, &b[ib..ib + nb]);
            }
            ia += na;
            ib += nb;
        }
        assert_eq!(la.finalize_hex(), reference(&a));
        assert_eq!(lb.finalize_hex(), reference(&b));
    }

    #[test]
    fn the_interleaved_rounds_compress_as_the_sha2_crate_does() {
        let a = bytes(64 * 100, 3);
        let b = bytes(64 * 100, 4);
        let (ba, _) = a.as_chunks::<64>();
        let (bb, _) = b.as_chunks::<64>();
        let (mut sa, mut sb) = (H0, H0);
        compress_pair(&mut sa, ba, &mut sb, bb);
        let (mut ra, mut rb) = (H0, H0);
        compress256(&mut ra, ba);
        compress256(&mut rb, bb);
        assert_eq!((sa, sb), (ra, rb));
        #[cfg(target_arch = "x86_64")]
        assert!(
            !std::arch::is_x86_feature_detected!("sha") || shani::available(),
            "SHA-NI present but not used"
        );
    }
}
