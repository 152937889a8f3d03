//! Every bincode call of arbor lives here, so that the codec can be swapped
//! for a bincode-compatible crate in one place.
//!
//! The configuration is bincode 2's `standard()` made explicit and changed to
//! fixed-width integers, so that a peer in another language needs no varint
//! decoder: little-endian, fixed-width integers (`usize`/lengths as `u64`),
//! strings and byte arrays as a `u64` length then the bytes, `Option` as a
//! `u8` tag (0 = None, 1 = Some) then the value, enum variants as a `u32`
//! index then the fields. Changing any of this is a protocol version bump.
//!
//! Decoding is bounded: bincode allocates a container's length up front when
//! no limit is configured, so a 12-byte payload claiming a 2^60-byte vector
//! would abort the process. Each decode runs with a limit scaled to the
//! payload it reads from (a container can claim at most 16 times the bytes
//! it arrived in, and never less than 64 KiB).

use bincode::config::{Config, Configuration, Fixint, LittleEndian, NoLimit};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The wire configuration of protocol version 1.
const fn wire_config() -> Configuration<LittleEndian, Fixint, NoLimit> {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Appends the encoding of `value` to `out`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    bincode::serde::encode_into_std_write(value, out, wire_config())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Appends `bytes` as a byte string (a `u64` length, then the bytes): the
/// same layout bincode gives a byte slice, written directly because it is
/// the hot path of every message.
#[inline]
pub(crate) fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(8 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Bytes before a byte string's contents: its `u64` length.
pub(crate) const BYTES_PREFIX: usize = 8;

/// Reads a payload that is exactly one byte string, the inverse of
/// [`encode_bytes`]: the bytes, borrowed from the payload.
#[inline]
pub(crate) fn decode_bytes(payload: &[u8]) -> Result<&[u8], String> {
    let (len, rest) = payload.split_first_chunk::<BYTES_PREFIX>().ok_or_else(|| {
        format!(
            "{} bytes, too short for a byte string length",
            payload.len()
        )
    })?;
    let len = u64::from_le_bytes(*len);
    if len != rest.len() as u64 {
        return Err(format!(
            "byte string claims {len} bytes, {} follow",
            rest.len()
        ));
    }
    Ok(rest)
}

/// Appends `value` encoded as a byte string (a `u64` length, then the bytes of
/// its own encoding), without an intermediate buffer.
pub(crate) fn encode_as_bytes<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let len_at = out.len();
    out.extend_from_slice(&[0u8; 8]);
    if let Err(e) = encode_into(value, out) {
        out.truncate(len_at);
        return Err(e);
    }
    let len = (out.len() - len_at - 8) as u64;
    out[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Decodes a `T` that must use every byte of `bytes`.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    let n = bytes.len();
    let decoded = if n <= 4 * KIB {
        decode_limited::<T, { 64 * KIB }>(bytes)
    } else if n <= 64 * KIB {
        decode_limited::<T, { MIB }>(bytes)
    } else if n <= MIB {
        decode_limited::<T, { 16 * MIB }>(bytes)
    } else if n <= 16 * MIB {
        decode_limited::<T, { 256 * MIB }>(bytes)
    } else {
        decode_limited::<T, { usize::MAX / 2 }>(bytes)
    };
    match decoded {
        Ok((value, used)) if used == n => Ok(value),
        Ok((_, used)) => Err(format!("{} trailing bytes after the value", n - used)),
        Err(e) => Err(e.to_string()),
    }
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    let config = wire_config().with_limit::<LIMIT>();
    debug_assert!(config.limit().is_some());
    bincode::serde::decode_from_slice(bytes, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_fixed_width_little_endian() {
        let mut out = Vec::new();
        encode_into(
            &(1u32, "ab", Some(2u8), serde_bytes::Bytes::new(b"xy")),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            [
                1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', 1, 2, 2, 0, 0, 0, 0, 0, 0, 0, b'x',
                b'y'
            ]
        );
    }

    #[test]
    fn bytes_wrapper_matches_byte_string_layout() {
        let mut direct = Vec::new();
        encode_into(serde_bytes::Bytes::new(&[7, 8, 9]), &mut direct).unwrap();
        let mut wrapped = Vec::new();
        encode_as_bytes(&(7u8, 8u8, 9u8), &mut wrapped).unwrap();
        assert_eq!(direct, wrapped);
    }

    #[test]
    fn a_lying_length_is_refused_without_allocating_it() {
        // A byte string claiming 2^60 bytes inside a 12-byte payload.
        let mut bytes = (1u64 << 60).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let err = decode_exact::<serde_bytes::ByteBuf>(&bytes).unwrap_err();
        assert!(err.contains("Limit"), "{err}");
        let err = decode_exact::<String>(&bytes).unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn the_byte_string_fast_path_matches_bincode() {
        for data in [&b""[..], b"x", &[0xab; 300]] {
            let mut fast = Vec::new();
            encode_bytes(data, &mut fast);
            let mut slow = Vec::new();
            encode_into(serde_bytes::Bytes::new(data), &mut slow).unwrap();
            assert_eq!(fast, slow);
            assert_eq!(decode_bytes(&fast).unwrap(), data);
            assert_eq!(
                decode_exact::<serde_bytes::ByteBuf>(&fast)
                    .unwrap()
                    .into_vec(),
                data
            );
        }
        assert!(decode_bytes(&[1, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_bytes(&[0, 0, 0]).is_err());
        assert!(decode_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let err = decode_exact::<u8>(&[1, 2]).unwrap_err();
        assert!(err.contains("trailing"), "{err}");
    }
}
