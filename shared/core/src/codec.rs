//! Compression codecs for the archive and staging files, and capped decompression for input.
//!
//! Redshift COPY and Spark read both gzip and zstd. Encoders stream (the raw writer never holds an
//! uncompressed copy of a batch); decoders used on client input are capped so a gzip bomb is
//! refused after reading at most `cap + 1` bytes instead of being allocated.

use std::io::{self, Read, Write};

/// Which compression an object uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip (RFC 1952) at the given level (0–9).
    Gzip {
        /// flate2 level 0–9.
        level: u32,
    },
    /// Zstandard at the given level (1–22).
    Zstd {
        /// zstd level 1–22.
        level: i32,
    },
}

/// A codec name that is not `gzip` or `zstd`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown compression {0:?} (expected \"gzip\", \"zstd\", \"gzip-1\"…\"gzip-9\" or \"zstd-1\"…\"zstd-19\")"
)]
pub struct UnknownCodec(pub String);

/// The raw archive's codec unless `COMPRESSION` says otherwise: zstd level 1. On the raw
/// writer's NDJSON it compresses as well as gzip level 6 and zstd level 3 (9.4× against 8.8×
/// and 8.9× on the benchmark's batch) at 12× gzip's speed (481 against 38 MB/s of record data
/// on one core), which takes the whole raw-writer past 200 MB/s; Redshift COPY (`ZSTD`),
/// Athena, Spark and the loader read it (docs/COST.md, "Codec").
pub const RAW_DEFAULT: Codec = Codec::Zstd { level: 1 };

/// gzip level 6: what `Content-Encoding: gzip` bodies, the loader's rejects documents and the
/// tools that only read gzip get.
impl Default for Codec {
    fn default() -> Self {
        Codec::Gzip { level: 6 }
    }
}

impl std::str::FromStr for Codec {
    type Err = UnknownCodec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        // `gzip` and `zstd` take their default level; `gzip-N` (1–9) and `zstd-N` (1–19) a
        // chosen one.
        let level = |text: &str, max: u32| {
            text.parse::<u32>()
                .ok()
                .filter(|l| (1..=max).contains(l))
                .ok_or_else(|| UnknownCodec(s.to_owned()))
        };
        match name.as_str() {
            "gzip" | "gz" => Ok(Codec::Gzip { level: 6 }),
            "zstd" | "zst" => Ok(RAW_DEFAULT),
            _ => match name.split_once('-') {
                Some(("gzip", l)) => Ok(Codec::Gzip {
                    level: level(l, 9)?,
                }),
                Some(("zstd", l)) => Ok(Codec::Zstd {
                    level: i32::try_from(level(l, 19)?).unwrap_or(1),
                }),
                _ => Err(UnknownCodec(s.to_owned())),
            },
        }
    }
}

impl Codec {
    /// File name suffix including the dot (`.gz`, `.zst`).
    pub fn suffix(self) -> &'static str {
        match self {
            Codec::Gzip { .. } => ".gz",
            Codec::Zstd { .. } => ".zst",
        }
    }

    /// The media type of an object in this codec (`Content-Type` of what we put in S3).
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Gzip { .. } => "application/gzip",
            Codec::Zstd { .. } => "application/zstd",
        }
    }

    /// The keyword Redshift COPY uses for this codec.
    pub fn copy_keyword(self) -> &'static str {
        match self {
            Codec::Gzip { .. } => "GZIP",
            Codec::Zstd { .. } => "ZSTD",
        }
    }

    /// The codec an object key implies by its suffix, if any.
    pub fn from_key(key: &str) -> Option<Codec> {
        if key.ends_with(".gz") {
            Some(Codec::Gzip { level: 6 })
        } else if key.ends_with(".zst") {
            Some(Codec::Zstd { level: 3 })
        } else {
            None
        }
    }

    /// A streaming encoder writing compressed bytes into `inner`.
    pub fn encoder<W: Write>(self, inner: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Codec::Gzip { level } => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level.min(9)),
            )),
            Codec::Zstd { level } => Encoder::Zstd(zstd::stream::write::Encoder::new(
                inner,
                level.clamp(1, 22),
            )?),
        })
    }

    /// A streaming decoder reading compressed bytes from `inner`. Multi-member gzip (several gzip
    /// streams concatenated, as some tools write) is read whole.
    pub fn decoder<'a, R: io::BufRead + 'a>(self, inner: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::Gzip { .. } => Box::new(flate2::bufread::MultiGzDecoder::new(inner)),
            Codec::Zstd { .. } => Box::new(zstd::stream::read::Decoder::with_buffer(inner)?),
        })
    }

    /// Compress a whole buffer (small objects, tests).
    pub fn compress(self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut enc = self.encoder(Vec::with_capacity(bytes.len() / 4 + 64))?;
        enc.write_all(bytes)?;
        enc.finish()
    }

    /// Decompress a whole buffer, refusing more than `cap` bytes of output.
    pub fn decompress_capped(self, bytes: &[u8], cap: usize) -> Result<Vec<u8>, DecodeError> {
        read_capped(self.decoder(bytes)?, cap)
    }
}

