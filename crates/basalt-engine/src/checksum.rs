//! The block checksum: crc32c (Castagnoli), as the `crc32c` crate computes it, but faster on whole blocks.
//!
//! The `crc32c` crate runs the SSE 4.2 `crc32` instruction (found at run time), about 12 GB/s on 4 KiB blocks
//! here. Every block read is checked, so that cost is paid on every read (docs/FORMAT.md, "Checksums"). On a CPU with
//! AVX-512 and VPCLMULQDQ, a buffer that is a whole number of 256-byte chunks (every data block is) is instead folded
//! with carry-less multiplications, 256 bytes per step in four independent 512-bit accumulators, and the last 16
//! bytes go through the `crc32` instruction. The result is the same crc32c; the tests compare both on every size.
//! Anything else (other CPUs, other lengths) goes to the crate.

/// The crc32c of `data`: what `crc32c::crc32c(data)` returns.
pub fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if data.len() >= fold::CHUNK && data.len().is_multiple_of(fold::CHUNK) && fold::available() {
            // SAFETY: `available` checked that the CPU has every feature `crc32c_chunks` is compiled for, and the
            // length is a non-zero multiple of `CHUNK`, as it requires.
            return unsafe { fold::crc32c_chunks(data) };
        }
    }
    crc32c::crc32c(data)
}

/// `x^n mod P` for the crc32c polynomial, bit-reflected (bit 31 is `x^0`): the constants that move a 16-byte lane
/// `n` bits further along the message.
const fn x_pow_mod_p(n: u32) -> u32 {
    let mut v = 0x8000_0000u32;
    let mut i = 0;
    while i < n {
        v = (v >> 1) ^ if v & 1 == 1 { 0x82F6_3B78 } else { 0 };
        i += 1;
    }
    v
}

/// The two constants that fold a 16-byte lane `bytes` bytes further: its first 8 bytes (the higher powers) are
/// multiplied by the first, its last 8 by the second. A carry-less product of a 64-bit reflected value and a 32-bit
/// reflected constant lands 33 bits short of a 128-bit lane, hence the `- 33`.
const fn fold_constants(bytes: u32) -> (i64, i64) {
    (x_pow_mod_p(bytes * 8 + 64 - 33) as i64, x_pow_mod_p(bytes * 8 - 33) as i64)
}

#[cfg(target_arch = "x86_64")]
mod fold {
    use std::arch::x86_64::{
        __m512i, _mm_crc32_u64, _mm_cvtsi128_si64, _mm_extract_epi64, _mm_xor_si128, _mm512_clmulepi64_epi128,
        _mm512_extracti32x4_epi32, _mm512_loadu_si512, _mm512_set_epi64, _mm512_ternarylogic_epi64, _mm512_xor_si512,
    };

    use super::fold_constants;

    /// Bytes folded per step: four 512-bit accumulators.
    pub(super) const CHUNK: usize = 256;

    /// Constants to fold by a chunk, and by the distances between the accumulators and between the lanes at the end
    /// (computed at compile time).
    const BY_CHUNK: (i64, i64) = fold_constants(CHUNK as u32);
    const BY_ACC: [(i64, i64); 3] = [fold_constants(192), fold_constants(128), fold_constants(64)];
    const BY_LANE: [(i64, i64); 3] = [fold_constants(48), fold_constants(32), fold_constants(16)];

    /// Whether this CPU can run [`crc32c_chunks`] (detected once by the standard library, then a load).
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("sse4.2")
    }

    /// The same pair of constants in each of the four 128-bit lanes.
    #[target_feature(enable = "avx512f")]
    fn splat((k1, k2): (i64, i64)) -> __m512i {
        _mm512_set_epi64(k2, k1, k2, k1, k2, k1, k2, k1)
    }

    /// `acc` moved along by the distance its constants stand for, xor `next`.
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    fn fold_into(acc: __m512i, k: __m512i, next: __m512i) -> __m512i {
        let high = _mm512_clmulepi64_epi128::<0x00>(acc, k);
        let low = _mm512_clmulepi64_epi128::<0x11>(acc, k);
        // 0x96: the xor of the three operands.
        _mm512_ternarylogic_epi64::<0x96>(high, low, next)
    }

    /// The crc32c of `data`, whose length is a non-zero multiple of [`CHUNK`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F, VPCLMULQDQ, PCLMULQDQ and SSE 4.2 ([`available`]).
    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2,sse4.1")]
    pub(super) unsafe fn crc32c_chunks(data: &[u8]) -> u32 {
        debug_assert!(data.len() >= CHUNK && data.len().is_multiple_of(CHUNK));
        let load = |chunk: &[u8], i: usize| {
            let lane = &chunk[i * 64..i * 64 + 64];
            // SAFETY: `lane` is 64 readable bytes; the load has no alignment requirement.
            unsafe { _mm512_loadu_si512(lane.as_ptr().cast()) }
        };
        let mut chunks = data.chunks_exact(CHUNK);
        let Some(first) = chunks.next() else { return crc32c::crc32c(data) };
        // The crc starts from all ones: the same as the message with its first 32 bits inverted.
        let mut acc = [
            _mm512_xor_si512(load(first, 0), _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, 0xFFFF_FFFF)),
            load(first, 1),
            load(first, 2),
            load(first, 3),
        ];
        let by_chunk = splat(BY_CHUNK);
        for chunk in chunks {
            for (i, a) in acc.iter_mut().enumerate() {
                *a = fold_into(*a, by_chunk, load(chunk, i));
            }
        }
        // Fold the four accumulators onto the last, then its four lanes onto its last one.
        let mut last = acc[3];
        for (a, k) in acc[..3].iter().zip(BY_ACC) {
            last = fold_into(*a, splat(k), last);
        }
        let [k48, k32, k16] = BY_LANE;
        let per_lane = _mm512_set_epi64(0, 0, k16.1, k16.0, k32.1, k32.0, k48.1, k48.0);
        let folded = fold_into(last, per_lane, _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, 0));
        let lanes = _mm_xor_si128(
            _mm_xor_si128(_mm512_extracti32x4_epi32::<0>(folded), _mm512_extracti32x4_epi32::<1>(folded)),
            _mm_xor_si128(_mm512_extracti32x4_epi32::<2>(folded), _mm512_extracti32x4_epi32::<3>(last)),
        );
        // What is left is a 16-byte message with the same crc: through the crc32 instruction from 0.
        let crc = _mm_crc32_u64(0, _mm_cvtsi128_si64(lanes) as u64);
        !(_mm_crc32_u64(crc, _mm_extract_epi64::<1>(lanes) as u64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes.
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn matches_the_crate_on_every_length_and_pattern() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283, "the crc32c check value");
        for len in (0..=8192).step_by(1).filter(|l| l % 256 == 0 || l % 97 == 0) {
            for seed in 1..4 {
                let data = bytes(len, seed);
                assert_eq!(crc32c(&data), crc32c::crc32c(&data), "len {len} seed {seed}");
            }
            for fill in [0u8, 0xff, 0x80] {
                let data = vec![fill; len];
                assert_eq!(crc32c(&data), crc32c::crc32c(&data), "len {len} fill {fill:#x}");
            }
        }
        let big = bytes(1 << 20, 9);
        assert_eq!(crc32c(&big), crc32c::crc32c(&big));
        // Unaligned starts.
        for start in 1..64 {
            let data = &big[start..start + 4096];
            assert_eq!(crc32c(data), crc32c::crc32c(data), "start {start}");
        }
    }

    #[test]
    fn one_flipped_bit_anywhere_in_a_block_changes_its_crc() {
        let mut block = bytes(4096, 5);
        let good = crc32c(&block);
        for bit in (0..4096 * 8).step_by(7) {
            block[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(crc32c(&block), good, "bit {bit}");
            block[bit / 8] ^= 1 << (bit % 8);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_fold_runs_where_the_cpu_has_it() {
        if fold::available() {
            let data = bytes(4096, 3);
            // SAFETY: the features were just detected; 4096 is a multiple of CHUNK.
            assert_eq!(unsafe { fold::crc32c_chunks(&data) }, crc32c::crc32c(&data));
        } else {
            eprintln!("no AVX-512 VPCLMULQDQ on this CPU: the crate's crc32c serves every length");
        }
    }
}