/// Why a capped decode did not produce output.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The decompressed output would exceed the cap (a gzip bomb, or simply too large).
    #[error("decompressed size exceeds {cap} bytes")]
    TooLarge {
        /// The cap that was hit.
        cap: usize,
    },
    /// The compressed stream is corrupt or truncated.
    #[error("corrupt compressed data: {0}")]
    Corrupt(#[from] io::Error),
}

/// Read all of `reader` but at most `cap` bytes; one byte more is an error. Memory use is bounded
/// by `cap`, whatever the compression ratio of the input.
pub fn read_capped<R: Read>(reader: R, cap: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(limit).read_to_end(&mut out)?;
    if out.len() > cap {
        return Err(DecodeError::TooLarge { cap });
    }
    Ok(out)
}

/// A streaming encoder for one [`Codec`].
pub enum Encoder<W: Write> {
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Flush the trailer and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }

    /// The inner writer (e.g. to see how many compressed bytes exist so far).
    pub fn get_ref(&self) -> &W {
        match self {
            Encoder::Gzip(e) => e.get_ref(),
            Encoder::Zstd(e) => e.get_ref(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_codecs() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for codec in [Codec::Gzip { level: 6 }, Codec::Zstd { level: 3 }] {
            let packed = codec.compress(&data).unwrap();
            assert!(packed.len() < data.len());
            assert_eq!(codec.decompress_capped(&packed, data.len()).unwrap(), data);
            assert_eq!(
                Codec::from_key(&format!("x{}", codec.suffix())),
                Some(codec).map(|c| match c {
                    Codec::Gzip { .. } => Codec::Gzip { level: 6 },
                    Codec::Zstd { .. } => Codec::Zstd { level: 3 },
                })
            );
        }
    }

    #[test]
    fn cap_is_exact() {
        let data = vec![b'a'; 1000];
        let packed = Codec::default().compress(&data).unwrap();
        assert_eq!(
            Codec::default()
                .decompress_capped(&packed, 1000)
                .unwrap()
                .len(),
            1000
        );
        assert!(matches!(
            Codec::default().decompress_capped(&packed, 999),
            Err(DecodeError::TooLarge { cap: 999 })
        ));
    }

    #[test]
    fn bomb_is_refused_without_inflating_it() {
        // 128 MiB of zeros compresses to ~128 KiB; build it by streaming so the test stays small.
        let mut enc = Codec::Gzip { level: 9 }.encoder(Vec::new()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..128 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let err = Codec::default()
            .decompress_capped(&bomb, 5 << 20)
            .unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { .. }));
    }

    #[test]
    fn corrupt_input_is_an_error() {
        assert!(matches!(
            Codec::default().decompress_capped(b"\x1f\x8b\x08garbage", 100),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn parses_names() {
        assert_eq!("zstd".parse::<Codec>(), Ok(Codec::Zstd { level: 1 }));
        assert_eq!("zstd".parse::<Codec>(), Ok(RAW_DEFAULT));
        assert_eq!("GZIP".parse::<Codec>(), Ok(Codec::Gzip { level: 6 }));
        assert_eq!("zstd-3".parse::<Codec>(), Ok(Codec::Zstd { level: 3 }));
        assert_eq!("zstd-19".parse::<Codec>(), Ok(Codec::Zstd { level: 19 }));
        assert_eq!(" Gzip-1 ".parse::<Codec>(), Ok(Codec::Gzip { level: 1 }));
        assert_eq!("gzip-9".parse::<Codec>(), Ok(Codec::Gzip { level: 9 }));
        for bad in [
            "lz4", "zstd-0", "zstd-20", "gzip-0", "gzip-10", "gzip-x", "zstd-", "lz4-1",
        ] {
            assert_eq!(
                bad.parse::<Codec>(),
                Err(UnknownCodec(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
